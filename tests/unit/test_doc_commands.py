"""Every command in the docs is run, by `make up` or `make test`, by a test or here, or it is
marked as needing AWS.

A command is a line of a ```sh (bash, shell) block, a `$ ` line of a ```console block, a
line of a block without a language that starts with a program, or an inline code span that
starts with one (environment assignments may come first); a `$ ` prompt is dropped, a
trailing `\\` continues the line, and `&&`, `||`, `;` and `|` separate commands. A span or
line with a word ending in ":" is a message quoted from a tool (`make failed at step: …`).

Each command is exactly one of these, the first that applies:

1. needs AWS: it ends with the shell comment `# needs AWS` (only for commands that work
   against real AWS alone: EMR, MWAA, an AWS account's resources);
2. run by `make up` / `make test`: one of their targets, a command of their recipes, a pytest
   run that only picks among the tests of such a command (some of its paths, `-m`, `-k`), or a
   target made of such commands (all read from the Makefile), or a command that code they run
   runs (RUN_BY_MAKE_UP);
3. run here: in RUN_HERE, or a benchmark script (bench/*.py), whose `--help` runs here;
4. run by a test: it starts with an entry of RUN_BY_TESTS (program and subcommand, e.g.
   `python -m spotlake.status`), which names the test files that run it and pieces of their
   source that show they do;
5. not run yet: it starts with an entry of NOT_RUN_YET, which says why.

Commands are compared by their words without environment assignments and `sudo`, with
`.venv/bin/python` and `python3` written `python`.

Besides, the arguments of every documented command of the project's CLIs (`python -m
spotlake.…`, bench/*.py, also inside `docker compose exec`), of Airflow's and of `docker
compose` are parsed here by that CLI's own argument parser, so a documented subcommand or
flag that does not exist fails.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from tests.support.compose import compose_binary

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
TEST_FILE = "tests/unit/test_doc_commands.py"

AWS_MARK = "needs AWS"
SHELL_BLOCKS = {"sh", "bash", "shell", "zsh"}
# Inline code spans and lines of unlabelled blocks are commands when they start with one of
# these (or a path ending in .sh / .py, or a python of a virtualenv).
PROGRAMS = {
    "make",
    "python",
    "python3",
    "pip",
    "pip3",
    "airflow",
    "aws",
    "docker",
    "curl",
    "sudo",
    "mvn",
    "cp",
    "mv",
    "rm",
    "apt-get",
    "bash",
    "sh",
    "git",
    "psql",
    "mysql",
    "mariadb",
    "spark-submit",
    "kafka-topics.sh",
    "java",
    "env",
    "export",
}
# How many words after the program name its subcommand has (default 1).
SUBCOMMAND_WORDS = {"airflow": 2, "docker": 2, "aws": 2}
DEFAULT_PYTHONPATH = "plugins:."
PROMISED = ("up", "test")  # the README's two commands


# ---------------------------------------------------------------- where commands are run


@dataclass(frozen=True)
class Source:
    """A file, and pieces of its text that show it runs a command."""

    path: str
    pieces: tuple[str, ...]
    how: str


# Commands that code run by `make up` runs (by the words they start with), with the command
# of the Makefile that gets there and the source that runs them.
RUN_BY_MAKE_UP: dict[str, tuple[str, Source]] = {
    "pip install -r requirements.txt -c constraints.txt": (
        "scripts/bootstrap.sh",
        Source(
            "scripts/bootstrap.sh",
            ("install -q -r requirements.txt -c constraints.txt",),
            "bootstrap installs the pinned packages (`pip install -r requirements.txt -c constraints.txt`)",
        ),
    ),
    "apt-get install": (
        "scripts/bootstrap.sh",
        Source("scripts/bootstrap.sh", ("apt-get install -y",), "bootstrap installs the missing Debian packages as root"),
    ),
    "python -m moto.server": (
        "python -m spotlake_dev.localstack up core",
        Source("spotlake_dev/localstack/services.py", ('"-m", "moto.server"',), "`up core` starts moto server"),
    ),
    "airflow db migrate": (
        "python -m spotlake_dev.localstack up airflow",
        Source("spotlake_dev/localstack/services.py", ('"db", "migrate"',), "`up airflow` migrates Airflow's database"),
    ),
    "airflow pools set": (
        "python -m spotlake_dev.localstack up airflow",
        Source(
            "spotlake_dev/localstack/services.py",
            ('"pools", "set"', '"--include-deferred"'),
            "`up airflow` creates one Airflow pool per cluster pool",
        ),
    ),
    "python -m spotlake_dev.demo workload": (
        "python -m spotlake_dev.demo setup",
        Source("spotlake_dev/demo.py", ('"-m", "spotlake_dev.demo", "workload"',), "`demo setup` starts the workload"),
    ),
    "aws secretsmanager create-secret --endpoint-url http://127.0.0.1:15000": (
        "python -m spotlake_dev.demo setup",
        Source(
            "spotlake_dev/demo.py",
            ("_put_secret(sm, SINK_SECRET_ID",),
            "`demo setup` creates the stream sink's secret on moto (the same API call, through boto3)",
        ),
    ),
}

# Commands run by tests (by the words they start with). The first source is a test; any
# further one shows that what the test runs is what the documented command runs.
RUN_BY_TESTS: dict[str, tuple[Source, ...]] = {
    "python -m spotlake.job_dependencies publish": (
        Source(
            "tests/unit/test_job_dependencies.py",
            ('job_dependencies.main(["publish", "--to"', 'job_dependencies.main(["show"'),
            "runs the CLI's main (publish, show) into a folder",
        ),
        Source(
            "tests/support/service_fixtures.py",
            ("deps.build_and_publish(",),
            "the job_dependencies fixture runs what `publish` runs: Maven, pip, publish",
        ),
        Source(
            "plugins/spotlake/job_dependencies.py",
            ("sys.exit(main())", "build_and_publish(root"),
            "`python -m spotlake.job_dependencies publish` runs build_and_publish",
        ),
    ),
    "python -m spotlake.lake": (
        Source(
            "tests/integration/test_extraction_pipeline.py",
            ('lake.main([pipeline, "--sql"', '"--changes"'),
            "runs the CLI's main on a pipeline's tables, with --sql and --changes",
        ),
        Source("plugins/spotlake/lake.py", ("sys.exit(main())",), "`python -m spotlake.lake` runs main"),
    ),
    "python -m spotlake.stream_reset": (
        Source(
            "tests/integration/test_streaming.py",
            ('stream_reset.main([env.name, "--from", "committed", "--bootstrap-servers", env.bootstrap])',),
            "runs the CLI's main against a deleted checkpoint's stream, then the restarted stream",
        ),
        Source("plugins/spotlake/stream_reset.py", ("sys.exit(main())",), "`python -m spotlake.stream_reset` runs main"),
    ),
    "python -m spotlake.status": (
        Source(
            "tests/unit/test_status.py",
            ("from spotlake import config, pools, stack, status", 'status.main(["--json"])', "status.main([])"),
            "runs the CLI's main on moto's mock",
        ),
        Source("plugins/spotlake/status.py", ("sys.exit(main())",), "`python -m spotlake.status` runs main"),
    ),
    "python -m spotlake.ledger": (
        Source(
            "tests/unit/test_ledger.py",
            ('ledger.main(["--day", "2026-12-06", "--work"])', 'ledger.main(["--day", "2026-12-06", "--json"])'),
            "runs the CLI's main on moto's mock",
        ),
        Source("plugins/spotlake/ledger.py", ("sys.exit(main())",), "`python -m spotlake.ledger` runs main"),
    ),
    "python -m spotlake.prices refresh": (
        Source(
            "tests/unit/test_prices.py",
            ('prices.main(["refresh", "--region", "eu-west-1"])', 'prices.main(["refresh"])', "Stubber(pricing)"),
            "runs the CLI's main with the Price List's and EC2's answers stubbed, and with a refused token",
        ),
        Source("plugins/spotlake/prices.py", ("sys.exit(main())",), "`python -m spotlake.prices` runs main"),
    ),
    "python -m spotlake.prices show": (
        Source("tests/unit/test_prices.py", ('prices.main(["show"])',), "runs the CLI's main"),
        Source("plugins/spotlake/prices.py", ("sys.exit(main())",), "`python -m spotlake.prices` runs main"),
    ),
    "python -m spotlake_dev.chaos": (
        Source(
            "tests/unit/test_chaos.py",
            ('chaos.main(["prepare"])', 'chaos.main(["run", "--rounds", "1", "--print-only"])'),
            "runs the CLI's main: prepare's files, and run's refusal of a stack not started with them; the soak "
            "itself runs on a whole local stack for an hour (docs/benchmarks/chaos.md)",
        ),
        Source("spotlake_dev/chaos.py", ("sys.exit(main())",), "`python -m spotlake_dev.chaos` runs main"),
    ),
    "python -m spotlake_dev.clickgen": (
        Source(
            "tests/unit/test_clickgen.py",
            ("from spotlake_dev.clickgen import cli", 'cli.main(["--bootstrap"', '"--output"', '"--totals-json"', '"--dry-run"'),
            "runs the CLI's main: to a file, to stdout, and to a Kafka address",
        ),
        Source(
            "tests/integration/test_clickgen_kafka.py",
            ("KafkaSink(", "run(click_stream("),
            "runs what the CLI runs (run() into a KafkaSink) against the local Kafka",
        ),
        Source(
            "spotlake_dev/clickgen/__main__.py",
            ("from spotlake_dev.clickgen.cli import main", "sys.exit(main())"),
            "`python -m spotlake_dev.clickgen` runs cli.main",
        ),
        Source("spotlake_dev/clickgen/cli.py", ("KafkaSink(", "run("), "cli.main runs run() into a KafkaSink"),
    ),
    "deploy/emr/install-db-ca.sh": (
        Source(
            "tests/unit/test_db_ca_bootstrap.py",
            ('["bash", str(SCRIPT), str(bundle), str(dest)]',),
            "runs the script on a bundle of two CAs and reads its truststore back",
        ),
        Source(
            "tests/integration/test_database_tls.py",
            ("installed_ca(stack_tls(layout).ca",),
            "runs the script on the local stack's CA; Connector/J verifies MariaDB with its truststore",
        ),
    ),
    "python -m spotlake_dev.localstack livy-start": (
        Source(
            "tests/support/service_fixtures.py",
            ("livy_server.livy_spec(", "supervisor.start("),
            "the start_livy fixture starts Livy servers with the calls of `livy-start`",
        ),
        Source("spotlake_dev/localstack/__main__.py", ("supervisor.start(livy_server.livy_spec(",), "what `livy-start` runs"),
    ),
    "python -m spotlake_dev.localstack kill": (
        Source("tests/e2e/test_cluster_loss.py", ("supervisor.kill(",), "kills a cluster's Livy server mid-batch"),
        Source("spotlake_dev/localstack/__main__.py", ("supervisor.kill(args.name)",), "what `kill` runs"),
    ),
    "make compose-test": (
        Source(
            "tests/compose/test_compose_stack.py",
            ("build_images(", "stack.up()", "api.trigger(EXTRACT_DAG)"),
            "builds the images, brings the compose stack up under Podman and runs a window through it",
        ),
        Source(".ci/run", ("make compose-test",), "CI runs the compose tier after `make test`"),
        Source("Makefile", ("pytest tests/compose -m compose",), "`make compose-test` runs tests/compose"),
    ),
    "make down": (
        Source(
            "tests/integration/test_stack_lifecycle.py",
            ('"-m", "spotlake_dev.localstack", "down"', 'stack(second_stack, "down")'),
            "runs `make down`'s command and checks that no process is left",
        ),
        Source("Makefile", ("$(STACK) down",), "`make down` runs python -m spotlake_dev.localstack down"),
    ),
    "airflow backfill create": (
        Source(
            "tests/integration/test_backfill_command.py",
            ("documented_backfill()", "airflow(env, *command[1:])"),
            "runs the command as written in docs/operations.md against an Airflow metadata database",
        ),
    ),
    "psql": (
        Source(
            "tests/integration/test_services.py",
            ('["psql", "-h"', '"PGPASSWORD"'),
            "runs psql against the stack's PostgreSQL with the documented credentials",
        ),
    ),
    "mariadb": (
        Source(
            "tests/integration/test_services.py",
            ('["mariadb", "-h"',),
            "runs the mariadb client against the stack's MariaDB with the documented credentials",
        ),
    ),
    "python scripts/mwaa_bundle.py": (
        Source(
            "tests/unit/test_mwaa_bundle.py",
            ('mwaa_bundle.main([str(out), "--artifacts", ARTIFACTS])',),
            "runs the script's main into a new folder and checks the bundle",
        ),
        Source("scripts/mwaa_bundle.py", ("sys.exit(main())",), "`python scripts/mwaa_bundle.py` runs main"),
    ),
    "python -m spotlake_dev.smoke --dry-run": (
        Source(
            "tests/unit/test_smoke.py",
            (
                'smoke.main(["--dry-run", "--pipeline", "shop_orders", "--artifacts", ARTIFACTS])',
                'ARTIFACTS = "s3://spotlake-artifacts/spotlake/artifacts"',
                '"--endpoint-url", moto_server',
            ),
            "runs the documented dry run (moto in the process), and the same against a moto server",
        ),
        Source("spotlake_dev/smoke.py", ("sys.exit(main())",), "`python -m spotlake_dev.smoke` runs main"),
    ),
    "docker compose config": (
        Source("tests/unit/test_compose.py", ('"config", "--format", "json"',), "runs it with the pinned compose binary"),
    ),
    "cp .env.example": (
        Source(
            "tests/unit/test_compose.py",
            ('"--env-file", str(ENV_EXAMPLE)',),
            "resolves the compose file with .env.example as its .env",
        ),
    ),
}

# Cheap commands that need no service: run here as documented.
RUN_HERE = {
    "python -m spotlake_dev.clickgen --dry-run --unthrottled --count 10 --seed 7 --start 2024-05-01T00:00:00Z",
    "mvn -v",
    "make lint",
}

# Local commands that nothing runs yet, and why. Keep this list short: remove an entry as
# soon as a test runs the command.
NOT_RUN_YET = {
    **{
        f"docker compose {sub}": "needs a Docker engine, which the CI machine does not have (docs/docker.md); "
        "tests/unit/test_compose.py checks the compose file statically"
        for sub in ("up", "ps", "down", "build", "exec", "run")
    },
}


# ---------------------------------------------------------------- commands of the docs


@dataclass(frozen=True)
class Command:
    doc: str  # path relative to the project
    line: int
    text: str  # as written: continuations joined, prompt and comment removed
    comment: str  # the shell comment at the end of its line

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: `{self.text}`"


def split_line(text: str) -> tuple[list[str], str]:
    """The commands of one shell line (split at unquoted &&, ||, ; and |) and its comment."""
    parts, quote, start, i = [], "", 0, 0
    comment = ""
    while i < len(text):
        char = text[i]
        if quote:
            if char == quote:
                quote = ""
            elif char == "\\" and quote == '"':
                i += 1
        elif char in "'\"":
            quote = char
        elif char == "\\":
            i += 1
        elif char == "#" and (i == 0 or text[i - 1].isspace()):
            text, comment = text[:i], text[i + 1 :].strip()
            break
        elif text.startswith(("&&", "||"), i):
            parts.append(text[start:i])
            start = i + 2
            i += 1
        elif char in ";|":
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return [part.strip() for part in parts if part.strip()], comment


def words(text: str) -> list[str]:
    """The words of a command without its environment assignments and sudo, its python
    and pip named plainly (``.venv/bin/python`` is ``python``, ``python -m pip`` is ``pip``)."""
    argv = shlex.split(text)
    while argv and (re.match(r"^[A-Za-z_]\w*=", argv[0]) or argv[0] == "sudo"):
        argv = argv[1:]
    if argv and re.fullmatch(r"(?:.*/)?python(?:3(?:\.\d+)?)?", argv[0]):
        argv = ["python", *argv[1:]]
    elif argv and "/bin/" in argv[0]:
        argv = [argv[0].rsplit("/", 1)[1], *argv[1:]]
    if argv[:3] == ["python", "-m", "pip"]:
        argv = ["pip", *argv[3:]]
    return argv


def environment(text: str) -> dict[str, str]:
    """The command's leading environment assignments."""
    env = {}
    for word in shlex.split(text):
        if not re.match(r"^[A-Za-z_]\w*=", word):
            break
        name, value = word.split("=", 1)
        env[name] = value
    return env


def key(argv: list[str]) -> str:
    """Program and subcommand: ``python -m spotlake_dev.localstack up``, ``airflow backfill create``."""
    if argv[:2] == ["python", "-m"]:
        head, rest = argv[:3], argv[3:]
    elif argv[0] == "python" and len(argv) > 1 and argv[1].endswith(".py"):
        head, rest = argv[:2], argv[2:]
    else:
        head, rest = argv[:1], argv[1:]
    sub = []
    for word in rest:
        if word.startswith("-") or elided([word]) or len(sub) == SUBCOMMAND_WORDS.get(head[0], 1):
            break
        sub.append(word)
    return " ".join(head + sub)


def elided(argv: list[str]) -> bool:
    """Whether the command has a placeholder (`<id>`, `…`, `[options]`) and cannot run as written."""
    return any("…" in w or w == "..." or re.search(r"<[^>]+>", w) or re.fullmatch(r"\[.+\]", w) for w in argv)


def is_program(word: str) -> bool:
    return (
        word.rsplit("/", 1)[-1] in PROGRAMS
        or bool(re.fullmatch(r"(?:.*/)?python(?:3(?:\.\d+)?)?", word))
        or ("/" in word and word.endswith((".sh", ".py")))
    )


def looks_like_command(text: str) -> bool:
    """For inline spans and unlabelled blocks: starts with a program, has an argument, and
    has no word ending in ':' (a message quoted from a tool)."""
    try:
        raw = shlex.split(text)
        argv = words(text)
    except ValueError:
        return False
    return len(argv) >= 2 and is_program(argv[0]) and not any(w.endswith(":") for w in raw)


def logical_lines(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Lines with their `\\` continuations joined, numbered by their first line."""
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, line in lines:
        if pending is not None:
            number, line = pending[0], pending[1] + " " + line.strip()
            pending = None
        if line.rstrip().endswith("\\"):
            pending = (number, line.rstrip()[:-1].rstrip())
        else:
            out.append((number, line.strip()))
    if pending is not None:
        out.append(pending)
    return out


def commands_of(doc: Path) -> list[Command]:
    name = doc.relative_to(ROOT).as_posix()
    found: list[tuple[int, str, str, bool]] = []  # line, text, comment, is_candidate (needs looks_like_command)
    prose: list[str] = []
    block: list[tuple[int, str]] | None = None
    lang = ""
    for number, line in enumerate(doc.read_text().splitlines(), start=1):
        fence = re.match(r"^\s*(```|~~~)\s*([\w+-]*)", line)
        if fence and block is None:
            block, lang = [], fence.group(2).lower()
            prose.append("")
            continue
        if fence and block is not None:
            for start, text in logical_lines(block):
                if lang == "console" or text.startswith("$ "):
                    if not text.startswith("$ "):
                        continue
                    text = text[2:]
                elif lang not in SHELL_BLOCKS and lang != "":
                    continue
                parts, comment = split_line(text)
                found += [(start, part, comment, lang == "") for part in parts]
            block = None
            prose.append("")
            continue
        if block is not None:
            block.append((number, line))
            prose.append("")
        else:
            prose.append(line)
    text = "\n".join(prose)
    for span in re.finditer(r"(?<!`)`([^`]+)`(?!`)", text):
        start = text.count("\n", 0, span.start()) + 1
        parts, comment = split_line(" ".join(span.group(1).split()))
        found += [(start, part, comment, True) for part in parts]
    return sorted(
        (
            Command(name, start, part, comment)
            for start, part, comment, candidate in found
            if not candidate or looks_like_command(part)
        ),
        key=lambda c: c.line,
    )


@cache
def documented() -> tuple[Command, ...]:
    return tuple(cmd for doc in DOCS for cmd in commands_of(doc))


# ---------------------------------------------------------------- the Makefile


@cache
def makefile() -> dict[str, tuple[list[str], list[str]]]:
    """target: (prerequisites, recipe lines with the variables expanded)."""
    variables = {"CURDIR": str(ROOT)}
    targets: dict[str, tuple[list[str], list[str]]] = {}
    current = None
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith("\t") and current:
            targets[current][1].append(line.strip().lstrip("@-"))
        elif assignment := re.match(r"^(?:export\s+)?(\w+)\s*[:?]?=\s*(.*)$", line):
            variables[assignment.group(1)] = assignment.group(2)
        elif (rule := re.match(r"^([\w-]+)\s*:(?!=)\s*(.*)$", line)) or line.startswith("."):
            current = rule.group(1) if rule else None  # .PHONY and other special targets: not targets
            if current:
                targets[current] = (rule.group(2).split(), [])

    def expand(value: str) -> str:
        for _ in range(10):
            value = re.sub(r"(?<!\$)\$\((\w+)\)", lambda m: variables.get(m.group(1), m.group(0)), value)
        return value.replace("$$", "$")

    return {name: (prereqs, [expand(line) for line in recipe]) for name, (prereqs, recipe) in targets.items()}


def make_closure(*names: str) -> set[str]:
    targets, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in targets and name in makefile():
            targets.add(name)
            todo += makefile()[name][0]
    return targets


def recipe_commands(*names: str) -> set[str]:
    """The commands (normalised, see words) of the recipes of these targets and their prerequisites."""
    commands = set()
    for target in make_closure(*names):
        for line in makefile()[target][1]:
            for part in split_line(line)[0]:
                try:
                    argv = words(part)
                except ValueError:  # not a simple command (a quoted $(...) in an echo)
                    continue
                if argv:
                    commands.add(shlex.join(argv))
    return commands


def match(table: dict[str, object] | set[str], argv: list[str]) -> str | None:
    """The entry of ``table`` that the command starts with (its words, see words)."""
    return next((name for name in table if argv[: len(shlex.split(name))] == shlex.split(name)), None)


SELECTING = ("-m", "-k")  # pytest options that only pick among the tests of its paths
REPORTING = ("--durations",)  # pytest options that change only what it prints


def pytest_run(argv: list[str]) -> tuple[list[str], list[str], list[str]] | None:
    """(paths, selecting options with their values, other options) of a `python -m pytest` command."""
    if argv[:3] != ["python", "-m", "pytest"]:
        return None
    paths, selecting, other = [], [], []
    words_ = iter(argv[3:])
    for word in words_:
        if word in SELECTING:
            selecting += [word, next(words_, "")]
        elif word.startswith(REPORTING):
            continue
        elif word.startswith("-"):
            other.append(word)
        else:
            paths.append(word.rstrip("/"))
    return paths, selecting, other


def picks_from(argv: list[str], promised: set[str]) -> bool:
    """Whether the command is a pytest run of some of the tests of a pytest run of ``promised``."""
    mine = pytest_run(argv)
    if mine is None or not mine[0]:
        return False
    for command in promised:
        theirs = pytest_run(shlex.split(command))
        if (
            theirs is not None
            and not theirs[1]
            and mine[2] == theirs[2]
            and all(any(path == t or path.startswith(f"{t}/") for t in theirs[0]) for path in mine[0])
        ):
            return True
    return False


def run_by_make(argv: list[str]) -> bool:
    """Whether `make up` / `make test` run this command."""
    promised = recipe_commands(*PROMISED)
    if argv[0] == "make":
        targets = [w for w in argv[1:] if not w.startswith("-") and "=" not in w] or [next(iter(makefile()))]
        return all(
            t in make_closure(*PROMISED)
            or (t in makefile() and all(c in promised or picks_from(shlex.split(c), promised) for c in recipe_commands(t)))
            for t in targets
        )
    return shlex.join(argv) in promised or picks_from(argv, promised) or match(RUN_BY_MAKE_UP, argv) is not None


def classify(cmd: Command) -> str | None:
    """How the command is run (see the module's docstring), or None."""
    argv = words(cmd.text)
    if AWS_MARK in cmd.comment:
        return "needs AWS"
    if run_by_make(argv):
        return "run by make up / make test"
    if shlex.join(argv) in RUN_HERE or (
        argv[:2] and argv[0] == "python" and argv[1].startswith("bench/") and not elided(argv)
    ):  # a benchmark: its `--help` and arguments, here
        return "run here"
    if name := match(RUN_BY_TESTS, argv):
        return "run by " + ", ".join(s.path for s in RUN_BY_TESTS[name] if s.path.startswith("tests/"))
    if name := match(NOT_RUN_YET, argv):
        return "not run yet: " + NOT_RUN_YET[name]
    return None


# ---------------------------------------------------------------- the tests


def test_the_docs_commands_are_found() -> None:
    """The extraction itself: fenced, indented, continued, inline and chained commands."""
    found = {(c.doc, c.text) for c in documented()}
    for expected in [
        ("README.md", "make up"),
        (
            "docs/local-stack.md",
            "PYTHONPATH=plugins .venv/bin/python -m spotlake_dev.localstack livy-start demo 18990 --master 'local[1]'",
        ),
        (
            "docs/operations.md",
            "airflow backfill create --dag-id extract_shop_orders --from-date 2026-11-27T10:00:00+00:00 "
            "--to-date 2026-11-27T11:00:00+00:00 --reprocess-behavior completed",
        ),
        ("docs/troubleshooting.md", "make down"),
        ("docs/benchmarks/stack-memory.md", "PYTHONPATH=plugins .venv/bin/python bench/stack_memory.py"),
    ]:
        assert expected in found, f"{expected} not found among the documented commands"
    assert not any(c.text.startswith("make failed") for c in documented()), "a quoted message was taken for a command"
    assert len(documented()) > 40


@pytest.mark.parametrize("cmd", documented(), ids=lambda c: f"{c.doc}:{c.line}")
def test_every_documented_command_is_run_or_needs_aws(cmd: Command) -> None:
    assert classify(cmd), (
        f"{cmd} is run by neither `make up`/`make test` nor a test (key `{key(words(cmd.text))}`). Fix: fix the "
        f"command if it is wrong; or add a test that runs it and name the test in RUN_BY_TESTS in {TEST_FILE}; or, "
        f"if it is cheap and needs no service, add it to RUN_HERE there; or, if it only works against real AWS, "
        f"end it with the comment `# {AWS_MARK}`"
    )


def all_sources() -> list[tuple[str, Source]]:
    return [(k, s) for k, sources in RUN_BY_TESTS.items() for s in sources] + [(k, s) for k, (_, s) in RUN_BY_MAKE_UP.items()]


def unformatted(text: str) -> str:
    return re.sub(r",(?=[)\]}])", "", re.sub(r"\s+", "", text))


@pytest.mark.parametrize(("command", "source"), all_sources(), ids=lambda v: v if isinstance(v, str) else v.path)
def test_the_named_sources_run_the_command(command: str, source: Source) -> None:
    path = ROOT / source.path
    assert path.is_file(), f"{TEST_FILE}: {source.path}, named for `{command}`, does not exist; fix the mapping"
    # Compared without whitespace and trailing commas: the formatter may spread a call over lines.
    text = unformatted(path.read_text())
    for piece in source.pieces:
        assert unformatted(piece) in text, (
            f"{TEST_FILE}: {source.path} no longer contains {piece!r}, which shows that it "
            f"{source.how} (`{command}`); fix the mapping or the docs"
        )


def test_the_mappings_are_in_use() -> None:
    """No mapping entry outlives its command in the docs, and tests come first."""
    commands = [words(c.text) for c in documented()]
    for name in [*RUN_BY_TESTS, *RUN_BY_MAKE_UP, *NOT_RUN_YET]:
        assert any(match({name}, argv) for argv in commands), f"{TEST_FILE}: no documented command is `{name}` any more"
    for text in RUN_HERE:
        assert shlex.split(text) in commands, f"{TEST_FILE}: RUN_HERE names `{text}`, which no doc has any more"
    for name, sources in RUN_BY_TESTS.items():
        assert sources[0].path.startswith("tests/"), f"RUN_BY_TESTS[{name!r}] must name a test first"
    promised = recipe_commands(*PROMISED)
    for name, (via, _) in RUN_BY_MAKE_UP.items():
        assert via in promised, f"RUN_BY_MAKE_UP[{name!r}]: `make up`/`make test` no longer run `{via}`"


def test_the_aws_marker_is_documented() -> None:
    assert f"`# {AWS_MARK}`" in (ROOT / "README.md").read_text()


# ---------------------------------------------------------------- commands run here


def run_env(tmp_path: Path, pythonpath: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOTLAKE_", "AWS_ENDPOINT"))}
    # Imports of Airflow write its default configuration: keep it out of the caller's home.
    return {**env, "PYTHONPATH": pythonpath, "AIRFLOW_HOME": str(tmp_path / "airflow")}


def runnable(text: str) -> list[str]:
    argv = words(text)
    return [sys.executable, *argv[1:]] if argv[0] == "python" else [shutil.which(argv[0]) or argv[0], *argv[1:]]


@pytest.mark.tools
@pytest.mark.parametrize("text", sorted(RUN_HERE))
def test_cheap_commands_run(text: str, tmp_path: Path) -> None:
    cmd = next(c for c in documented() if shlex.join(words(c.text)) == text)
    env = run_env(tmp_path, environment(cmd.text).get("PYTHONPATH", DEFAULT_PYTHONPATH))
    # a guard against a hang, not a speed target: `make lint` alone takes over a minute on a busy 2-core machine
    runs = [
        subprocess.run(runnable(cmd.text), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
        for _ in range(2 if "--seed" in text else 1)
    ]
    assert runs[0].returncode == 0, f"{cmd} failed (exit {runs[0].returncode}):\n{runs[0].stderr[-2000:]}"
    if "spotlake_dev.clickgen" in text:  # "the same 10 events every time, on stdout"
        events = [json.loads(line) for line in runs[0].stdout.splitlines()]
        assert len(events) == 10 and runs[1].stdout == runs[0].stdout, f"{cmd} does not print the same 10 events"


# The documented command lines of each CLI, grouped by the CLI and the PYTHONPATH they name.
def cli_calls() -> dict[tuple[str, str], list[tuple[Command, list[str]]]]:
    calls: dict[tuple[str, str], list[tuple[Command, list[str]]]] = defaultdict(list)
    for cmd in documented():
        argv = words(cmd.text)
        pythonpath = environment(cmd.text).get("PYTHONPATH", DEFAULT_PYTHONPATH)
        if argv[:2] == ["docker", "compose"] and len(argv) > 3 and argv[2] in ("exec", "run"):
            service = next(i for i, w in enumerate(argv[3:], start=3) if not w.startswith("-"))
            argv, pythonpath = argv[service + 1 :], DEFAULT_PYTHONPATH  # the command in the container
        if not argv or elided(argv):
            continue
        if argv[:2] == ["python", "-m"] and argv[2].startswith(("spotlake.", "spotlake_dev.")):
            calls[(argv[2], pythonpath)].append((cmd, argv[3:]))
        elif argv[0] == "python" and len(argv) > 1 and argv[1].startswith("bench/"):
            calls[(argv[1], pythonpath)].append((cmd, argv[2:]))
        elif argv[0] == "airflow":
            calls[("airflow", DEFAULT_PYTHONPATH)].append((cmd, argv[1:]))
    return calls


# Runs a module or script with each argv, stopping right after its argument parser.
PARSE_ONLY = r"""
import argparse, contextlib, io, json, os, runpy, sys
target, runs = sys.argv[1], json.loads(sys.argv[2])
class Parsed(BaseException):
    pass
parse_args = argparse.ArgumentParser.parse_args
def parse_only(self, args=None, namespace=None):
    parse_args(self, args, namespace)
    raise Parsed
argparse.ArgumentParser.parse_args = parse_only
results = []
for argv in runs:
    out, err, code = io.StringIO(), io.StringIO(), "returned without parsing its arguments"
    sys.argv = [target, *argv]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if target.endswith(".py"):
                sys.path[0] = os.path.dirname(os.path.abspath(target))
                runpy.run_path(target, run_name="__main__")
            else:
                runpy.run_module(target, run_name="__main__", alter_sys=True)
        except Parsed:
            code = 0
        except SystemExit as exc:
            code = exc.code
    results.append({"code": code, "out": out.getvalue(), "err": err.getvalue()})
print("\n@@results@@" + json.dumps(results))
"""


@pytest.mark.tools
@pytest.mark.parametrize(("target", "pythonpath"), sorted(cli_calls()), ids=lambda v: v)
def test_documented_arguments_parse(target: str, pythonpath: str, tmp_path: Path) -> None:
    """`--help` runs, and each documented command line passes the CLI's own parser."""
    calls = cli_calls()[(target, pythonpath)]
    runs = [["--help"], *(argv for _, argv in calls)]
    done = subprocess.run(
        [sys.executable, "-c", PARSE_ONLY, target, json.dumps(runs)],
        cwd=ROOT,
        env=run_env(tmp_path, pythonpath),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "@@results@@" in done.stdout, f"{target} (PYTHONPATH={pythonpath}) did not start:\n{done.stderr[-3000:]}"
    results = json.loads(done.stdout.rsplit("@@results@@", 1)[1])
    help_run, *parsed = results
    assert help_run["code"] == 0 and "usage:" in help_run["out"].lower(), f"{target} --help failed: {help_run}"
    for (cmd, argv), result in zip(calls, parsed, strict=True):
        assert result["code"] == 0, (
            f"{cmd}: {target} rejects `{shlex.join(argv)}` (exit {result['code']}):\n"
            f"{result['err'][-1500:]}\nFix the command in the doc (see `{target} --help`)"
        )


@pytest.mark.tools
def test_documented_docker_compose_commands_parse(tmp_path: Path) -> None:
    """No Docker engine here: the pinned compose binary checks each subcommand and its flags
    (`docker compose SUB --help ARGS` parses ARGS' flags, then prints the help)."""
    checked = 0
    for cmd in documented():
        argv = words(cmd.text)
        if argv[:2] != ["docker", "compose"] or len(argv) < 3 or elided(argv):
            continue
        done = subprocess.run(
            [str(compose_binary()), argv[2], "--help", *argv[3:]],
            cwd=ROOT,
            env={"HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"{cmd}: docker compose rejects it: {done.stderr.strip()}. Fix the command in the doc"
        checked += 1
    assert checked > 0

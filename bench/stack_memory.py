"""Memory of the whole local stack when idle.

Waits until no Livy batch runs on any local cluster, then samples every process of the
stack (service and children) five times, 2 s apart, and reports the median PSS total
(each shared page divided among the processes that map it) and the RSS total.

    PYTHONPATH=plugins .venv/bin/python bench/stack_memory.py       # after `make up`

Writes docs/benchmarks/stack-memory.md unless --print-only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import requests

from hooks.livy import EndpointLivyHook
from spotlake.stack import StackLayout
from spotlake_dev.localstack.__main__ import status
from spotlake_dev.localstack.process import Supervisor, wait_for

ROOT = Path(__file__).resolve().parents[1]

LIVE = {"not_started", "starting", "running", "busy", "idle", "shutting_down"}


def livy_busy(layout: StackLayout) -> bool:
    for conf in (layout.data_dir / "livy").glob("*/conf/livy.conf"):
        text = conf.read_text()
        port = next(line.split("=", 1)[1].strip() for line in text.splitlines() if line.startswith("livy.server.port"))
        hook = EndpointLivyHook(f"http://127.0.0.1:{port}")
        hook.extra_options = {"check_response": False, "timeout": 2}
        try:
            response = hook.run_method("batches", data={"size": 1000})
        except requests.RequestException:
            continue
        if response.status_code == 200 and any(b["state"] in LIVE for b in response.json()["sessions"]):
            return True
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--print-only", action="store_true")
    args = parser.parse_args()
    layout = StackLayout.default()
    supervisor = Supervisor(layout)
    if not wait_for(lambda: not livy_busy(layout), timeout=600, interval=2):
        print("a batch kept running for 10 minutes; measure later", file=sys.stderr)
        return 1
    samples = []
    for _ in range(5):
        rows = status(layout, supervisor)
        samples.append(rows)
        time.sleep(2)
    pss = statistics.median(sum(r[3] for r in rows) for rows in samples)
    rss = statistics.median(sum(r[2] for r in rows) for rows in samples)
    last = samples[-1]
    lines = [
        "# Memory of the idle local stack",
        "",
        f"Command: `PYTHONPATH=plugins .venv/bin/python bench/stack_memory.py` after `make up` "
        f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC; no Livy batch running; median of 5 samples).",
        "",
        f"**Total PSS {pss / 1024:.2f} GiB** (RSS total {rss / 1024:.2f} GiB, which counts pages shared by "
        "forked processes, e.g. Airflow's LocalExecutor workers, once per process). Target: under 4 GiB.",
        "",
        "| service | PSS (MiB) | RSS (MiB) |",
        "|---|---|---|",
        *(f"| {name} | {p:.0f} | {r:.0f} |" for name, _, r, p in last),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.print_only:
        out = ROOT / "docs" / "benchmarks" / "stack-memory.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line of the local stack: ``python -m spotlake_dev.localstack COMMAND``.

Commands:
  jars               resolve the JVM jars with Maven (kafka, livy, spark)
  up [GROUP ...]     start services (groups: core, airflow; default: all), idempotent
  down               stop every process of the stack, by PID
  status             list services, PIDs, ports and resident memory
  livy-start NAME PORT [--master local[N]]   start one Livy server (one local cluster)
  livy-stop NAME     stop it
  kill NAME          SIGKILL a service and its children (failure injection)
"""

from __future__ import annotations

import argparse
import sys

import psutil

from spotlake import maven
from spotlake.errors import StackError
from spotlake.stack import StackLayout
from spotlake_dev.localstack import kafka_server, livy_server, s3_server
from spotlake_dev.localstack.process import Supervisor

GROUPS = ("core", "airflow")


def start_core(layout: StackLayout, supervisor: Supervisor) -> None:
    from spotlake_dev.localstack import persistence, services

    supervisor.start(services.mariadb_spec(layout))
    services.bootstrap_mariadb(layout)
    supervisor.start(services.postgres_spec(layout))
    services.bootstrap_postgres(layout)
    supervisor.start(s3_server.s3_spec(layout))
    supervisor.start(services.moto_spec(layout))
    restored = persistence.restore(layout)
    if restored:
        print(f"registry: restored {restored} items from {persistence.dump_file(layout)}")
    maven.resolve_jars(layout, "kafka")
    supervisor.start(kafka_server.kafka_spec(layout))
    publish_job_dependencies(layout)


def publish_job_dependencies(layout: StackLayout) -> None:
    """Deploy the jobs' jars and Python archive where the operators publish job code, as on AWS."""
    from spotlake import artifacts, job_dependencies

    root = artifacts.artifacts_root()
    manifest = job_dependencies.build_and_publish(root, layout=layout)
    print(f"job dependencies: {len(manifest.jars)} jars and {manifest.python_archive.rsplit('/', 1)[1]} published under {root}")


def start_airflow(layout: StackLayout, supervisor: Supervisor) -> None:
    from spotlake_dev.localstack import services

    services.migrate_airflow_db(layout)
    services.create_airflow_pools(layout)
    for spec in services.airflow_specs(layout):
        supervisor.start(spec)


def start_livy(layout: StackLayout, supervisor: Supervisor, name: str, port: int, master: str) -> int:

    maven.resolve_jars(layout, "livy")
    maven.resolve_jars(layout, "spark")
    return supervisor.start(livy_server.livy_spec(layout, name, port, master=master))


# Stop order: clients before the servers they use.
STOP_ORDER = (
    "airflow-scheduler",
    "airflow-triggerer",
    "airflow-dag-processor",
    "airflow-api-server",
    "clickgen",
    "workload",
)
STOP_LAST = ("kafka", "moto", "s3", "postgres", "mariadb")


def stop_all(layout: StackLayout, supervisor: Supervisor) -> list[str]:
    names = [p.stem for p in sorted(layout.run_dir.glob("*.pid"))] if layout.run_dir.exists() else []
    names = [n for n in names if n != "mariadbd"]
    if "moto" in names and supervisor.is_running("moto"):
        from spotlake_dev.localstack import persistence

        saved = persistence.save(layout)
        print(f"registry: saved {saved} items to {persistence.dump_file(layout)}")
    ordered = [n for n in STOP_ORDER if n in names]
    ordered += [n for n in names if n not in STOP_ORDER and n not in STOP_LAST]
    ordered += [n for n in STOP_LAST if n in names]
    stopped = []
    for name in ordered:
        if supervisor.stop(name):
            stopped.append(name)
    return stopped


def status(layout: StackLayout, supervisor: Supervisor) -> list[tuple[str, int | None, float, float]]:
    """(service, pid, RSS MiB, PSS MiB) of each service with its child processes.

    PSS shares each page among the processes that map it, so the PSS total is the
    stack's real footprint; the RSS total counts pages shared by forked workers twice.
    """
    rows = []
    if layout.run_dir.exists():
        for pid_file in sorted(layout.run_dir.glob("*.pid")):
            name = pid_file.stem
            if name == "mariadbd":
                continue
            pid = supervisor.pid(name)
            rss = pss = 0.0
            if pid:
                try:
                    root = psutil.Process(pid)
                    procs = [root, *root.children(recursive=True)]
                    for proc in procs:
                        info = proc.memory_full_info()
                        rss += info.rss / 2**20
                        pss += getattr(info, "pss", info.rss) / 2**20
                except psutil.Error:
                    pass
            rows.append((name, pid, rss, pss))
    return rows


def start_groups(layout: StackLayout, supervisor: Supervisor, groups: list[str]) -> None:
    if "core" in groups:
        start_core(layout, supervisor)
    if "airflow" in groups:
        start_airflow(layout, supervisor)


def print_status(rows: list[tuple[str, int | None, float, float]]) -> None:
    print(f"{'service':28} {'process':14} {'RSS':>9} {'PSS':>9}")
    for name, pid, rss, pss in rows:
        print(f"{name:28} {'pid ' + str(pid) if pid else 'not running':14} {rss:5.0f} MiB {pss:5.0f} MiB")
    print(f"{'total':28} {'':14} {sum(r[2] for r in rows):5.0f} MiB {sum(r[3] for r in rows):5.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spotlake_dev.localstack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up")
    up.add_argument("groups", nargs="*", help="core, airflow (default: both)")
    sub.add_parser("jars")
    sub.add_parser("down")
    sub.add_parser("status")
    livy = sub.add_parser("livy-start")
    livy.add_argument("name")
    livy.add_argument("port", type=int)
    livy.add_argument("--master", default="local[2]")
    livy_stop = sub.add_parser("livy-stop")
    livy_stop.add_argument("name")
    kill = sub.add_parser("kill")
    kill.add_argument("name")
    args = parser.parse_args(argv)

    layout = StackLayout.default()
    layout.ensure()
    supervisor = Supervisor(layout)
    try:
        if args.command == "jars":
            for group in maven.JAR_GROUPS:
                maven.resolve_jars(layout, group)
        elif args.command == "up":
            groups = args.groups or list(GROUPS)
            unknown = sorted(set(groups) - set(GROUPS))
            if unknown:
                parser.error(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
            start_groups(layout, supervisor, groups)
        elif args.command == "down":
            stopped = stop_all(layout, supervisor)
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        elif args.command == "status":
            print_status(status(layout, supervisor))
        elif args.command == "livy-start":
            pid = start_livy(layout, supervisor, args.name, args.port, args.master)
            print(f"livy-{args.name}: pid {pid}, http://127.0.0.1:{args.port}")
        elif args.command == "livy-stop":
            supervisor.stop(f"livy-{args.name}")
        elif args.command == "kill":
            supervisor.kill(args.name)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

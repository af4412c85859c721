"""The JVM servers of the local stack: a single-node Kafka broker and Apache Livy.

Their jars come from Maven Central through the poms in ``jvm/<group>/pom.xml``, copied
by :func:`resolve_jars` into ``.stack/jars/<group>/`` (one folder per group so that
classpaths stay apart):

- ``kafka``: ``kafka_2.13`` (KRaft broker+controller, ``kafka.tools.StorageTool``) and
  a log4j2 backend;
- ``livy``: the Apache Livy server and its libraries (Scala 2.11, its own process);
- ``spark``: what an EMR cluster has on Spark's classpath and pip's pyspark lacks (s3a, the
  local stand-in for EMRFS), on the local Livy's ``extraClassPath``;
- ``jobs``: the jars the jobs need that no cluster ships (JDBC drivers, the Kafka connector,
  Apache Iceberg), published beside the job code and named by every batch
  (:mod:`spotlake.job_dependencies`), never on the local Livy's own classpath;
- ``s3``: S3Proxy, the local S3, keeping objects as files under ``.stack/data/s3``.

:func:`kafka_spec` and :func:`livy_spec` return :class:`ServiceSpec` objects for the
:class:`~spotlake.localstack.process.Supervisor`; their ``prepare`` resolves the jars
and renders the config files, so starting a spec is all a caller does.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from spotlake.errors import StackError
from spotlake.localstack.layout import StackLayout
from spotlake.localstack.process import ServiceSpec
from spotlake.localstack.services import aws_env, s3_endpoint

JAR_GROUPS = ("kafka", "livy", "spark", "jobs", "s3")

# What the upstream bin/livy-server passes to the JVM "for Java 17 support".
LIVY_JAVA17_FLAGS = (
    "-XX:+IgnoreUnrecognizedVMOptions",
    "--add-opens=java.base/java.lang.invoke=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.net=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/sun.util.calendar=ALL-UNNAMED",
    "--add-exports=java.base/sun.net.dns=ALL-UNNAMED",
    "--add-exports=java.base/sun.net.util=ALL-UNNAMED",
    "--add-exports=java.base/sun.security.x509=ALL-UNNAMED",
    "--add-exports=java.base/sun.security.util=ALL-UNNAMED",
)

_MVN_TIMEOUT = 1800.0  # a cold ~/.m2 downloads ~400 MB (aws-java-sdk-bundle alone is 280 MB)
_STAMP = ".resolved"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MVN_NOISE = (
    "[ERROR] To see the full",
    "[ERROR] Re-run Maven",
    "[ERROR] For more information",
    "[ERROR] [Help",
)


# --------------------------------------------------------------------------- jars


def java_bin() -> str:
    """The ``java`` to run the servers with: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise StackError(
            "no `java` found (JAVA_HOME unset and none on PATH). Fix: apt-get install openjdk-17-jre-headless"
        )
    return found


def pom_path(layout: StackLayout, group: str) -> Path:
    return layout.project / "jvm" / group / "pom.xml"


def jars_fresh(layout: StackLayout, group: str) -> bool:
    """Whether ``.stack/jars/<group>`` holds a complete resolution of the current pom."""
    pom = pom_path(layout, group)
    stamp = layout.jars(group) / _STAMP
    if not stamp.exists() or not pom.exists():
        return False
    if stamp.stat().st_mtime >= pom.stat().st_mtime:
        return True
    # The pom was touched (e.g. by a checkout) but its content may be unchanged.
    return stamp.read_text().strip() == _sha256(pom)


def resolve_jars(layout: StackLayout, group: str) -> Path:
    """Copy the runtime jars of ``jvm/<group>/pom.xml`` into ``.stack/jars/<group>``.

    Runs Maven only if the folder is missing or older than the pom. Maven writes into a
    fresh folder that replaces the old one only on success, so jars of an older pom never
    linger next to the new ones. Returns the folder.
    """
    if group not in JAR_GROUPS:
        raise ValueError(f"unknown jar group {group!r}; expected one of {', '.join(JAR_GROUPS)}")
    pom = pom_path(layout, group)
    out = layout.jars(group)
    step = f"maven resolve of jvm/{group}/pom.xml"
    if not pom.exists():
        raise StackError(f"{step} failed: {pom} does not exist")
    layout.jars_dir.mkdir(parents=True, exist_ok=True)
    with _lock(layout.jars_dir / f".{group}.lock"):
        if jars_fresh(layout, group):
            return out
        mvn = shutil.which("mvn")
        if mvn is None:
            raise StackError(f"{step} failed: `mvn` is not on PATH. Fix: apt-get install maven")
        partial = layout.jars_dir / f".{group}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        argv = [
            mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
            f"-DoutputDirectory={partial}", "-DincludeScope=runtime",
        ]  # fmt: skip
        try:
            done = subprocess.run(  # noqa: S603 - fixed argv
                argv, capture_output=True, text=True, timeout=_MVN_TIMEOUT, cwd=layout.project
            )
        except subprocess.TimeoutExpired:
            shutil.rmtree(partial, ignore_errors=True)
            raise StackError(f"{step} failed: mvn did not finish within {_MVN_TIMEOUT:.0f} s") from None
        if done.returncode != 0 or not any(partial.glob("*.jar")):
            shutil.rmtree(partial, ignore_errors=True)
            raise StackError(
                f"{step} failed: {_mvn_error(done.stdout + done.stderr)} (mvn exit {done.returncode})"
            )
        (partial / _STAMP).write_text(_sha256(pom) + "\n")
        old = layout.jars_dir / f".{group}.old"
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            out.rename(old)
        partial.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    return out


def jar_files(layout: StackLayout, group: str) -> list[Path]:
    return sorted(layout.jars(group).glob("*.jar"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mvn_error(output: str, lines: int = 12) -> str:
    text = [_ANSI.sub("", line).rstrip() for line in output.splitlines()]
    text = [line for line in text if line.strip() and line.strip() != "[ERROR]"]
    errors = [line for line in text if line.startswith("[ERROR]") and not line.startswith(_MVN_NOISE)]
    picked = (errors or text)[-lines:]
    return "\n".join(picked) if picked else "(mvn printed nothing)"


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _heap(layout: StackLayout, key: str, default: str) -> list[str]:
    return shlex.split(layout.setting(key, default) or default)


def _write_if_changed(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _properties(values: Mapping[str, object]) -> str:
    return "".join(f"{key}={value}\n" for key, value in values.items())


# --------------------------------------------------------------------------- Kafka


def kafka_dir(layout: StackLayout) -> Path:
    return layout.data_dir / "kafka"


def kafka_bootstrap(layout: StackLayout) -> str:
    return f"127.0.0.1:{layout.port('kafka')}"


def kafka_server_properties(layout: StackLayout) -> dict[str, object]:
    """The broker+controller config of the single-node KRaft cluster."""
    port, cport = layout.port("kafka"), layout.port("kafka_controller")
    return {
        "process.roles": "broker,controller",
        "node.id": 1,
        "controller.quorum.voters": f"1@127.0.0.1:{cport}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": kafka_dir(layout) / "log",
        # A topic that does not exist is an error the tests can see, not a silent create.
        "auto.create.topics.enable": "false",
        "num.partitions": 1,
        "default.replication.factor": 1,
        "min.insync.replicas": 1,
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 4,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "transaction.state.log.num.partitions": 4,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "group.initial.rebalance.delay.ms": 0,
        # Small: two cores, a few MB of test data.
        "num.network.threads": 2,
        "num.io.threads": 2,
        "background.threads": 2,
        "num.recovery.threads.per.data.dir": 1,
        "num.replica.fetchers": 1,
        "log.cleaner.threads": 1,
        "log.cleaner.dedupe.buffer.size": 8 * 1024 * 1024,
        "log.segment.bytes": 64 * 1024 * 1024,
        "log.retention.hours": 24,
        "log.retention.check.interval.ms": 60_000,
        "delete.topic.enable": "true",
    }


_KAFKA_LOG4J2 = """\
# Written by spotlake.localstack.jvm; Kafka logs to stdout, which the supervisor keeps.
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
"""


def kafka_cluster_id() -> str:
    """A Kafka ``Uuid`` in its base64url form, as ``StorageTool random-uuid`` prints it."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka avoids ids that look like a CLI flag
            return text


def kafka_ready(bootstrap: str, timeout: float = 2.0) -> bool:
    """Whether the broker answers a metadata request (not merely an open port)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(
        {
            "bootstrap.servers": bootstrap,
            "socket.connection.setup.timeout.ms": int(timeout * 1000),
            "log_level": 0,  # no "Connection refused" noise while the broker starts
        }
    )
    metadata = admin.list_topics(timeout=timeout)
    return bool(metadata.brokers)


def kafka_spec(layout: StackLayout) -> ServiceSpec:
    """A single-node KRaft Kafka (broker+controller) on 127.0.0.1."""
    home = kafka_dir(layout)
    config = home / "server.properties"
    log4j = home / "log4j2.properties"
    classpath = f"{layout.jars('kafka')}/*"
    java = java_bin()

    def prepare() -> None:
        resolve_jars(layout, "kafka")
        _write_if_changed(config, _properties(kafka_server_properties(layout)))
        _write_if_changed(log4j, _KAFKA_LOG4J2)
        if (home / "log" / "meta.properties").exists():
            return  # formatted already: formatting again would fail (or wipe the cluster id)
        done = subprocess.run(  # noqa: S603 - fixed argv
            [
                java, "-Xmx256m", f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath,
                "kafka.tools.StorageTool", "format", "--ignore-formatted",
                "-t", kafka_cluster_id(), "-c", str(config),
            ],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise StackError(
                f"formatting Kafka storage in {home / 'log'} failed (exit {done.returncode}):\n{tail}"
            )

    bootstrap = kafka_bootstrap(layout)
    return ServiceSpec(
        name="kafka",
        argv=[
            java,
            *_heap(layout, "SPOTLAKE_KAFKA_HEAP", "-Xms128m -Xmx384m"),
            "-XX:+UseSerialGC",
            "-XX:ReservedCodeCacheSize=64m",
            "-Djava.awt.headless=true",
            "-Dlog4j2.shutdownHookEnabled=false",  # keep logging through the shutdown
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={home / 'app-logs'}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(config),
        ],
        ports=[layout.port("kafka"), layout.port("kafka_controller")],
        ready=lambda: kafka_ready(bootstrap),
        cwd=home,
        prepare=prepare,
        ready_timeout=90.0,
        stop_timeout=30.0,
    )


# --------------------------------------------------------------------------- Livy


def livy_dir(layout: StackLayout, name: str) -> Path:
    return layout.data_dir / "livy" / name


def livy_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def livy_ready(port: int, timeout: float = 2.0) -> bool:
    """Whether ``GET /batches`` answers 200."""
    with urllib.request.urlopen(f"{livy_url(port)}/batches", timeout=timeout) as response:  # noqa: S310
        return response.status == 200


_LIVY_LOG4J = """\
# Written by spotlake.localstack.jvm: the Livy server (reload4j) logs to stderr.
log4j.rootCategory=INFO, console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.target=System.err
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n
log4j.logger.org.eclipse.jetty=WARN
log4j.logger.org.apache.hadoop=WARN
"""

# The Spark driver of each batch (Spark 3.5 reads log4j2.properties from SPARK_CONF_DIR).
_SPARK_LOG4J2 = """\
# Written by spotlake.localstack.jvm: what a Livy batch's log shows.
rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
logger.spark.name = org.apache.spark.SparkContext
logger.spark.level = info
logger.parquet.name = org.apache.parquet
logger.parquet.level = error
"""


def spark_python(layout: StackLayout) -> str:
    """The local clusters' Python: a virtualenv of the stack's interpreter with no package
    installed (not even pip), as bare as a cluster node's, so a job that runs locally got every
    package it imports through the published archive. Created on first use."""
    home = layout.root / "spark-python"
    python = home / "bin" / "python"
    if not python.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        done = subprocess.run([base, "-m", "venv", "--without-pip", "--clear", str(home)],  # noqa: S603
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise StackError(f"creating the local clusters' Python at {home} failed: {done.stderr.strip()}")
    return str(python)


LIVY_VERSION = "0.7.1-incubating"
REPL_SOURCES = ("jvm/livy-repl/src/main/java/org/apache/livy/repl/ReplDriver.java",
                "jvm/livy-repl/src/main/resources/spotlake_repl.py")


def build_livy_repl(layout: StackLayout) -> Path:
    """The jar of the local PySpark REPL driver that Livy starts for each interactive session
    (``jvm/livy-repl``: Livy's own REPL is not on Maven Central). Compiled with ``javac`` against the
    Livy and Spark jars when its sources changed; returns the jar."""
    out = layout.jars("livy-repl")
    jar = out / "spotlake-livy-repl.jar"
    sources = [layout.project / name for name in REPL_SOURCES]
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()
    stamp = out / _STAMP
    if jar.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return jar
    javac, jar_tool = shutil.which("javac"), shutil.which("jar")
    if not javac or not jar_tool:
        raise StackError("building the local Livy REPL needs a JDK (`javac`, `jar`). "
                         "Fix: apt-get install openjdk-17-jdk-headless")
    livy = layout.jars("livy")
    classpath = ":".join([f"{layout.spark_home}/jars/*", str(livy / f"livy-rsc-{LIVY_VERSION}.jar"),
                          str(livy / f"livy-api-{LIVY_VERSION}.jar")])
    build = out.parent / f".livy-repl-build-{uuid.uuid4().hex[:8]}"
    try:
        (build / "classes").mkdir(parents=True)
        done = subprocess.run([javac, "-nowarn", "--release", "17", "-cp", classpath, "-d",  # noqa: S603
                               str(build / "classes"), str(sources[0])],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise StackError(f"compiling the local Livy REPL failed: {(done.stderr or done.stdout).strip()[-2000:]}")
        shutil.copy(sources[1], build / "classes" / sources[1].name)
        done = subprocess.run([jar_tool, "cf", str(build / jar.name), "-C", str(build / "classes"), "."],  # noqa: S603
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise StackError(f"packaging the local Livy REPL failed: {done.stderr.strip()}")
        out.mkdir(parents=True, exist_ok=True)
        os.replace(build / jar.name, jar)
        stamp.write_text(digest + "\n")
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return jar


def livy_session_jars(layout: StackLayout) -> dict[str, str]:
    """``livy.conf`` settings that let the local Livy start interactive sessions: the RSC driver's
    jars (Livy's, from Maven Central) and the REPL driver's (:func:`build_livy_repl`)."""
    livy = layout.jars("livy")
    rsc = [livy / f"livy-rsc-{LIVY_VERSION}.jar", livy / f"livy-api-{LIVY_VERSION}.jar"]
    return {"livy.rsc.jars": ",".join(str(path) for path in rsc),
            "livy.repl.jars": str(layout.jars("livy-repl") / "spotlake-livy-repl.jar")}


def livy_spark_defaults(
    layout: StackLayout, name: str, master: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``spark-defaults.conf`` of every batch that Livy server ``name`` submits."""
    home = livy_dir(layout, name)
    platform = ":".join(str(path) for path in jar_files(layout, "spark"))
    bare = spark_python(layout)
    conf = {
        "spark.master": master,
        "spark.submit.deployMode": "client",
        # What EMR has on Spark's classpath (s3a); the jobs' own jars come with each batch.
        "spark.driver.extraClassPath": platform,
        "spark.executor.extraClassPath": platform,
        "spark.driver.memory": layout.setting("SPOTLAKE_SPARK_DRIVER_MEMORY", "768m"),
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.host": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # A Python with nothing installed, as on a cluster: the jobs' packages come with each batch.
        "spark.pyspark.python": bare,
        "spark.pyspark.driver.python": bare,
        # Small local jobs: a handful of partitions, not 200.
        "spark.sql.shuffle.partitions": "4",
        "spark.default.parallelism": "2",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.warehouse.dir": str(home / "warehouse"),
        "spark.local.dir": str(home / "spark-local"),
        "spark.eventLog.enabled": "false",
        # Checkpoints and file sinks on the local S3. The configuration writes s3:// as on EMR (where
        # it is EMRFS); here S3A serves both s3:// and s3a://. The Iceberg lake uses S3FileIO, which
        # finds the local S3 through AWS_ENDPOINT_URL_S3.
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.endpoint": s3_endpoint(layout),
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
        "spark.hadoop.fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        "spark.hadoop.fs.s3a.access.key": aws_env(layout)["AWS_ACCESS_KEY_ID"],
        "spark.hadoop.fs.s3a.secret.key": aws_env(layout)["AWS_SECRET_ACCESS_KEY"],
        "spark.hadoop.fs.s3a.change.detection.mode": "none",
        "spark.hadoop.fs.s3a.committer.magic.enabled": "false",
        # MERGE INTO on the lake's Iceberg tables needs Iceberg's SQL extensions (a static setting).
        "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
    }
    conf.update(extra or {})
    return conf


def livy_conf(
    layout: StackLayout, name: str, port: int, master: str, extra: Mapping[str, str]
) -> dict[str, str]:
    """``livy.conf`` of Livy server ``name``."""
    whitelist = dict.fromkeys(str(path) for path in (layout.project, layout.root))
    conf = {
        "livy.server.host": "127.0.0.1",
        "livy.server.port": str(port),
        "livy.spark.master": master,
        "livy.spark.deploy-mode": "client",
        "livy.server.spark-home": str(layout.spark_home),
        "livy.spark.scala-version": "2.12",
        "livy.file.local-dir-whitelist": ",".join(whitelist),
        # Airflow's LivyHook does not know the "recovering" state.
        "livy.server.recovery.mode": "off",
        "livy.cache-log.size": "1000",
        "livy.server.session.state-retain.sec": "3600s",
        # Interactive sessions (warm extraction): Livy's RSC driver and the local REPL driver; idle
        # sessions live 2 hours, as spotlake's EMR clusters configure it.
        **livy_session_jars(layout),
        "livy.server.session.timeout": "2h",
    }
    conf.update(extra)
    return conf


def livy_spec(
    layout: StackLayout,
    name: str,
    port: int,
    master: str = "local[2]",
    extra_conf: dict[str, str] | None = None,
) -> ServiceSpec:
    """One Apache Livy server ``livy-<name>`` on 127.0.0.1:``port`` running batches locally.

    ``extra_conf`` keys that start with ``livy.`` go to ``livy.conf``; all others (``spark.*``,
    e.g. ``spark.hadoop.fs.s3a.endpoint``) to the ``spark-defaults.conf`` of its batches.
    """
    extra = dict(extra_conf or {})
    livy_extra = {key: value for key, value in extra.items() if key.startswith("livy.")}
    spark_extra = {key: value for key, value in extra.items() if not key.startswith("livy.")}
    home = livy_dir(layout, name)
    conf_dir = home / "conf"
    spark_home = layout.spark_home

    def prepare() -> None:
        resolve_jars(layout, "livy")
        resolve_jars(layout, "spark")
        build_livy_repl(layout)
        for sub in ("logs", "warehouse", "spark-local"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        _write_if_changed(
            conf_dir / "livy.conf", _properties(livy_conf(layout, name, port, master, livy_extra))
        )
        _write_if_changed(conf_dir / "log4j.properties", _LIVY_LOG4J)
        defaults = livy_spark_defaults(layout, name, master, spark_extra)
        _write_if_changed(
            conf_dir / "spark-defaults.conf", "".join(f"{k} {v}\n" for k, v in defaults.items())
        )
        _write_if_changed(conf_dir / "log4j2.properties", _SPARK_LOG4J2)

    env = {
        "SPARK_HOME": str(spark_home),
        # spark-submit of each batch reads spark-defaults.conf and log4j2.properties here.
        "SPARK_CONF_DIR": str(conf_dir),
        "LIVY_CONF_DIR": str(conf_dir),
        "LIVY_LOG_DIR": str(home / "logs"),  # Livy 0.7 fails to start without it (or LIVY_HOME)
        "PYSPARK_PYTHON": spark_python(layout),
        "PYSPARK_DRIVER_PYTHON": spark_python(layout),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOCAL_HOSTNAME": "localhost",
        # boto3 in the jobs (Secrets Manager) talks to moto server, as on EMR to AWS.
        **aws_env(layout),
    }
    return ServiceSpec(
        name=f"livy-{name}",
        argv=[
            java_bin(),
            *_heap(layout, "SPOTLAKE_LIVY_HEAP", "-Xms64m -Xmx256m"),
            "-XX:+UseSerialGC",
            "-XX:ReservedCodeCacheSize=48m",
            *LIVY_JAVA17_FLAGS,
            # Also as system properties: should livy.conf not be found, Livy still binds loopback.
            "-Dlivy.server.host=127.0.0.1",
            f"-Dlivy.server.port={port}",
            "-cp",
            f"{layout.jars('livy')}/*:{conf_dir}",
            "org.apache.livy.server.LivyServer",
        ],
        ports=[port],
        ready=lambda: livy_ready(port),
        env=env,
        cwd=home,
        prepare=prepare,
        ready_timeout=90.0,
        stop_timeout=30.0,
    )


# --------------------------------------------------------------------------- S3


def s3_dir(layout: StackLayout) -> Path:
    return layout.data_dir / "s3"


def s3_ready(port: int, timeout: float = 2.0) -> bool:
    """Whether the server answers S3 requests (an unsigned one is refused with 403)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=timeout) as response:  # noqa: S310
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500


def s3_spec(layout: StackLayout) -> ServiceSpec:
    """S3Proxy on 127.0.0.1 serving buckets from ``.stack/data/s3/objects`` (one folder per bucket)."""
    home = s3_dir(layout)
    conf = home / "s3proxy.conf"
    logback = layout.project / "jvm" / "s3" / "logback.xml"  # warnings only (S3Proxy's default is DEBUG)
    port = layout.port("s3")
    keys = aws_env(layout)

    def prepare() -> None:
        resolve_jars(layout, "s3")
        (home / "objects").mkdir(parents=True, exist_ok=True)
        _write_if_changed(conf, _properties({
            "s3proxy.endpoint": f"http://127.0.0.1:{port}",
            "s3proxy.authorization": "aws-v2-or-v4",
            "s3proxy.identity": keys["AWS_ACCESS_KEY_ID"],
            "s3proxy.credential": keys["AWS_SECRET_ACCESS_KEY"],
            "jclouds.provider": "filesystem-nio2",
            "jclouds.identity": keys["AWS_ACCESS_KEY_ID"],
            "jclouds.credential": keys["AWS_SECRET_ACCESS_KEY"],
            "jclouds.filesystem.basedir": home / "objects",
        }))

    return ServiceSpec(
        name="s3",
        argv=[
            java_bin(),
            *_heap(layout, "SPOTLAKE_S3_HEAP", "-Xms32m -Xmx192m"),
            "-XX:+UseSerialGC",
            "-XX:ReservedCodeCacheSize=48m",
            f"-Dlogback.configurationFile={logback}",
            "-cp",
            f"{layout.jars('s3')}/*",
            "org.gaul.s3proxy.Main",
            "--properties",
            str(conf),
        ],
        ports=[port],
        ready=lambda: s3_ready(port),
        cwd=home,
        prepare=prepare,
        ready_timeout=60.0,
        stop_timeout=20.0,
    )

"""The local stack's Apache Livy servers, one per local cluster, and their PySpark REPL.

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
:class:`~spotlake_dev.localstack.process.Supervisor`; their ``prepare`` resolves the jars
and renders the config files, so starting a spec is all a caller does.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path

from hooks.livy import probe_livy
from spotlake.errors import StackError
from spotlake.maven import STAMP, jar_files, resolve_jars
from spotlake.stack import StackLayout, aws_env, livy_url, s3_endpoint
from spotlake_dev.localstack.java import LIVY_JAVA17_FLAGS, heap_args, java_bin, properties_text, write_if_changed
from spotlake_dev.localstack.process import ServiceSpec


def livy_dir(layout: StackLayout, name: str) -> Path:
    return layout.data_dir / "livy" / name


def livy_ready(port: int, timeout: float = 2.0) -> bool:
    """Whether ``GET /batches`` answers 200 (the fleet's health probe)."""
    return probe_livy(livy_url(port), timeout) is None


_LIVY_LOG4J = """\
# Written by spotlake_dev.localstack.livy_server: the Livy server (reload4j) logs to stderr.
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
# Written by spotlake_dev.localstack.livy_server: what a Livy batch's log shows.
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
        done = subprocess.run(
            [base, "-m", "venv", "--without-pip", "--clear", str(home)], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise StackError(f"creating the local clusters' Python at {home} failed: {done.stderr.strip()}")
    return str(python)


LIVY_VERSION = "0.7.1-incubating"
REPL_SOURCES = (
    "jvm/livy-repl/src/main/java/org/apache/livy/repl/ReplDriver.java",
    "jvm/livy-repl/src/main/resources/spotlake_repl.py",
)


def build_livy_repl(layout: StackLayout) -> Path:
    """The jar of the local PySpark REPL driver that Livy starts for each interactive session
    (``jvm/livy-repl``: Livy's own REPL is not on Maven Central). Compiled with ``javac`` against the
    Livy and Spark jars when its sources changed; returns the jar."""
    out = layout.jars("livy-repl")
    jar = out / "spotlake-livy-repl.jar"
    sources = [layout.project / name for name in REPL_SOURCES]
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()
    stamp = out / STAMP
    if jar.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return jar
    javac, jar_tool = shutil.which("javac"), shutil.which("jar")
    if not javac or not jar_tool:
        raise StackError(
            "building the local Livy REPL needs a JDK (`javac`, `jar`). Fix: apt-get install openjdk-17-jdk-headless"
        )
    livy = layout.jars("livy")
    classpath = ":".join(
        [f"{layout.spark_home}/jars/*", str(livy / f"livy-rsc-{LIVY_VERSION}.jar"), str(livy / f"livy-api-{LIVY_VERSION}.jar")]
    )
    build = out.parent / f".livy-repl-build-{uuid.uuid4().hex[:8]}"
    try:
        (build / "classes").mkdir(parents=True)
        done = subprocess.run(
            [javac, "-nowarn", "--release", "17", "-cp", classpath, "-d", str(build / "classes"), str(sources[0])],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise StackError(f"compiling the local Livy REPL failed: {(done.stderr or done.stdout).strip()[-2000:]}")
        shutil.copy(sources[1], build / "classes" / sources[1].name)
        done = subprocess.run(
            [jar_tool, "cf", str(build / jar.name), "-C", str(build / "classes"), "."],
            capture_output=True,
            text=True,
            timeout=120,
        )
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
    return {
        "livy.rsc.jars": ",".join(str(path) for path in rsc),
        "livy.repl.jars": str(layout.jars("livy-repl") / "spotlake-livy-repl.jar"),
    }


def livy_spark_defaults(layout: StackLayout, name: str, master: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
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


def livy_conf(layout: StackLayout, name: str, port: int, master: str, extra: Mapping[str, str]) -> dict[str, str]:
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
        write_if_changed(conf_dir / "livy.conf", properties_text(livy_conf(layout, name, port, master, livy_extra)))
        write_if_changed(conf_dir / "log4j.properties", _LIVY_LOG4J)
        defaults = livy_spark_defaults(layout, name, master, spark_extra)
        write_if_changed(conf_dir / "spark-defaults.conf", "".join(f"{k} {v}\n" for k, v in defaults.items()))
        write_if_changed(conf_dir / "log4j2.properties", _SPARK_LOG4J2)

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
            *heap_args(layout, "SPOTLAKE_LIVY_HEAP", "-Xms64m -Xmx256m"),
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

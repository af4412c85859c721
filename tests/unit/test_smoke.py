"""The AWS smoke test (python -m spotlake_dev.smoke) without AWS: its dry run against moto (in this
process and as a server on 127.0.0.1), an invalid request caught naming its field, the cost
estimate's arithmetic, and the teardown after a failed step."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

# Imported here, not first inside a test: Airflow sets up its logging on import, and a handler bound to
# one test's captured stdout would outlive it.
import operators.extraction  # noqa: F401
from spotlake import job_dependencies, pools, streaming
from spotlake.providers.base import ClusterHealth, LaunchedCluster
from spotlake.providers.emr import EmrProvider
from spotlake_dev import smoke
from tests.support.emr_network import moto_network, pools_file_in

REGION = "us-east-1"
ARTIFACTS = "s3://spotlake-artifacts/spotlake/artifacts"  # where config/pools.yaml's bootstrap action is published


@pytest.fixture(autouse=True)
def _emr_provider(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPOTLAKE_PROVIDER", "emr")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("SPOTLAKE_ARTIFACTS", raising=False)
    monkeypatch.delenv("SPOTLAKE_REGISTRY_PREFIX", raising=False)
    monkeypatch.setenv("SPOTLAKE_POOLS", str(pools.DEFAULT_POOLS))  # restored after each test; in_a_network sets it


def in_a_network(folder: Path) -> None:
    """Inside ``mock_aws``: the project's EMR pools in a VPC of moto's (SPOTLAKE_POOLS), as a real
    run finds the pools' subnets in the account."""
    os.environ["SPOTLAKE_POOLS"] = str(pools_file_in(moto_network(REGION), folder))


def publish_dependencies(s3: Any, tmp_path: Path) -> None:
    """Fake job dependencies (and the bootstrap script) published under ARTIFACTS."""
    bucket = ARTIFACTS.removeprefix("s3://").split("/", 1)[0]
    s3.create_bucket(Bucket=bucket)
    jar = tmp_path / "jobs.jar"
    jar.write_bytes(b"not a real jar")
    archive = tmp_path / "pydeps.tar.gz"
    archive.write_bytes(b"not a real archive")
    job_dependencies.publish(ARTIFACTS, [jar], archive, s3=s3)


# ---------------------------------------------------------------- the dry run


def test_the_documented_dry_run_passes_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/deploying-to-aws.md's dry run, as written: every request is built and validated and
    moto (inside the process) answers; the artifacts bucket is empty there, so it warns."""
    code = smoke.main(["--dry-run", "--pipeline", "shop_orders", "--artifacts", ARTIFACTS])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Cost estimate for pool small" in out
    for request in (
        "dynamodb CreateTable",
        "emr RunJobFlow",
        "emr DescribeCluster",
        "emr TerminateJobFlows",
        "dynamodb DeleteTable",
    ):
        assert f"sent: {request}" in out, request
    assert "held: s3 PutObject" in out  # the job code is not uploaded by a dry run
    assert "not sent: POST http://" in out and "not sent: DELETE http://" in out  # Livy: printed only
    assert "the job document (--job):" in out and 'kind: "window"' in out and 'stream: "clicks"' in out
    assert "placeholder" in out  # no job dependencies in this process's moto: not a warning
    assert "WARNING" not in out
    assert "Verdict: DRY RUN PASSED: every request validated\n" in out + "\n"


@pytest.fixture
def moto_server() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_the_dry_run_against_a_moto_server_sends_the_aws_requests_and_removes_what_it_made(
    moto_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clients = {name: boto3.client(name, region_name=REGION, endpoint_url=moto_server) for name in ("s3", "dynamodb", "emr")}
    publish_dependencies(clients["s3"], tmp_path)
    code = smoke.main(
        [
            "--dry-run",
            "--endpoint-url",
            moto_server,
            "--pipeline",
            "shop_customers",
            "--artifacts",
            ARTIFACTS,
            "--region",
            REGION,
            "--prefix",
            "spotlake-smoke-abc123",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "WARNING" not in out, out  # dependencies and the bootstrap script are published there
    assert f"the moto server at {moto_server}" in out
    assert "1 jar(s) and pydeps.tar.gz" in out and "placeholder" not in out
    # The server saw them: the tables are gone again, the cluster was launched and terminated.
    assert not [t for t in clients["dynamodb"].list_tables()["TableNames"] if t.startswith("spotlake-smoke-abc123")]
    (cluster,) = clients["emr"].list_clusters()["Clusters"]
    assert cluster["Name"] == "spotlake-small_smoke_abc123-0001"
    assert cluster["Status"]["State"] == "TERMINATED"
    tags = {t["Key"]: t["Value"] for t in clients["emr"].describe_cluster(ClusterId=cluster["Id"])["Cluster"]["Tags"]}
    assert tags["spotlake:terminated-by"] == "smoke-test" and tags["spotlake-smoke"] == "spotlake-smoke-abc123"
    assert 'jars: ["s3://spotlake-artifacts/spotlake/artifacts/deps/' in out  # the published manifest's jars


@pytest.mark.parametrize(
    ("spoil", "field"),
    [
        (
            lambda request: request["Instances"]["InstanceFleets"][0].update(TargetOnDemandCapacity="1"),
            "Instances.InstanceFleets[0].TargetOnDemandCapacity",
        ),
        (
            lambda request: request.update(
                Tags=[t for t in request["Tags"] if t["Key"] != "for-use-with-amazon-emr-managed-policies"]
            ),
            "for-use-with-amazon-emr-managed-policies",
        ),
    ],
    ids=["botocore-type", "emr-rule"],
)
def test_an_invalid_request_fails_the_dry_run_naming_the_field(
    spoil: Any, field: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    original = EmrProvider.job_flow_request

    def spoiled(self: EmrProvider, *args: Any, **kwargs: Any) -> dict[str, Any]:
        request = original(self, *args, **kwargs)
        spoil(request)
        return request

    monkeypatch.setattr(EmrProvider, "job_flow_request", spoiled)
    code = smoke.main(["--dry-run", "--no-stream", "--artifacts", ARTIFACTS])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "Verdict: FAILED at step 3 (Launch one cluster of pool small on EMR)" in out
    assert field in out.split("Verdict:")[1]
    assert "sent: emr RunJobFlow" not in out  # nothing was launched
    assert "Delete the state tables" in out and "deleted" in out  # the teardown ran


# ---------------------------------------------------------------- the cost estimate

PRICES = {"a1.large": (1.0, 0.25), "b1.large": (2.0, 0.5), "c1.large": (0.4, 0.1), "d1.large": (0.3, 0.05)}


def fleet(role: str, capacity: int, *types: tuple[str, int]) -> pools.InstanceFleet:
    return pools.InstanceFleet(
        role=role,
        capacity=capacity,
        instance_types=tuple(pools.InstanceType(t, weight=w) for t, w in types),
        spot_timeout=timedelta(minutes=10) if role == "TASK" else None,
    )


def pool(task: pools.InstanceFleet, name: str = "tiny") -> pools.PoolConfig:
    shape = pools.EmrShape(
        release_label="emr-7.5.0",
        subnet_ids=("subnet-01",),
        log_uri="s3://logs/",
        service_role="EMR_DefaultRole_V2",
        job_flow_role="EMR_EC2_DefaultRole",
        idle_timeout=timedelta(hours=2),
        master=fleet("MASTER", 1, ("a1.large", 1)),
        core=fleet("CORE", 2, ("b1.large", 1)),
        task=task,
    )
    return pools.PoolConfig(
        name=name,
        max_age=timedelta(hours=6),
        drain_deadline=timedelta(minutes=30),
        health_check_interval=timedelta(seconds=15),
        failure_threshold=3,
        launch_timeout=timedelta(minutes=30),
        emr=shape,
    )


def test_the_cost_estimate_counts_instances_by_weight_and_prices_them() -> None:
    task = fleet("TASK", 5, ("c1.large", 2), ("d1.large", 1))
    cost = smoke.estimate(pool(task), PRICES, minutes={"launch": 30, "run": 30})
    master, core, spot = cost.fleets
    assert (master.low, master.high, master.instances) == (1.25, 1.25, (1, 1))
    assert (core.low, core.high, core.instances) == (5.0, 5.0, (2, 2))
    # 5 units: 3 instances of weight 2 (3 x 0.5) or 5 of weight 1 (5 x 0.35)
    assert spot.instances == (3, 5) and spot.low == pytest.approx(1.5) and spot.high == pytest.approx(1.75)
    assert cost.hourly == pytest.approx((7.75, 8.0))
    assert cost.hours == 1.0 and cost.total == pytest.approx((7.75, 8.0))
    assert cost.idle_timeout == timedelta(minutes=30)  # the smoke cluster's backstop, not the pool's 2 h
    text = "\n".join(cost.lines("eu-west-1"))
    assert "an ESTIMATE" in text and "not fetched" in text and "prices in eu-west-1 differ" in text
    assert "$7.75-$8.00 per hour" in text and "this run: about $7.75-$8.00" in text
    assert "3-5 instances" in text and "spot; at on-demand prices" in text
    assert "$4.00 more at most" in text  # 30 min idle at the upper bound


def test_an_unknown_instance_type_is_reported_not_guessed() -> None:
    partly = smoke.estimate(pool(fleet("TASK", 2, ("c1.large", 1), ("x9.huge", 1))), PRICES)
    assert partly.unknown == ("x9.huge",) and partly.complete
    assert "no price for x9.huge (left out of the estimate)" in "\n".join(partly.lines(REGION))
    assert "unknown instance types (not in the price table): x9.huge" in "\n".join(partly.lines(REGION))
    unpriced = smoke.estimate(pool(fleet("TASK", 2, ("x9.huge", 1)), name="unpriced"), PRICES)
    assert not unpriced.complete and unpriced.total is None
    assert "cannot be estimated: no price for any instance type of the TASK fleet" in "\n".join(unpriced.lines(None))
    both = pools.PoolsConfig(
        Path("pools.yaml"),
        "emr",
        (pool(fleet("TASK", 2, ("x9.huge", 1)), name="unpriced"), pool(fleet("TASK", 2, ("c1.large", 1)), name="priced")),
    )
    assert smoke.cheapest_pool(both, PRICES).name == "priced"


def test_every_instance_type_of_the_repository_pools_has_a_price_and_small_is_cheapest() -> None:
    config = pools.load(provider="emr")
    for each in config.pools:
        assert smoke.estimate(each).unknown == (), each.name
    assert smoke.cheapest_pool(config).name == "small"


# ---------------------------------------------------------------- the teardown


class FakeProvider:
    """An EMR stand-in: launches at once, healthy, records terminations."""

    name = "emr"

    def __init__(self) -> None:
        self.terminated: list[tuple[str, str, str]] = []

    def launch(self, pool: pools.PoolConfig, cluster_id: str) -> LaunchedCluster:
        return LaunchedCluster(cluster_id, provider_id="j-FAKE")

    def health(self, cluster: Any) -> ClusterHealth:
        return ClusterHealth.ok("http://127.0.0.1:9")

    def terminate(self, cluster: Any, reason: str) -> None:
        self.terminated.append((cluster.cluster_id, cluster.provider_id, reason))


class RefusingLivy:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def post_batch(self, **kwargs: Any) -> int:
        raise RuntimeError("Livy answered HTTP 500")

    def get_batch_state(self, session_id: int | str, retry_args: dict[str, Any] | None = None) -> str:
        return "dead"


def test_a_failed_step_still_terminates_the_cluster_and_deletes_the_tables(tmp_path: Path) -> None:
    lines: list[str] = []
    with mock_aws():
        in_a_network(tmp_path)
        s3 = boto3.client("s3", region_name=REGION)
        publish_dependencies(s3, tmp_path)
        provider = FakeProvider()
        options = smoke.Options(stream=None, region=REGION, prefix="spotlake-smoke-fa11ed", artifacts=ARTIFACTS, yes=True)
        run = smoke.build(options, say=lines.append, provider=provider, livy=RefusingLivy)
        run.sleep = lambda seconds: None
        assert run.preflight() == []
        code = run.run()
        remaining = boto3.client("dynamodb", region_name=REGION).list_tables()["TableNames"]
    out = "\n".join(lines)
    assert code == 1, out
    assert "Verdict: FAILED at step 5 (Extract one window of shop_customers" in out  # the first pipeline
    assert "HTTP 500" in out
    assert provider.terminated == [("small_smoke_fa11ed-0001", "j-FAKE", "smoke-test")]
    assert not [t for t in remaining if t.startswith("spotlake-smoke-fa11ed")]
    assert "LEFT BEHIND" not in out


def test_a_prefix_whose_tables_exist_is_refused_and_left_alone() -> None:
    lines: list[str] = []
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        from spotlake.aws_setup import ensure_tables, table_keys

        ensure_tables(client, "spotlake")
        options = smoke.Options(dry_run=True, stream=None, region=REGION, prefix="spotlake", artifacts=ARTIFACTS)
        code = smoke.build(options, say=lines.append).run()
        remaining = set(client.list_tables()["TableNames"])
    out = "\n".join(lines)
    assert code == 1 and "already exist" in out, out
    assert remaining == set(table_keys("spotlake")) and "spotlake-alerts" in remaining
    assert "DeleteTable" not in out


def test_a_real_run_needs_s3_artifacts_and_the_kafka_brokers(tmp_path: Path) -> None:
    with mock_aws():
        run = smoke.build(
            smoke.Options(region=REGION, artifacts=str(tmp_path)),
            say=lambda line: None,
            provider=FakeProvider(),
            livy=RefusingLivy,
        )
        problems = run.preflight()
    assert any("not on S3" in p for p in problems) and any("--kafka-bootstrap" in p for p in problems)


class CommittingLivy:
    """Livy whose batches "run" the extraction at once: the window is committed in the lake state
    and its two Glue tables get a file each, as the Spark job would leave them."""

    submitted: list[dict[str, Any]] = []

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def post_batch(self, **kwargs: Any) -> int:
        import base64
        import json

        from spark_jobs.common.lake_state import LakeState, record_item

        document = json.loads(base64.urlsafe_b64decode(kwargs["args"][1]))
        CommittingLivy.submitted.append(document)
        lake_state = LakeState(boto3.client("dynamodb", region_name=REGION), document["registry"]["prefix"])
        label = document["job_key"].rsplit("#", 1)[1]
        record = lake_state.window(document["pipeline"], label)
        record.state, record.run_id, record.rows_read, record.rows_written, record.chunks = (
            "COMMITTED",
            document["run_id"],
            3,
            3,
            1,
        )
        lake_state.client.put_item(TableName=lake_state.table, Item=record_item(record))
        glue, s3 = boto3.client("glue", region_name=REGION), boto3.client("s3", region_name=REGION)
        lake = document["lake"]
        for table in (lake["current"], lake["changes"]):
            location = f"{lake['warehouse']}/{lake['namespace']}.db/{table}"
            glue.create_table(
                DatabaseName=lake["namespace"], TableInput={"Name": table, "StorageDescriptor": {"Location": location}}
            )
            s3.put_object(Bucket="spotlake-lake", Key=f"warehouse/{lake['namespace']}.db/{table}/data/1.parquet", Body=b"rows")
        return 7

    def probe(self, batch_id: int) -> smoke.Probe:
        return smoke.Probe("success")

    def error_line(self, batch_id: int) -> str:
        return ""


def test_a_passing_run_checks_the_window_and_removes_its_lake_tables(tmp_path: Path) -> None:
    lines: list[str] = []
    with mock_aws():
        in_a_network(tmp_path)
        s3 = boto3.client("s3", region_name=REGION)
        publish_dependencies(s3, tmp_path)
        s3.create_bucket(Bucket="spotlake-lake")
        glue = boto3.client("glue", region_name=REGION)
        glue.create_database(DatabaseInput={"Name": "shop"})
        provider = FakeProvider()
        options = smoke.Options(
            pipeline="shop_orders", stream=None, region=REGION, prefix="spotlake-smoke-900d00", artifacts=ARTIFACTS, yes=True
        )
        run = smoke.build(options, say=lines.append, provider=provider, livy=CommittingLivy)
        glue_lake = dataclasses.replace(run.pipelines.lake, type="glue", secret_id=None)
        run.pipelines = dataclasses.replace(run.pipelines, lake=glue_lake)
        run.sleep = lambda seconds: None
        code = run.run()
        tables = [t["Name"] for t in glue.get_tables(DatabaseName="shop")["TableList"]]
        files = s3.list_objects_v2(Bucket="spotlake-lake").get("KeyCount", 0)
    out = "\n".join(lines)
    assert code == 0, out
    (document,) = CommittingLivy.submitted
    assert document["pipeline"] == "shop_orders_smoke_900d00" and document["kind"] == "window"
    assert document["lake"]["type"] == "glue" and document["registry"]["prefix"] == "spotlake-smoke-900d00"
    assert set(document["window"]) == {"start", "end", "read_from"}
    assert "COMMITTED, 3 rows read, 3 written in 1 chunk(s)" in out
    assert "lake: 3 rows of window" in out  # pyiceberg finds no such table here: what the job recorded
    assert "the source count was skipped" in out  # no source database here
    assert "shop.shop_orders_smoke_900d00: dropped from the Glue catalog" in out
    assert tables == [] and files == 0
    assert provider.terminated == [("small_smoke_900d00-0001", "j-FAKE", "smoke-test")]
    assert "Verdict: PASSED, with warnings: step 6: the source count was skipped" in out


class SlowProvider(FakeProvider):
    """EMR that takes a few health checks to come up."""

    def __init__(self, checks: int) -> None:
        super().__init__()
        self.checks = checks

    def health(self, cluster: Any) -> ClusterHealth:
        self.checks -= 1
        return ClusterHealth.booting("EMR cluster j-FAKE is STARTING") if self.checks > 0 else super().health(cluster)


def test_the_wait_for_ready_polls_the_fleet_and_says_how_it_goes(tmp_path: Path) -> None:
    lines: list[str] = []
    now = [0.0]

    def clock() -> float:
        now[0] += 30.0
        return now[0]

    with mock_aws():
        in_a_network(tmp_path)
        publish_dependencies(boto3.client("s3", region_name=REGION), tmp_path)
        options = smoke.Options(stream=None, region=REGION, prefix="spotlake-smoke-510e00", artifacts=ARTIFACTS)
        run = smoke.build(options, say=lines.append, provider=SlowProvider(checks=8), livy=RefusingLivy)
        run.sleep, run.clock = (lambda seconds: None), clock
        run.run()
    out = "\n".join(lines)
    assert "cluster small_smoke_510e00-0001: EMR j-FAKE, LAUNCHING" in out
    assert "still starting after" in out and "EMR cluster j-FAKE is STARTING" in out
    assert "READY at http://127.0.0.1:9 after" in out
    assert "Verdict: FAILED at step 5" in out  # the window's batch was refused: the run went that far


class StreamingLivy(CommittingLivy):
    """The window commits at once; the stream batch runs until it is deleted, and its micro-batches
    land in the sink (FakeSink)."""

    stream_documents: list[dict[str, Any]] = []
    deleted: list[int] = []

    def post_batch(self, **kwargs: Any) -> int:
        import base64
        import json

        if "stream" not in kwargs["name"]:
            return super().post_batch(**kwargs)
        StreamingLivy.stream_documents.append(json.loads(base64.urlsafe_b64decode(kwargs["args"][1])))
        return 8

    def probe(self, batch_id: int) -> smoke.Probe:
        if batch_id == 8:
            return smoke.Probe("killed" if 8 in StreamingLivy.deleted else "running")
        return super().probe(batch_id)

    def delete(self, batch_id: int) -> None:
        StreamingLivy.deleted.append(batch_id)


class FakeSink:
    """The sink database of the smoke schema: migrations, progress, a count, the schema's drop."""

    def __init__(self) -> None:
        self.executed: list[str] = []

    def ensure_schema(self) -> list[str]:
        return ["0001_click_sink", "0002_final_before"]

    def progress(self, query_name: str) -> Any:
        from spotlake.stream_supervisor import Progress

        return Progress(4, "2026-12-05T12:00:00.000", "2026-12-05T11:59:00.000", {"clicks": {"0": 120}})

    def connect(self) -> Any:
        sink = self

        class Cursor:
            def execute(self, sql: str) -> None:
                sink.executed.append(sql)

            def fetchone(self) -> tuple[int]:
                return (12,)

        class Connection:
            def cursor(self) -> Cursor:
                return Cursor()

            def rollback(self) -> None: ...

            def commit(self) -> None: ...

            def close(self) -> None: ...

        return Connection()


def test_the_stream_runs_in_its_own_schema_and_locations_and_is_stopped_and_removed(tmp_path: Path) -> None:
    lines: list[str] = []
    sink = FakeSink()
    with mock_aws():
        in_a_network(tmp_path)
        s3 = boto3.client("s3", region_name=REGION)
        publish_dependencies(s3, tmp_path)
        s3.create_bucket(Bucket="spotlake-lake")
        s3.create_bucket(Bucket="spotlake-checkpoints")
        s3.put_object(Bucket="spotlake-checkpoints", Key="streams/clicks-smoke-57ea00/commits/0", Body=b"v1")
        s3.put_object(Bucket="spotlake-checkpoints", Key="streams/clicks/commits/0", Body=b"the real stream's")
        boto3.client("glue", region_name=REGION).create_database(DatabaseInput={"Name": "shop"})
        options = smoke.Options(
            pipeline="shop_orders",
            region=REGION,
            prefix="spotlake-smoke-57ea00",
            artifacts=ARTIFACTS,
            kafka_bootstrap="b-1.msk:9092",
            yes=True,
            stream_seconds=20,
        )
        run = smoke.build(options, say=lines.append, provider=FakeProvider(), livy=StreamingLivy)
        run.pipelines = dataclasses.replace(
            run.pipelines, lake=dataclasses.replace(run.pipelines.lake, type="glue", secret_id=None)
        )
        run._sink = lambda: sink  # type: ignore[method-assign]
        now = [0.0]

        def sleep(seconds: float) -> None:
            now[0] += seconds

        run.sleep, run.clock = sleep, lambda: now[0]
        assert run.preflight() == []
        code = run.run()
        left = [o["Key"] for o in s3.list_objects_v2(Bucket="spotlake-checkpoints").get("Contents", [])]
    out = "\n".join(lines)
    assert code == 0, out
    assert "Verdict: PASSED, with warnings: step 6: the source count was skipped" in out  # no source here
    assert "Run stream clicks for 20 s" in out and "batch 8 killed" in out
    (document,) = StreamingLivy.stream_documents
    assert document["sink"]["schema"] == "clickstream_smoke_57ea00"
    configured = streaming.load().get("clicks")
    assert document["checkpoint"] == f"{configured.checkpoint}-smoke-57ea00"
    assert document["lake"]["events"] == f"{configured.lake.events}_smoke_57ea00"
    assert document["lake"]["dead_letters"] == f"{configured.lake.dead_letters}_smoke_57ea00"
    assert document["lake"]["namespace"] == configured.lake.namespace
    assert document["source"]["bootstrap_servers"] == "b-1.msk:9092"
    assert StreamingLivy.deleted == [8]
    assert "clickstream_smoke_57ea00: 2 migration(s) applied" in out
    assert "micro-batch 4 committed at 2026-12-05T12:00:00.000; 12 rows in click_aggregates" in out
    assert left == ["streams/clicks/commits/0"]  # the smoke checkpoint went, the real stream's stayed
    assert sink.executed[-1] == 'DROP SCHEMA IF EXISTS "clickstream_smoke_57ea00" CASCADE'

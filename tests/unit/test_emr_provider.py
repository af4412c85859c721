"""The EMR provider against moto's in-process EMR.

moto stores what RunJobFlow sends about applications, tags, roles and the log URI,
but neither instance fleets nor the auto-termination policy (ListInstanceFleets and
GetAutoTerminationPolicy are not implemented), so the request itself is captured as
botocore sends it (after botocore validated it against the EMR API model) and read
back where moto can. moto never moves a cluster to a failure state by itself, and
its StateChangeReason has no Code: tests set state, message and code on moto's
backend, as moto's own tests do.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from airflow.providers.amazon.aws.hooks.emr import EmrHook
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.emr import models as emr_models

from spotlake import pools
from spotlake.aws_setup import ensure_livy_groups
from spotlake.fleet import Fleet
from spotlake.providers.base import Cause, LaunchFailed, Liveness, ProviderError
from spotlake.providers.emr import TAG_CLUSTER, TAG_TERMINATED_BY, EmrProvider, rule_set
from spotlake.registry import Cluster, ClusterState, JobState, Registry
from tests.support.emr_network import Network, in_network, moto_network

REGION = "us-east-1"
LAUNCHED_AT = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)


class Throttling:
    """A boto3 EMR client whose chosen calls first fail with ThrottlingException.

    ``lose_response``: the call reaches EMR (the cluster is created) but its answer is
    lost as a throttling error, the worst case for a retried RunJobFlow.
    """

    def __init__(
        self, client: Any, failures: dict[str, int], lose_response: bool = False, code: str = "ThrottlingException"
    ) -> None:
        self.client = client
        self.failures = dict(failures)
        self.lose_response = lose_response
        self.code = code
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.client, name)
        if name not in self.failures:
            return real

        def call(**kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            if self.failures[name] > 0:
                self.failures[name] -= 1
                if self.lose_response:
                    real(**kwargs)
                raise ClientError({"Error": {"Code": self.code, "Message": "Rate exceeded"}}, name)
            return real(**kwargs)

        return call


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def sleeps() -> list[float]:
    return []


def emr_hook() -> EmrHook:
    """Airflow's EmrHook as the Airflow side builds it (hooks.aws.emr_hook), on moto's EMR."""
    return EmrHook(aws_conn_id=None, emr_conn_id=None, region_name=REGION)


def ec2_client() -> Any:
    return boto3.client("ec2", region_name=REGION)


@pytest.fixture
def provider(aws: None, sleeps: list[float]) -> EmrProvider:
    return EmrProvider(
        emr_hook, sleep=sleeps.append, jitter=lambda: 1.0, probe=None, clock=lambda: LAUNCHED_AT, ec2_client=ec2_client
    )


@pytest.fixture
def network(aws: None) -> Network:
    return moto_network(REGION)


@pytest.fixture
def pool(network: Network, monkeypatch: pytest.MonkeyPatch) -> pools.PoolConfig:
    """The project's small pool in moto's VPC, its Livy group made by the setup step."""
    monkeypatch.setenv("SPOTLAKE_REGISTRY_PREFIX", "spotlake")
    pool = in_network(pools.load(provider="emr").get("small"), network)
    ensure_livy_groups(ec2_client(), "spotlake", [pool])
    return pool


def backend_cluster(job_flow_id: str) -> Any:
    return emr_models.emr_backends[DEFAULT_ACCOUNT_ID][REGION].clusters[job_flow_id]


def set_state(monkeypatch: pytest.MonkeyPatch, job_flow_id: str, state: str, message: str = "", code: str = "") -> None:
    """Put a moto cluster in ``state`` with a StateChangeReason code and message."""
    if code:
        original = emr_models.Cluster.status

        def status(self: Any) -> dict[str, Any]:
            value = original.fget(self)
            if getattr(self, "reason_code", ""):
                value["StateChangeReason"]["Code"] = self.reason_code
            return value

        monkeypatch.setattr(emr_models.Cluster, "status", property(status))
    cluster = backend_cluster(job_flow_id)
    cluster.state, cluster.last_state_change_reason, cluster.reason_code = state, message or None, code


def registry_cluster(job_flow_id: str, cluster_id: str = "small-0001") -> Cluster:
    return Cluster(pool="small", cluster_id=cluster_id, provider="emr", state=ClusterState.READY, provider_id=job_flow_id)


def live_clusters(cluster_id: str) -> list[str]:
    client = boto3.client("emr", region_name=REGION)
    ids = [c["Id"] for c in client.list_clusters(ClusterStates=["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"])["Clusters"]]
    return [
        i
        for i in ids
        if {t["Key"]: t["Value"] for t in client.describe_cluster(ClusterId=i)["Cluster"]["Tags"]}.get(TAG_CLUSTER) == cluster_id
    ]


def test_launch_request_carries_fleets_spot_tags_and_auto_termination(provider: EmrProvider, pool: pools.PoolConfig) -> None:
    sent: list[dict[str, Any]] = []
    provider.client.meta.events.register("provide-client-params.emr.RunJobFlow", lambda params, **_: sent.append(params))
    launched = provider.launch(pool, "small-0001")
    assert launched.endpoint is None and launched.provider_id.startswith("j-")

    [request] = sent
    fleets = {f["InstanceFleetType"]: f for f in request["Instances"]["InstanceFleets"]}
    assert fleets["MASTER"]["TargetOnDemandCapacity"] == 1 and "TargetSpotCapacity" not in fleets["MASTER"]
    assert fleets["CORE"]["TargetOnDemandCapacity"] == 1 and fleets["CORE"]["TargetSpotCapacity"] == 0
    task = fleets["TASK"]
    assert task["TargetSpotCapacity"] == 2 and task["TargetOnDemandCapacity"] == 0
    assert len(task["InstanceTypeConfigs"]) >= 3
    assert task["LaunchSpecifications"]["SpotSpecification"] == {
        "TimeoutDurationMinutes": 10,
        "TimeoutAction": "SWITCH_TO_ON_DEMAND",
        "AllocationStrategy": "capacity-optimized",
    }
    assert request["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert request["Instances"]["Ec2SubnetIds"] == list(pool.emr.subnet_ids)
    assert request["AutoTerminationPolicy"] == {"IdleTimeout": 3600}

    described = provider.client.describe_cluster(ClusterId=launched.provider_id)["Cluster"]
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert tags["spotlake:managed"] == "true" and tags["spotlake:pool"] == "small"
    assert tags[TAG_CLUSTER] == "small-0001" and tags["spotlake:launched-at"] == "2026-11-27T14:00:00Z"
    assert tags["team"] == "data-platform"
    assert described["ReleaseLabel"].startswith("emr-7.")
    assert {a["Name"] for a in described["Applications"]} == {"Spark", "Livy"}
    assert described["Name"] == "spotlake-small-0001" and described["AutoTerminate"] is False
    assert described["LogUri"] == pool.emr.log_uri and described["ServiceRole"] == pool.emr.service_role


def test_launch_is_idempotent_per_cluster_id(provider: EmrProvider, pool: pools.PoolConfig) -> None:
    first = provider.launch(pool, "small-0001")
    again = provider.launch(pool, "small-0001")
    other = provider.launch(pool, "small-0002")
    assert again.provider_id == first.provider_id != other.provider_id
    assert live_clusters("small-0001") == [first.provider_id]


@pytest.mark.parametrize(
    ("state", "code", "message", "liveness", "cause"),
    [
        ("STARTING", "", "", Liveness.BOOTING, None),
        ("BOOTSTRAPPING", "", "Running bootstrap actions", Liveness.BOOTING, None),
        ("RUNNING", "", "", Liveness.ALIVE, None),
        ("WAITING", "", "Cluster ready to run steps.", Liveness.ALIVE, None),
        (
            "TERMINATED_WITH_ERRORS",
            "INSTANCE_FAILURE",
            "The master node was terminated: the EC2 Spot Instance was interrupted",
            Liveness.DEAD,
            Cause.SPOT_LOSS,
        ),
        ("TERMINATED_WITH_ERRORS", "", "Spot capacity reclaimed", Liveness.DEAD, Cause.SPOT_LOSS),
        ("TERMINATED_WITH_ERRORS", "INSTANCE_FAILURE", "Instance failure", Liveness.DEAD, Cause.INSTANCE_FAILURE),
        ("TERMINATED_WITH_ERRORS", "INSTANCE_FLEET_TIMEOUT", "Could not provision", Liveness.DEAD, Cause.INSTANCE_FAILURE),
        ("TERMINATING", "USER_REQUEST", "Terminated by user request", Liveness.DEAD, Cause.EXTERNAL_TERMINATION),
        ("TERMINATED", "USER_REQUEST", "Terminated by user request", Liveness.DEAD, Cause.EXTERNAL_TERMINATION),
        ("TERMINATED", "ALL_STEPS_COMPLETED", "Cluster was terminated after being idle", Liveness.DEAD, Cause.IDLE_TERMINATION),
        ("TERMINATED_WITH_ERRORS", "BOOTSTRAP_FAILURE", "Bootstrap action 1 failed", Liveness.DEAD, Cause.LAUNCH_FAILURE),
    ],
)
def test_emr_states_and_reasons_map_to_health(
    provider: EmrProvider,
    pool: pools.PoolConfig,
    monkeypatch: pytest.MonkeyPatch,
    state: str,
    code: str,
    message: str,
    liveness: Liveness,
    cause: Cause | None,
) -> None:
    launched = provider.launch(pool, "small-0001")
    set_state(monkeypatch, launched.provider_id, state, message, code)
    health = provider.health(registry_cluster(launched.provider_id))
    assert (health.liveness, health.cause) == (liveness, cause)
    assert health.own_termination is False
    if liveness == Liveness.ALIVE:
        assert health.endpoint.startswith("http://") and health.endpoint.endswith(":8998")
    if liveness == Liveness.DEAD:
        assert health.definitive and state in health.reason and launched.provider_id in health.reason
        assert (code or message) in health.reason


def test_own_rotation_is_told_apart_from_termination_by_someone_else(
    provider: EmrProvider, pool: pools.PoolConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = provider.launch(pool, "small-0001")
    theirs = provider.launch(pool, "small-0002")
    provider.terminate(registry_cluster(ours.provider_id), "rotation")
    provider.client.terminate_job_flows(JobFlowIds=[theirs.provider_id])

    described = provider.client.describe_cluster(ClusterId=ours.provider_id)["Cluster"]
    assert {t["Key"]: t["Value"] for t in described["Tags"]}[TAG_TERMINATED_BY] == "rotation"
    own = provider.health(registry_cluster(ours.provider_id))
    assert (own.liveness, own.cause, own.own_termination) == (Liveness.DEAD, Cause.OWN_TERMINATION, True)
    assert "terminated by spotlake (rotation)" in own.reason
    # The same USER_REQUEST code without our tag is someone else's doing.
    set_state(monkeypatch, theirs.provider_id, "TERMINATED", "Terminated by user request", "USER_REQUEST")
    other = provider.health(registry_cluster(theirs.provider_id, "small-0002"))
    assert (other.cause, other.own_termination) == (Cause.EXTERNAL_TERMINATION, False)
    assert "outside spotlake" in other.reason


def test_throttling_is_retried_with_capped_exponential_backoff(
    provider: EmrProvider, pool: pools.PoolConfig, sleeps: list[float]
) -> None:
    launched = provider.launch(pool, "small-0001")
    provider.hook.conn = Throttling(provider.client, {"describe_cluster": 3})
    health = provider.health(registry_cluster(launched.provider_id))
    assert health.alive and provider.client.calls["describe_cluster"] == 4
    assert sleeps == [0.5, 1.0, 2.0]

    sleeps.clear()
    provider.hook.conn = Throttling(provider.client.client, {"describe_cluster": 100})
    with pytest.raises(ProviderError, match="still throttled after 6 attempts"):
        provider.health(registry_cluster(launched.provider_id))
    assert len(sleeps) == 5 and max(sleeps) <= provider.max_delay


def test_jitter_spreads_retries() -> None:
    delays: list[float] = []
    provider = EmrProvider(emr_hook, sleep=delays.append, jitter=iter([0.25, 0.5, 0.75]).__next__, probe=None)
    calls = iter([ClientError({"Error": {"Code": "ThrottlingException"}}, "X")] * 3 + [None])

    def flaky() -> str:
        error = next(calls)
        if error:
            raise error
        return "done"

    assert provider._retrying("test call", flaky) == "done"
    assert delays == [0.5 * 0.25, 1.0 * 0.5, 2.0 * 0.75]


def test_throttled_launch_never_creates_two_clusters(provider: EmrProvider, pool: pools.PoolConfig) -> None:
    # Two RunJobFlow calls reach EMR but their answers come back as throttling errors.
    provider.hook.conn = Throttling(provider.client, {"run_job_flow": 2}, lose_response=True)
    launched = provider.launch(pool, "small-0001")
    assert provider.client.calls["run_job_flow"] == 1  # the retry found the first cluster instead
    assert live_clusters("small-0001") == [launched.provider_id]

    # Throttled before reaching EMR: retried, one cluster.
    provider.hook.conn = Throttling(provider.client.client, {"run_job_flow": 2})
    second = provider.launch(pool, "small-0002")
    assert provider.client.calls["run_job_flow"] == 3
    assert live_clusters("small-0002") == [second.provider_id]


def test_other_client_errors_fail_the_launch_clearly_and_leave_nothing(provider: EmrProvider, pool: pools.PoolConfig) -> None:
    provider.hook.conn = Throttling(provider.client, {"run_job_flow": 1}, code="AccessDeniedException")
    with pytest.raises(LaunchFailed) as err:
        provider.launch(pool, "small-0001")
    message = str(err.value)
    assert "small-0001" in message and "AccessDeniedException" in message and "Fix:" in message
    assert provider.client.calls["run_job_flow"] == 1  # not retried
    assert live_clusters("small-0001") == []

    # A failure whose request did create a cluster: the launch cleans it up.
    provider.hook.conn = Throttling(provider.client.client, {"run_job_flow": 1}, lose_response=True, code="InternalServerError")
    with pytest.raises(LaunchFailed, match="InternalServerError"):
        provider.launch(pool, "small-0002")
    assert live_clusters("small-0002") == []


def test_fleet_on_emr_launches_then_heals_a_spot_loss(
    provider: EmrProvider, pool: pools.PoolConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(boto3.client("dynamodb", region_name=REGION), prefix="t")
    registry.create_tables()
    fleet = Fleet(registry, provider, clock=lambda: LAUNCHED_AT)

    report = fleet.launch(pool)
    [cluster] = registry.clusters("small")
    assert report.launched == ["small-0001"] and cluster.state == ClusterState.READY
    assert cluster.provider_id.startswith("j-") and cluster.endpoint.endswith(":8998")
    job = registry.claim_job("shop_orders#w1", "small", cluster, "run1", expected=None)
    registry.update_job(job, batch_id=3)

    set_state(
        monkeypatch, cluster.provider_id, "TERMINATED_WITH_ERRORS", "The EC2 Spot Instance was interrupted", "INSTANCE_FAILURE"
    )
    report = fleet.reconcile(pool)
    dead = registry.get_cluster("small", "small-0001")
    assert dead.state == ClusterState.DEAD and "Spot" in dead.reason  # at once: EMR says it is gone
    assert report.dead == ["small-0001"] and report.requeued_jobs == ["shop_orders#w1"]
    assert registry.get_job("shop_orders#w1").state == JobState.REQUEUED
    assert registry.ready_cluster("small").cluster_id == "small-0002"


class Clock:
    """The fleet's clock, from now (moto stamps a cluster's creation with the real time)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def emr_state(job_flow_id: str) -> str:
    return str(boto3.client("emr", region_name=REGION).describe_cluster(ClusterId=job_flow_id)["Cluster"]["Status"]["State"])


def test_the_sweep_terminates_a_cluster_launched_behind_the_registrys_back(
    provider: EmrProvider, pool: pools.PoolConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOTLAKE_REGISTRY_PREFIX", "t")
    provider = EmrProvider(emr_hook, sleep=lambda _: None, probe=None, ec2_client=ec2_client)
    registry = Registry(boto3.client("dynamodb", region_name=REGION), prefix="t")
    registry.create_tables()
    clock = Clock()
    fleet = Fleet(registry, provider, clock=clock)
    ensure_livy_groups(ec2_client(), "t", [pool])  # this registry's Livy group
    fleet.launch(pool)
    (ours,) = registry.clusters("small")

    emr = boto3.client("emr", region_name=REGION)
    leaked = emr.run_job_flow(**provider.job_flow_request(pool, "small-0007", clock.now))["JobFlowId"]
    other = EmrProvider(emr_hook, sleep=lambda _: None, probe=None, registry_prefix="staging")
    foreign = emr.run_job_flow(**other.job_flow_request(pool, "small-0001", clock.now))["JobFlowId"]  # another deployment's

    report = fleet.reconcile(pool)
    assert report.clusters("untracked") == ["small-0007"] and "terminated in 15m if still so" in " ".join(report.lines())
    assert emr_state(leaked) in ("STARTING", "WAITING", "RUNNING")

    clock.now += timedelta(minutes=16)
    report = fleet.reconcile(pool)
    assert report.clusters("swept") == ["small-0007"]
    assert "not in the registry" in report.lines()[-1] and leaked in report.lines()[-1]
    assert emr_state(leaked) == "TERMINATED"
    tags = {t["Key"]: t["Value"] for t in emr.describe_cluster(ClusterId=leaked)["Cluster"]["Tags"]}
    assert tags[TAG_TERMINATED_BY] == "untracked"
    swept = registry.get_cluster("small", "small-0007")
    assert (swept.state, swept.provider_id, swept.generation) == (ClusterState.TERMINATED, leaked, 7)
    assert swept.reason.startswith("swept: cluster small-0007")

    report = fleet.reconcile(pool)  # the provider confirms it gone
    assert report.clusters("confirmed") == ["small-0007"] and registry.get_cluster("small", "small-0007").terminated_at
    assert emr_state(foreign) in ("STARTING", "WAITING", "RUNNING")  # not this registry's: left alone
    assert registry.get_cluster("small", ours.cluster_id).state == ClusterState.READY
    assert emr_state(ours.provider_id) in ("STARTING", "WAITING", "RUNNING")
    assert fleet.vacancy(pool, rotation=False) is None and fleet.sweep(pool).events == []


def test_a_dead_cluster_whose_first_termination_failed_ends_terminated(provider: EmrProvider, pool: pools.PoolConfig) -> None:
    registry = Registry(boto3.client("dynamodb", region_name=REGION), prefix="t")
    registry.create_tables()
    fleet = Fleet(registry, provider, clock=Clock())
    fleet.launch(pool)
    (cluster,) = registry.clusters("small")
    provider.probe = lambda endpoint: f"Livy at {endpoint} did not answer: connection refused"
    provider.hook.conn = Throttling(provider.client, {"terminate_job_flows": 1}, code="InternalServerError")
    for _ in range(pool.failure_threshold):
        report = fleet.check_health(pool)
    dead = registry.get_cluster("small", cluster.cluster_id)
    assert dead.state == ClusterState.DEAD and dead.terminated_at == ""
    assert "could not be terminated" in " ".join(report.errors) and "InternalServerError" in " ".join(report.errors)
    assert emr_state(cluster.provider_id) in ("WAITING", "RUNNING")  # still billing
    assert fleet.attention(pool)[0] == "urgent"  # no READY cluster; the pass also settles

    provider.probe = None
    report = fleet.reconcile(pool)
    assert report.clusters("still-running") == [cluster.cluster_id] and report.errors == []
    assert "termination requested again (1)" in " ".join(report.lines())
    assert emr_state(cluster.provider_id) == "TERMINATED"
    report = fleet.reconcile(pool)
    confirmed = registry.get_cluster("small", cluster.cluster_id)
    assert report.clusters("confirmed") == [cluster.cluster_id] and confirmed.terminated_at
    assert (confirmed.state, confirmed.terminate_attempts, confirmed.terminate_error) == (ClusterState.DEAD, 1, "")
    assert provider.client.calls["terminate_job_flows"] == 2
    assert fleet.settle(pool).events == []  # nothing left to ask about


def test_the_launch_puts_livy_behind_the_pools_group_and_refuses_a_group_opened_by_hand(
    provider: EmrProvider, pool: pools.PoolConfig, network: Network
) -> None:
    sent: list[dict[str, Any]] = []
    provider.client.meta.events.register("provide-client-params.emr.RunJobFlow", lambda params, **_: sent.append(params))
    ec2 = ec2_client()
    (livy,) = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["spotlake-spotlake-livy-small"]}])[
        "SecurityGroups"
    ]
    launched = provider.launch(pool, "small-0001")
    [request] = sent
    instances = request["Instances"]
    assert instances["AdditionalMasterSecurityGroups"] == [livy["GroupId"]]  # the primary node, where Livy listens
    assert "AdditionalSlaveSecurityGroups" not in instances
    groups = pool.emr.security_groups
    assert (instances["EmrManagedMasterSecurityGroup"], instances["EmrManagedSlaveSecurityGroup"]) == (
        groups.master,
        groups.workers,
    )
    assert instances["ServiceAccessSecurityGroup"] == groups.service_access
    assert rule_set(livy["IpPermissions"]) == {("tcp", 8998, 8998, network.airflow_group)}
    described = provider.client.describe_cluster(ClusterId=launched.provider_id)["Cluster"]
    assert livy["GroupId"] in described["Ec2InstanceAttributes"]["AdditionalMasterSecurityGroups"]

    ec2.authorize_security_group_ingress(
        GroupId=livy["GroupId"],
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 8998, "ToPort": 8998, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )
    with pytest.raises(LaunchFailed) as refused:
        provider.launch(pool, "small-0002")
    assert "0.0.0.0/0" in str(refused.value) and "python -m spotlake.aws_setup" in str(refused.value)
    assert len(sent) == 1 and live_clusters("small-0002") == []
    ensure_livy_groups(ec2, "spotlake", [pool])  # the setup step puts the rule back
    assert provider.launch(pool, "small-0002").provider_id.startswith("j-")


def test_a_pool_whose_livy_group_was_never_made_is_refused_naming_the_setup_step(provider: EmrProvider, network: Network) -> None:
    pool = in_network(pools.load(provider="emr").get("large"), network)
    with pytest.raises(
        LaunchFailed, match=r"Livy security group spotlake-spotlake-livy-large does not exist in the VPC .*spotlake\.aws_setup"
    ):
        provider.launch(pool, "large-0001")
    assert live_clusters("large-0001") == []


def test_a_cluster_of_another_registry_with_the_same_id_is_never_adopted_nor_terminated(
    provider: EmrProvider, pool: pools.PoolConfig
) -> None:
    """Staging and production in one account, both with pool small: production's lookups by
    cluster id (a retried launch, a DEAD cluster without a provider id) see only its own."""
    ensure_livy_groups(ec2_client(), "staging", [pool])
    staging = EmrProvider(emr_hook, sleep=lambda _: None, probe=None, ec2_client=ec2_client, registry_prefix="staging")
    theirs = staging.launch(pool, "small-0001").provider_id
    assert provider.find("small-0001") is None
    ours = provider.launch(pool, "small-0001").provider_id
    assert ours != theirs and provider.find("small-0001") == ours
    dead = Cluster(pool="small", cluster_id="small-0002", provider="emr", state=ClusterState.DEAD)
    staging.launch(pool, "small-0002")
    assert provider.gone(dead)  # nothing of this registry runs under that id
    provider.terminate(dead, "unhealthy")
    assert live_clusters("small-0002") != []  # staging's is left alone


# ------------------------------------------------------------------ instances (the cost ledger)


class _Hook:
    def __init__(self, conn: Any) -> None:
        self.conn = conn


def test_instances_are_read_per_fleet_every_page_with_market_and_timeline() -> None:
    """moto's ListInstances ignores InstanceFleetType, so EMR's answers are stubbed (botocore checks
    each request and answer against the EMR API model)."""
    from botocore.stub import Stubber

    client = boto3.client("emr", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    provider = EmrProvider(lambda: _Hook(client), probe=None)
    t0 = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)

    def instance(kind: str, market: str, start: datetime | None, end: datetime | None = None) -> dict[str, Any]:
        timeline: dict[str, Any] = {}
        if start:
            timeline["CreationDateTime"] = start
        if end:
            timeline["EndDateTime"] = end
        return {"Id": "ci-1", "InstanceType": kind, "Market": market, "Status": {"State": "RUNNING", "Timeline": timeline}}

    with Stubber(client) as stub:
        stub.add_response(
            "list_instances",
            {"Instances": [instance("m5.xlarge", "ON_DEMAND", t0)]},
            {"ClusterId": "j-1", "InstanceFleetType": "MASTER"},
        )
        stub.add_response(
            "list_instances",
            {"Instances": [instance("m6i.xlarge", "ON_DEMAND", t0)]},
            {"ClusterId": "j-1", "InstanceFleetType": "CORE"},
        )
        stub.add_response(
            "list_instances",
            {"Instances": [instance("r5.xlarge", "SPOT", t0, t0 + timedelta(minutes=30))], "Marker": "m2"},
            {"ClusterId": "j-1", "InstanceFleetType": "TASK"},
        )
        stub.add_response(
            "list_instances",
            {"Instances": [instance("m5.xlarge", "SPOT", t0 + timedelta(minutes=31)), instance("m5a.xlarge", "SPOT", None)]},
            {"ClusterId": "j-1", "InstanceFleetType": "TASK", "Marker": "m2"},
        )
        found = provider.instances(
            pools.load().get("small"),
            Cluster(pool="small", cluster_id="small-0001", provider="emr", state="READY", provider_id="j-1"),
        )
        stub.assert_no_pending_responses()
    assert [(u.instance_type, u.market, u.role, u.start[11:16], u.end[11:16]) for u in found] == [
        ("m5.xlarge", "ON_DEMAND", "MASTER", "10:00", ""),
        ("m6i.xlarge", "ON_DEMAND", "CORE", "10:00", ""),
        ("r5.xlarge", "SPOT", "TASK", "10:00", "10:30"),
        ("m5.xlarge", "SPOT", "TASK", "10:31", ""),  # the one never provisioned is not billed
    ]

"""EMR clusters through Airflow's :class:`~airflow.providers.amazon.aws.hooks.emr.EmrHook`.

Each cluster is a long-running EMR 7.x job flow with Spark and Livy: MASTER and
CORE instance fleets on demand, a TASK fleet on spot across several instance
types (capacity-optimized, switching to on-demand when spot capacity does not
come), idle auto-termination, and tags naming the pool, the fleet's cluster id
and the launch time. The Livy endpoint is ``http://<MasterPublicDnsName>:8998``.

Idempotent launch: RunJobFlow takes no client token, so the cluster id is the
token. A launch first looks for a live cluster tagged with that id and adopts
it; the lookup is repeated before every retried RunJobFlow, so a throttled or
lost response never creates a second cluster.

Own terminations are recognisable: the tag ``spotlake:terminated-by=<reason>``
is set before TerminateJobFlows.

Health: EMR's state first; a RUNNING/WAITING cluster whose Livy does not answer
is a failed check too (the fleet's workers must reach the master on port 8998,
as the batch tasks do; ``probe=None`` checks EMR's state only).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import ClientError

from spotlake.providers.base import (
    Cause,
    ClusterHealth,
    ClusterProvider,
    LaunchedCluster,
    LaunchFailed,
    Liveness,
    ProviderError,
    TerminationReason,
    probe_livy,
)

if TYPE_CHECKING:
    from spotlake.pools import EmrShape, InstanceFleet, PoolConfig
    from spotlake.registry import Cluster

T = TypeVar("T")

LIVY_PORT = 8998
TAG_MANAGED = "spotlake:managed"
TAG_POOL = "spotlake:pool"
TAG_CLUSTER = "spotlake:cluster-id"
TAG_LAUNCHED = "spotlake:launched-at"
TAG_TERMINATED_BY = "spotlake:terminated-by"
LIVE_STATES = ("STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING")
BOOTING_STATES = ("STARTING", "BOOTSTRAPPING")
ALIVE_STATES = ("RUNNING", "WAITING")
DEAD_STATES = ("TERMINATING", "TERMINATED", "TERMINATED_WITH_ERRORS")
THROTTLING_CODES = frozenset({
    "ThrottlingException", "Throttling", "ThrottledException", "RequestLimitExceeded",
    "TooManyRequestsException", "RequestThrottled",
})
FIXES = {
    "AccessDeniedException": "give the fleet's AWS identity the elasticmapreduce:* actions it needs "
                             "(RunJobFlow, DescribeCluster, ListClusters, AddTags, TerminateJobFlows) "
                             "and iam:PassRole on the pool's roles",
    "ValidationException": "check the pool's emr section in config/pools.yaml (instance types, subnets, "
                           "roles, release label)",
    "InvalidRequestException": "check the pool's emr section in config/pools.yaml and that the "
                               "cluster exists",
}


def cluster_name(cluster_id: str) -> str:
    return f"spotlake-{cluster_id}"


def _tags(described: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in described.get("Tags", [])}


def classify(described: dict[str, Any]) -> ClusterHealth:
    """Map DescribeCluster's ``Cluster`` to a :class:`ClusterHealth`.

    STARTING/BOOTSTRAPPING: booting; RUNNING/WAITING: alive; TERMINATING/TERMINATED/
    TERMINATED_WITH_ERRORS: dead, the cause told apart from StateChangeReason and tags.
    """
    status = described.get("Status", {})
    state = status.get("State", "")
    change = status.get("StateChangeReason") or {}
    code, message = change.get("Code", ""), change.get("Message", "") or ""
    said = f"{state}" + (f" ({code}{': ' if code and message else ''}{message})" if code or message else "")
    if state in BOOTING_STATES:
        return ClusterHealth.booting(f"EMR cluster {described.get('Id')} is {state}")
    if state in ALIVE_STATES:
        dns = described.get("MasterPublicDnsName")
        if not dns:
            return ClusterHealth.failed(
                f"EMR cluster {described.get('Id')} is {state} but has no master DNS name"
            )
        return ClusterHealth.ok(f"http://{dns}:{LIVY_PORT}", reason=f"EMR {state}")
    if state not in DEAD_STATES:
        return ClusterHealth.failed(f"EMR cluster {described.get('Id')} is in unknown state {state!r}",
                                    cause=Cause.OTHER)
    cause, text = _death_cause(code, message, _tags(described).get(TAG_TERMINATED_BY, ""))
    return ClusterHealth(
        Liveness.DEAD, reason=f"EMR cluster {described.get('Id')} {text}: {said}", cause=cause,
        own_termination=cause == Cause.OWN_TERMINATION, definitive=True,
    )


def _death_cause(code: str, message: str, terminated_by: str) -> tuple[Cause, str]:
    lowered = message.lower()
    if terminated_by:
        return Cause.OWN_TERMINATION, f"terminated by spotlake ({terminated_by})"
    if "spot" in lowered:
        return Cause.SPOT_LOSS, "lost its spot capacity"
    if code in ("INSTANCE_FAILURE", "INSTANCE_FLEET_TIMEOUT"):
        return Cause.INSTANCE_FAILURE, "lost or could not provision its instances"
    if code == "USER_REQUEST":
        return Cause.EXTERNAL_TERMINATION, "was terminated outside spotlake"
    if code == "ALL_STEPS_COMPLETED" or "idle" in lowered:
        return Cause.IDLE_TERMINATION, "auto-terminated (idle or all steps completed)"
    if code in ("BOOTSTRAP_FAILURE", "VALIDATION_ERROR"):
        return Cause.LAUNCH_FAILURE, "failed to start"
    if not code:
        return Cause.EXTERNAL_TERMINATION, "was terminated without a reason from EMR (not by spotlake)"
    return Cause.OTHER, "terminated"


class EmrProvider(ClusterProvider):
    """Clusters as EMR job flows; every call goes through :class:`EmrHook`'s boto3 client."""

    name = "emr"

    def __init__(
        self,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        *,
        max_attempts: int = 6,
        base_delay: float = 0.5,
        max_delay: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        probe: Callable[[str], str | None] | None = probe_livy,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.jitter = jitter
        self.probe = probe
        self.clock = clock

    @cached_property
    def hook(self) -> Any:
        from airflow.providers.amazon.aws.hooks.emr import EmrHook

        # emr_conn_id=None: the whole request comes from config/pools.yaml, not from a connection.
        return EmrHook(aws_conn_id=self.aws_conn_id, emr_conn_id=None, region_name=self.region_name)

    @property
    def client(self) -> Any:
        return self.hook.conn

    # ------------------------------------------------------------------ request
    def job_flow_request(self, pool: PoolConfig, cluster_id: str, launched_at: datetime) -> dict[str, Any]:
        """The RunJobFlow request of ``cluster_id`` in ``pool`` (pure: no AWS call)."""
        shape = _shape(pool)
        tags = {
            **shape.tags,
            TAG_MANAGED: "true", TAG_POOL: pool.name, TAG_CLUSTER: cluster_id,
            TAG_LAUNCHED: launched_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        return {
            "Name": cluster_name(cluster_id),
            "ReleaseLabel": shape.release_label,
            "LogUri": shape.log_uri,
            "Applications": [{"Name": "Spark"}, {"Name": "Livy"}],
            "Instances": {
                "InstanceFleets": [_fleet(shape.master), _fleet(shape.core), _fleet(shape.task)],
                "Ec2SubnetIds": list(shape.subnet_ids),
                "KeepJobFlowAliveWhenNoSteps": True,
                "TerminationProtected": False,
            },
            "ServiceRole": shape.service_role,
            "JobFlowRole": shape.job_flow_role,
            "AutoTerminationPolicy": {"IdleTimeout": int(shape.idle_timeout.total_seconds())},
            "VisibleToAllUsers": True,
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
        }

    # --------------------------------------------------------------- interface
    def launch(self, pool: PoolConfig, cluster_id: str) -> LaunchedCluster:
        request = self.job_flow_request(pool, cluster_id, self.clock())

        def find_or_create() -> str:
            existing = self.find(cluster_id)
            if existing is not None:
                return existing
            return str(self.hook.create_job_flow(request)["JobFlowId"])

        try:
            job_flow_id = self._retrying(f"RunJobFlow of cluster {cluster_id}", find_or_create)
        except ProviderError as exc:
            self._clean_up_failed_launch(cluster_id)
            raise LaunchFailed(f"EMR cluster {cluster_id} of pool '{pool.name}' could not be launched: {exc}"
                               ) from exc
        return LaunchedCluster(cluster_id, provider_id=job_flow_id, endpoint=None)

    def health(self, cluster: Cluster) -> ClusterHealth:
        job_flow_id = cluster.provider_id or self.find(cluster.cluster_id)
        if not job_flow_id:
            return ClusterHealth.failed(
                f"no live EMR cluster is tagged {TAG_CLUSTER}={cluster.cluster_id}",
                cause=Cause.INSTANCE_FAILURE,
            )
        described = self.describe(job_flow_id)
        health = classify(described)
        if health.alive and health.endpoint and self.probe is not None:
            failure = self.probe(health.endpoint)
            if failure:
                state = described["Status"]["State"]
                return ClusterHealth.failed(f"EMR cluster {job_flow_id} is {state} but {failure}")
        return health

    def endpoint(self, cluster: Cluster) -> str | None:
        job_flow_id = cluster.provider_id or self.find(cluster.cluster_id)
        if not job_flow_id:
            return None
        health = classify(self.describe(job_flow_id))
        return health.endpoint if health.alive else None

    def terminate(self, cluster: Cluster, reason: str) -> None:
        job_flow_id = cluster.provider_id or self.find(cluster.cluster_id)
        if not job_flow_id:
            return
        self._terminate(job_flow_id, reason)

    # ----------------------------------------------------------------- helpers
    def describe(self, job_flow_id: str) -> dict[str, Any]:
        response = self._retrying(f"DescribeCluster {job_flow_id}",
                                  lambda: self.client.describe_cluster(ClusterId=job_flow_id))
        return response["Cluster"]

    def find(self, cluster_id: str) -> str | None:
        """The live EMR cluster tagged with ``cluster_id`` (STARTING to WAITING), if any."""
        def lookup() -> str | None:
            name = cluster_name(cluster_id)
            candidates: list[str] = []
            kwargs: dict[str, Any] = {"ClusterStates": list(LIVE_STATES)}
            while True:
                page = self.client.list_clusters(**kwargs)
                candidates.extend(c["Id"] for c in page.get("Clusters", []) if c.get("Name") == name)
                if not page.get("Marker"):
                    break
                kwargs["Marker"] = page["Marker"]
            for job_flow_id in candidates:
                described = self.client.describe_cluster(ClusterId=job_flow_id)["Cluster"]
                if _tags(described).get(TAG_CLUSTER) == cluster_id:
                    return job_flow_id
            return None

        return self._retrying(f"lookup of cluster {cluster_id}", lookup)

    def _terminate(self, job_flow_id: str, reason: str) -> None:
        def run() -> None:
            self.client.add_tags(ResourceId=job_flow_id, Tags=[{"Key": TAG_TERMINATED_BY, "Value": reason}])
            self.client.terminate_job_flows(JobFlowIds=[job_flow_id])

        self._retrying(f"TerminateJobFlows {job_flow_id}", run)

    def _clean_up_failed_launch(self, cluster_id: str) -> None:
        """After a failed launch, terminate whatever a lost response may have created."""
        try:
            job_flow_id = self.find(cluster_id)
            if job_flow_id:
                self._terminate(job_flow_id, TerminationReason.LAUNCH_FAILED)
        except ProviderError:
            pass  # the fleet records the launch as failed; an orphan would carry our tags and idle-terminate

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        """Run ``call``, retrying throttling with capped exponential backoff and full jitter."""
        for attempt in range(self.max_attempts):
            try:
                return call()
            except ClientError as exc:
                error = exc.response.get("Error", {})
                code, message = error.get("Code", ""), error.get("Message", "")
                if code not in THROTTLING_CODES:
                    fix = FIXES.get(code, "see the message; retry once the cause is fixed")
                    raise ProviderError(f"EMR {what} failed: {code}: {message}. Fix: {fix}") from exc
                if attempt == self.max_attempts - 1:
                    raise ProviderError(
                        f"EMR {what} still throttled after {self.max_attempts} attempts ({code}: {message}); "
                        "the account's EMR API rate is exhausted: run fewer fleet DAGs at once or ask AWS "
                        "for a higher limit"
                    ) from exc
                cap = min(self.max_delay, self.base_delay * 2 ** attempt)
                self.sleep(cap * self.jitter())
        raise AssertionError("unreachable")  # pragma: no cover


def _shape(pool: PoolConfig) -> EmrShape:
    if pool.emr is None:
        raise LaunchFailed(f"pool '{pool.name}' has no 'emr' shape in config/pools.yaml; add one")
    return pool.emr


def _fleet(fleet: InstanceFleet) -> dict[str, Any]:
    configs = []
    for t in fleet.instance_types:
        config: dict[str, Any] = {"InstanceType": t.type, "WeightedCapacity": t.weight}
        if t.ebs_gb:
            config["EbsConfiguration"] = {"EbsBlockDeviceConfigs": [{
                "VolumeSpecification": {"VolumeType": "gp3", "SizeInGB": t.ebs_gb}, "VolumesPerInstance": 1,
            }]}
        configs.append(config)
    spec: dict[str, Any] = {
        "Name": fleet.role.lower(),
        "InstanceFleetType": fleet.role,
        "InstanceTypeConfigs": configs,
    }
    if fleet.spot:
        spot_timeout = fleet.spot_timeout or timedelta(minutes=10)
        spec["TargetSpotCapacity"] = fleet.capacity
        spec["TargetOnDemandCapacity"] = 0
        spec["LaunchSpecifications"] = {
            "SpotSpecification": {
                "TimeoutDurationMinutes": int(spot_timeout.total_seconds() // 60),
                "TimeoutAction": "SWITCH_TO_ON_DEMAND",
                "AllocationStrategy": fleet.allocation_strategy,
            },
            "OnDemandSpecification": {"AllocationStrategy": "lowest-price"},
        }
    else:
        spec["TargetOnDemandCapacity"] = fleet.capacity
        spec["TargetSpotCapacity"] = 0
        if fleet.role == "CORE":
            spec["LaunchSpecifications"] = {"OnDemandSpecification": {"AllocationStrategy": "lowest-price"}}
    return spec

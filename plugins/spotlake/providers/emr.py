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

import ipaddress
import os
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
    InstanceUsage,
    LaunchedCluster,
    LaunchFailed,
    Liveness,
    Probe,
    ProviderError,
    RunningCluster,
    TerminationReason,
)

if TYPE_CHECKING:
    from spotlake.pools import EmrShape, InstanceFleet, LivyAccess, PoolConfig
    from spotlake.registry import Cluster

T = TypeVar("T")

LIVY_PORT = 8998
TAG_MANAGED = "spotlake:managed"
TAG_POOL = "spotlake:pool"
TAG_CLUSTER = "spotlake:cluster-id"
TAG_LAUNCHED = "spotlake:launched-at"
TAG_TERMINATED_BY = "spotlake:terminated-by"
TAG_REGISTRY = "spotlake:registry"  # the registry's table prefix: whose cluster it is (the sweep's scope)
TAG_LIVY_FOR = "spotlake:livy-for"  # on a pool's Livy security group: the pool
TAG_MANAGED_POLICIES = "for-use-with-amazon-emr-managed-policies"
LIVE_STATES = ("STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING")
BOOTING_STATES = ("STARTING", "BOOTSTRAPPING")
ALIVE_STATES = ("RUNNING", "WAITING")
DEAD_STATES = ("TERMINATING", "TERMINATED", "TERMINATED_WITH_ERRORS")
THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestThrottled",
    }
)
FIXES = {
    "AccessDeniedException": "give the fleet's AWS identity the elasticmapreduce:* actions it needs "
    "(RunJobFlow, DescribeCluster, ListClusters, AddTags, TerminateJobFlows) "
    "and iam:PassRole on the pool's roles",
    "ValidationException": "check the pool's emr section in config/pools.yaml (instance types, subnets, roles, release label)",
    "InvalidRequestException": "check the pool's emr section in config/pools.yaml and that the cluster exists",
}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


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
            return ClusterHealth.failed(f"EMR cluster {described.get('Id')} is {state} but has no master DNS name")
        return ClusterHealth.ok(f"http://{dns}:{LIVY_PORT}", reason=f"EMR {state}")
    if state not in DEAD_STATES:
        return ClusterHealth.failed(f"EMR cluster {described.get('Id')} is in unknown state {state!r}", cause=Cause.OTHER)
    cause, text = _death_cause(code, message, _tags(described).get(TAG_TERMINATED_BY, ""))
    return ClusterHealth(
        Liveness.DEAD,
        reason=f"EMR cluster {described.get('Id')} {text}: {said}",
        cause=cause,
        own_termination=cause == Cause.OWN_TERMINATION,
        definitive=True,
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
        emr_hook: Callable[[], Any] | None = None,
        *,
        max_attempts: int = 6,
        base_delay: float = 0.5,
        max_delay: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        probe: Probe | None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        registry_prefix: str | None = None,
        ec2_client: Callable[[], Any] | None = None,
    ) -> None:
        self.registry_prefix = registry_prefix or os.environ.get("SPOTLAKE_REGISTRY_PREFIX", "spotlake")
        self.ec2_client = ec2_client
        self.emr_hook = emr_hook
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.jitter = jitter
        self.probe = probe
        self.clock = clock

    @cached_property
    def hook(self) -> Any:
        """Airflow's EmrHook (:func:`hooks.aws.emr_hook`), made by the factory the caller gave."""
        if self.emr_hook is None:
            raise ProviderError(
                "the EMR provider was built without an EMR hook; build it with hooks.aws.cluster_provider "
                "(Airflow's EmrHook on an AWS connection)"
            )
        return self.emr_hook()

    @property
    def client(self) -> Any:
        return self.hook.conn

    @cached_property
    def ec2(self) -> Any:
        """The EC2 client (:func:`hooks.aws.cluster_provider`: Airflow's EC2Hook), for the Livy group."""
        if self.ec2_client is None:
            raise ProviderError(
                "the EMR provider was built without an EC2 client; build it with hooks.aws.cluster_provider "
                "(Airflow's EC2Hook on an AWS connection)"
            )
        return self.ec2_client()

    def livy_group(self, pool: PoolConfig) -> str | None:
        """The id of the pool's Livy security group (``emr.livy_access``; None when the pool has none),
        checked to admit exactly the configured sources on port 8998: a group missing or changed by
        hand fails the launch, naming the setup step that makes it right."""
        shape = _shape(pool)
        if shape.livy_access is None:
            return None
        name = livy_group_name(self.registry_prefix, pool.name)

        def lookup() -> dict[str, Any] | None:
            vpc = self.ec2.describe_subnets(SubnetIds=[shape.subnet_ids[0]])["Subnets"][0]["VpcId"]
            found = self.ec2.describe_security_groups(
                Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "group-name", "Values": [name]}]
            )["SecurityGroups"]
            return dict(found[0]) if found else None

        group = self._retrying(f"lookup of security group {name}", lookup)
        if group is None:
            raise LaunchFailed(
                f"pool '{pool.name}': its Livy security group {name} does not exist in the VPC of subnet "
                f"{shape.subnet_ids[0]}; create it with `python -m spotlake.aws_setup` (from emr.livy_access)"
            )
        have, want = rule_set(group.get("IpPermissions", [])), rule_set(livy_permissions(shape.livy_access))
        if have != want:
            raise LaunchFailed(
                f"pool '{pool.name}': security group {group['GroupId']} ({name}) admits {sorted(have) or 'nothing'}, "
                f"not exactly emr.livy_access {sorted(want)}: it was changed by hand, and Livy runs any code it is "
                "sent. Run `python -m spotlake.aws_setup` to put its rules back (or change emr.livy_access)"
            )
        return str(group["GroupId"])

    # ------------------------------------------------------------------ request
    def job_flow_request(
        self, pool: PoolConfig, cluster_id: str, launched_at: datetime, livy_group: str | None = None
    ) -> dict[str, Any]:
        """The RunJobFlow request of ``cluster_id`` in ``pool`` (pure: no AWS call), checked against
        EMR's rules that the API model does not carry (:func:`validate_request`); ``livy_group``: the
        pool's Livy security group (:meth:`livy_group`), added to the primary node's."""
        shape = _shape(pool)
        tags = {
            **shape.tags,
            TAG_MANAGED: "true",
            TAG_POOL: pool.name,
            TAG_CLUSTER: cluster_id,
            TAG_LAUNCHED: launched_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            TAG_REGISTRY: self.registry_prefix,
            # AmazonEMRServicePolicy_v2 (the v2 service role) acts only on resources with this tag.
            TAG_MANAGED_POLICIES: "true",
        }
        instances: dict[str, Any] = {
            "InstanceFleets": [_fleet(shape.master), _fleet(shape.core), _fleet(shape.task)],
            "Ec2SubnetIds": list(shape.subnet_ids),
            "KeepJobFlowAliveWhenNoSteps": True,
            "TerminationProtected": False,
            **_security_groups(shape, livy_group),
        }
        request: dict[str, Any] = {
            "Name": cluster_name(cluster_id),
            "ReleaseLabel": shape.release_label,
            "LogUri": shape.log_uri,
            "Applications": [{"Name": "Spark"}, {"Name": "Livy"}],
            "Instances": instances,
            "Configurations": configurations(shape),
            "ServiceRole": shape.service_role,
            "JobFlowRole": shape.job_flow_role,
            "AutoTerminationPolicy": {"IdleTimeout": int(shape.idle_timeout.total_seconds())},
            "VisibleToAllUsers": True,
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
        }
        if shape.bootstrap_actions:
            request["BootstrapActions"] = [
                {"Name": action.name, "ScriptBootstrapAction": {"Path": action.path, "Args": list(action.args)}}
                for action in shape.bootstrap_actions
            ]
        problems = validate_request(request)
        if problems:
            raise LaunchFailed(
                f"the RunJobFlow request of pool '{pool.name}' breaks EMR's rules: "
                + "; ".join(problems)
                + " — fix the pool's emr section in config/pools.yaml"
            )
        return request

    # --------------------------------------------------------------- interface
    def launch(self, pool: PoolConfig, cluster_id: str) -> LaunchedCluster:
        request = self.job_flow_request(pool, cluster_id, self.clock(), self.livy_group(pool))

        def find_or_create() -> str:
            existing = self.find(cluster_id)
            if existing is not None:
                return existing
            return str(self.hook.create_job_flow(request)["JobFlowId"])

        try:
            job_flow_id = self._retrying(f"RunJobFlow of cluster {cluster_id}", find_or_create)
        except ProviderError as exc:
            self._clean_up_failed_launch(cluster_id)
            raise LaunchFailed(f"EMR cluster {cluster_id} of pool '{pool.name}' could not be launched: {exc}") from exc
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

    def gone(self, cluster: Cluster) -> bool:
        job_flow_id = cluster.provider_id or self.find(cluster.cluster_id)
        if not job_flow_id:
            return True  # nothing live carries its id
        try:
            state = self.describe(job_flow_id)["Status"]["State"]
        except ProviderError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") == "InvalidRequestException":
                return True  # EMR no longer knows it (it forgets clusters two months after they end)
            raise
        return state in ("TERMINATED", "TERMINATED_WITH_ERRORS")

    def running(self, pool: PoolConfig) -> list[RunningCluster]:
        """The live EMR clusters (STARTING to WAITING) named for ``pool`` whose tags say they are
        this registry's clusters of ``pool``: ListClusters, then DescribeCluster for the names only."""

        def lookup() -> list[RunningCluster]:
            named = cluster_name(f"{pool.name}-")
            found = []
            for job_flow_id in self._live_named(lambda name: name.startswith(named)):
                described = self.client.describe_cluster(ClusterId=job_flow_id)["Cluster"]
                tags = _tags(described)
                if (tags.get(TAG_MANAGED), tags.get(TAG_POOL), tags.get(TAG_REGISTRY)) != (
                    "true",
                    pool.name,
                    self.registry_prefix,
                ):
                    continue  # another deployment's (another registry prefix), or not spotlake's
                found.append(
                    RunningCluster(
                        cluster_id=tags.get(TAG_CLUSTER, ""),
                        pool=pool.name,
                        provider_id=job_flow_id,
                        created_at=described["Status"].get("Timeline", {}).get("CreationDateTime"),
                        state=described["Status"]["State"],
                    )
                )
            return found

        return self._retrying(f"lookup of pool {pool.name}'s clusters", lookup)

    def terminate_running(self, found: RunningCluster, reason: str) -> None:
        self._terminate(found.provider_id, reason)

    def instances(self, pool: PoolConfig, cluster: Cluster) -> list[InstanceUsage]:
        """Every instance of the cluster's three fleets, ended ones included: ListInstances per fleet
        type, every page, with each instance's market and its timeline's creation and end."""
        job_flow_id = cluster.provider_id or self.find(cluster.cluster_id)
        if not job_flow_id:
            return []

        def lookup() -> list[InstanceUsage]:
            found = []
            for role in ("MASTER", "CORE", "TASK"):
                kwargs: dict[str, Any] = {"ClusterId": job_flow_id, "InstanceFleetType": role}
                while True:
                    page = self.client.list_instances(**kwargs)
                    for instance in page.get("Instances", []):
                        timeline = instance.get("Status", {}).get("Timeline", {})
                        started = timeline.get("CreationDateTime")
                        if started is None:
                            continue  # requested, not provisioned: nothing billed yet
                        ended = timeline.get("EndDateTime")
                        found.append(
                            InstanceUsage(
                                instance_type=str(instance.get("InstanceType", "")),
                                market=str(instance.get("Market", "ON_DEMAND")),
                                role=role,
                                start=_iso(started),
                                end=_iso(ended) if ended is not None else "",
                            )
                        )
                    if not page.get("Marker"):
                        break
                    kwargs["Marker"] = page["Marker"]
            return found

        return self._retrying(f"ListInstances {job_flow_id}", lookup)

    # ----------------------------------------------------------------- helpers
    def describe(self, job_flow_id: str) -> dict[str, Any]:
        response = self._retrying(f"DescribeCluster {job_flow_id}", lambda: self.client.describe_cluster(ClusterId=job_flow_id))
        cluster: dict[str, Any] = response["Cluster"]
        return cluster

    def find(self, cluster_id: str) -> str | None:
        """The live EMR cluster tagged with ``cluster_id`` and this registry's prefix (STARTING to
        WAITING), if any."""

        def lookup() -> str | None:
            name = cluster_name(cluster_id)
            for job_flow_id in self._live_named(lambda found: found == name):
                tags = _tags(self.client.describe_cluster(ClusterId=job_flow_id)["Cluster"])
                # This registry's only: another deployment in the account may use the same cluster id.
                if tags.get(TAG_CLUSTER) == cluster_id and tags.get(TAG_REGISTRY) == self.registry_prefix:
                    return job_flow_id
            return None

        return self._retrying(f"lookup of cluster {cluster_id}", lookup)

    def _live_named(self, matches: Callable[[str], bool]) -> list[str]:
        """The ids of the live EMR clusters (STARTING to WAITING) whose name ``matches``: ListClusters, every page."""
        ids: list[str] = []
        kwargs: dict[str, Any] = {"ClusterStates": list(LIVE_STATES)}
        while True:
            page = self.client.list_clusters(**kwargs)
            ids.extend(c["Id"] for c in page.get("Clusters", []) if matches(str(c.get("Name", ""))))
            if not page.get("Marker"):
                return ids
            kwargs["Marker"] = page["Marker"]

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
                cap = min(self.max_delay, self.base_delay * 2**attempt)
                self.sleep(cap * self.jitter())
        raise AssertionError("unreachable")  # pragma: no cover


SESSION_IDLE_TIMEOUT = "2h"  # Livy's livy.server.session.timeout (its default is 1h)


def spotlake_configurations(shape: EmrShape) -> list[dict[str, Any]]:
    """The classifications every spotlake cluster needs:

    - ``livy-conf``: the pool's deploy mode. In client mode (the default) the Spark driver runs
      in Livy's process on the primary node, which is on demand, and its output is Livy's batch log.
      Idle interactive sessions (warm execution, :mod:`spotlake.sessions`) live 2 hours instead of
      Livy's 1, so a pool whose tables are quiet for an hour keeps its sessions warm;
    - ``yarn-site``: YARN node labels on, application masters on CORE nodes (on demand), so no
      spot reclaim takes a job's application master (or, in cluster mode, its driver). EMR 6 and
      later turn node labels off by default, which lets masters land on spot task nodes;
    - ``spark-env``: the Python the jobs' package archive is built for (installed by a bootstrap
      action, see docs/deploying-to-aws.md).
    """
    return [
        {
            "Classification": "livy-conf",
            "Properties": {"livy.spark.deploy-mode": shape.deploy_mode, "livy.server.session.timeout": SESSION_IDLE_TIMEOUT},
        },
        {
            "Classification": "yarn-site",
            "Properties": {
                "yarn.node-labels.enabled": "true",
                "yarn.node-labels.am.default-node-label-expression": "CORE",
            },
        },
        {
            "Classification": "spark-env",
            "Properties": {},
            "Configurations": [
                {
                    "Classification": "export",
                    "Properties": {"PYSPARK_PYTHON": shape.python, "PYSPARK_DRIVER_PYTHON": shape.python},
                },
            ],
        },
    ]


def configurations(shape: EmrShape) -> list[dict[str, Any]]:
    """spotlake's classifications with the pool's own merged over them (a pool property wins)."""
    merged = {c["Classification"]: _copy_configuration(c) for c in spotlake_configurations(shape)}
    for own in shape.configurations:
        base = merged.get(own["Classification"])
        merged[own["Classification"]] = _merge_configuration(base, own) if base else _copy_configuration(own)
    return list(merged.values())


def _copy_configuration(config: dict[str, Any]) -> dict[str, Any]:
    copy: dict[str, Any] = {"Classification": config["Classification"], "Properties": dict(config.get("Properties", {}))}
    if config.get("Configurations"):
        copy["Configurations"] = [_copy_configuration(c) for c in config["Configurations"]]
    return copy


def _merge_configuration(base: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    merged = _copy_configuration(base)
    merged["Properties"].update(own.get("Properties", {}))
    nested = {c["Classification"]: c for c in merged.get("Configurations", [])}
    for child in own.get("Configurations", []):
        nested[child["Classification"]] = (
            _merge_configuration(nested[child["Classification"]], child)
            if child["Classification"] in nested
            else _copy_configuration(child)
        )
    if nested:
        merged["Configurations"] = list(nested.values())
    return merged


def _security_groups(shape: EmrShape, livy_group: str | None = None) -> dict[str, Any]:
    groups = shape.security_groups
    fields = {
        "EmrManagedMasterSecurityGroup": groups.master if groups else None,
        "EmrManagedSlaveSecurityGroup": groups.workers if groups else None,
        "ServiceAccessSecurityGroup": groups.service_access if groups else None,
        "AdditionalMasterSecurityGroups": list(groups.additional_master if groups else ()) + ([livy_group] if livy_group else []),
        "AdditionalSlaveSecurityGroups": list(groups.additional_workers if groups else ()),
    }
    return {k: v for k, v in fields.items() if v}


def livy_group_name(registry_prefix: str, pool: str) -> str:
    """The name of a pool's Livy security group (one per registry prefix and pool, in its VPC)."""
    return f"spotlake-{registry_prefix}-livy-{pool}"


def livy_permissions(access: LivyAccess) -> list[dict[str, Any]]:
    """The ingress rules of a pool's Livy group: TCP 8998 from each configured group and block."""
    rule: dict[str, Any] = {"IpProtocol": "tcp", "FromPort": LIVY_PORT, "ToPort": LIVY_PORT}
    return (
        [{**rule, "UserIdGroupPairs": [{"GroupId": g, "Description": "Airflow workers: Livy"}]} for g in access.security_groups]
        + [
            {**rule, "IpRanges": [{"CidrIp": c, "Description": "Airflow workers: Livy"}]}
            for c in access.cidrs
            if ipaddress.ip_network(c).version == 4
        ]
        + [
            {**rule, "Ipv6Ranges": [{"CidrIpv6": c, "Description": "Airflow workers: Livy"}]}
            for c in access.cidrs
            if ipaddress.ip_network(c).version == 6
        ]
    )


def rule_set(permissions: list[dict[str, Any]]) -> set[tuple[str, int, int, str]]:
    """Ingress rules as (protocol, from port, to port, source) tuples, whatever their grouping."""
    rules = set()
    for p in permissions:
        head = (str(p.get("IpProtocol")), int(p.get("FromPort", -1)), int(p.get("ToPort", -1)))
        for pair in p.get("UserIdGroupPairs", []):
            rules.add((*head, pair["GroupId"]))
        for block in p.get("IpRanges", []):
            rules.add((*head, block["CidrIp"]))
        for block in p.get("Ipv6Ranges", []):
            rules.add((*head, block["CidrIpv6"]))
        for prefix in p.get("PrefixListIds", []):
            rules.add((*head, prefix["PrefixListId"]))
    return rules


def _shape(pool: PoolConfig) -> EmrShape:
    if pool.emr is None:
        raise LaunchFailed(f"pool '{pool.name}' has no 'emr' shape in config/pools.yaml; add one")
    return pool.emr


def _fleet(fleet: InstanceFleet) -> dict[str, Any]:
    configs = []
    for t in fleet.instance_types:
        config: dict[str, Any] = {"InstanceType": t.type, "WeightedCapacity": t.weight}
        if t.ebs_gb:
            config["EbsConfiguration"] = {
                "EbsBlockDeviceConfigs": [
                    {
                        "VolumeSpecification": {"VolumeType": "gp3", "SizeInGB": t.ebs_gb},
                        "VolumesPerInstance": 1,
                    }
                ]
            }
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
        # The master fleet takes exactly one of the two targets; on-demand fleets name their strategy too.
        spec["TargetOnDemandCapacity"] = fleet.capacity
        if fleet.role != "MASTER":
            spec["TargetSpotCapacity"] = 0
        spec["LaunchSpecifications"] = {"OnDemandSpecification": {"AllocationStrategy": "lowest-price"}}
    return spec


# ------------------------------------------------------------------ validation
SPOT_ALLOCATION = (
    "capacity-optimized",
    "price-capacity-optimized",
    "lowest-price",
    "diversified",
    "capacity-optimized-prioritized",
)
ON_DEMAND_ALLOCATION = ("lowest-price", "prioritized")
TIMEOUT_ACTIONS = ("SWITCH_TO_ON_DEMAND", "TERMINATE_CLUSTER")


def validate_request(request: dict[str, Any]) -> list[str]:
    """EMR's rules for a RunJobFlow request with instance fleets that the API model (and moto) do
    not check, from the RunJobFlow, InstanceFleetConfig and SpotProvisioningSpecification
    references; an empty list when the request keeps them. botocore's parameter validation
    (types, required members) is :func:`validate_shape`."""
    problems: list[str] = []
    instances = request.get("Instances", {})
    fleets = instances.get("InstanceFleets", [])
    roles = [f.get("InstanceFleetType") for f in fleets]
    if roles.count("MASTER") != 1 or roles.count("CORE") > 1 or roles.count("TASK") > 1:
        problems.append(f"Instances.InstanceFleets: needs one MASTER and at most one CORE and one TASK fleet, got {roles}")
    if fleets and not instances.get("Ec2SubnetIds"):
        problems.append("Instances.Ec2SubnetIds: instance fleets need at least one subnet")
    for fleet in fleets:
        problems.extend(_fleet_problems(fleet))
    idle = request.get("AutoTerminationPolicy", {}).get("IdleTimeout")
    if idle is not None and not 60 <= idle <= 604800:
        problems.append(f"AutoTerminationPolicy.IdleTimeout: {idle} is outside 60..604800 seconds")
    if str(request.get("ServiceRole", "")).rsplit("/", 1)[-1] == "EMR_DefaultRole":
        problems.append("ServiceRole: EMR_DefaultRole is the deprecated v1 role; use EMR_DefaultRole_V2")
    tags = {t.get("Key"): t.get("Value") for t in request.get("Tags", [])}
    if tags.get(TAG_MANAGED_POLICIES) != "true":
        problems.append(f"Tags: the v2 service role needs {TAG_MANAGED_POLICIES}=true")
    if len(tags) > 50 or any(len(k) > 128 or len(v or "") > 256 for k, v in tags.items()):
        problems.append("Tags: at most 50, keys up to 128 and values up to 256 characters")
    if not str(request.get("ReleaseLabel", "")).startswith("emr-7."):
        problems.append(f"ReleaseLabel: {request.get('ReleaseLabel')!r} is not an EMR 7 release (Spark 3.5)")
    actions = request.get("BootstrapActions", [])
    if len(actions) > 16:
        problems.append(f"BootstrapActions: at most 16, got {len(actions)}")
    for i, action in enumerate(actions):
        if not str(action.get("ScriptBootstrapAction", {}).get("Path", "")).startswith("s3://"):
            problems.append(f"BootstrapActions[{i}].ScriptBootstrapAction.Path: must be an s3:// location")
    problems.extend(_configuration_problems(request.get("Configurations", []), "Configurations"))
    return problems


def _fleet_problems(fleet: dict[str, Any]) -> list[str]:
    where = f"InstanceFleets[{fleet.get('InstanceFleetType')}]"
    problems = []
    on_demand, spot = fleet.get("TargetOnDemandCapacity"), fleet.get("TargetSpotCapacity")
    if fleet.get("InstanceFleetType") == "MASTER":
        if (on_demand is None) == (spot is None) or (on_demand or spot) != 1:
            problems.append(
                f"{where}: the master fleet sets exactly one of TargetOnDemandCapacity and "
                f"TargetSpotCapacity, to 1 (got {on_demand}, {spot})"
            )
        if any(c.get("WeightedCapacity", 1) != 1 for c in fleet.get("InstanceTypeConfigs", [])):
            problems.append(f"{where}: master instance types have WeightedCapacity 1")
    specs = fleet.get("LaunchSpecifications", {})
    types = fleet.get("InstanceTypeConfigs", [])
    has_strategy = any(spec.get("AllocationStrategy") for spec in specs.values())
    if not 1 <= len(types) <= (30 if has_strategy else 5):
        problems.append(f"{where}: {len(types)} instance types; 1 to 5 (up to 30 with an allocation strategy)")
    if spot:
        spot_spec = specs.get("SpotSpecification")
        if not spot_spec:
            problems.append(f"{where}: TargetSpotCapacity needs LaunchSpecifications.SpotSpecification")
        else:
            minutes = spot_spec.get("TimeoutDurationMinutes")
            if not isinstance(minutes, int) or not 5 <= minutes <= 1440:
                problems.append(f"{where}: SpotSpecification.TimeoutDurationMinutes {minutes!r} is outside 5..1440")
            if spot_spec.get("TimeoutAction") not in TIMEOUT_ACTIONS:
                problems.append(f"{where}: SpotSpecification.TimeoutAction must be one of {', '.join(TIMEOUT_ACTIONS)}")
            if spot_spec.get("AllocationStrategy") not in SPOT_ALLOCATION:
                problems.append(f"{where}: SpotSpecification.AllocationStrategy must be one of {', '.join(SPOT_ALLOCATION)}")
    on_demand_spec = specs.get("OnDemandSpecification")
    if not on_demand_spec:
        problems.append(f"{where}: no OnDemandSpecification.AllocationStrategy (every fleet names its strategy)")
    elif on_demand_spec.get("AllocationStrategy") not in ON_DEMAND_ALLOCATION:
        problems.append(f"{where}: OnDemandSpecification.AllocationStrategy must be one of {', '.join(ON_DEMAND_ALLOCATION)}")
    return problems


def _configuration_problems(configs: list[dict[str, Any]], where: str) -> list[str]:
    problems = []
    names = [c.get("Classification") for c in configs]
    if len(names) != len(set(names)):
        problems.append(f"{where}: a classification appears twice: {names}")
    for config in configs:
        if not all(isinstance(v, str) for v in config.get("Properties", {}).values()):
            problems.append(f"{where}[{config.get('Classification')}].Properties: values must be strings")
        problems.extend(
            _configuration_problems(config.get("Configurations", []), f"{where}[{config.get('Classification')}].Configurations")
        )
    return problems


def validate_shape(request: dict[str, Any], operation: str = "RunJobFlow", service: str = "emr") -> list[str]:
    """botocore's own parameter validation of ``request`` (the checks a real call runs first)."""
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model(service).operation_model(operation)
    report = ParamValidator().validate(request, model.input_shape)
    return [line.strip() for line in report.generate_report().splitlines() if line.strip()] if report.has_errors() else []

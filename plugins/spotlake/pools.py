"""Cluster pools: ``config/pools.yaml`` validated into dataclasses.

A pool is a kind of cluster (its shape per provider) that the fleet keeps supplied
with one READY cluster, rotating it past ``max_age`` and declaring it DEAD after
``failure_threshold`` failed health checks. Every error names the file, the pool,
the key and the fix; an unknown key anywhere lists the allowed keys.

The provider in use is chosen by ``SPOTLAKE_PROVIDER`` (``local``, the default, or
``emr``); every pool must describe its shape for that provider.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from spotlake.config import DEFAULT_OWNER, NAME, PipelinesConfig, _mapping, _unknown_keys, owner, parse_duration
from spotlake.errors import ConfigError

DEFAULT_POOLS = Path(__file__).resolve().parents[2] / "config" / "pools.yaml"
PROVIDERS = ("local", "emr")
RELEASE_LABEL = re.compile(r"^emr-7\.\d+\.\d+$")
INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
LOCAL_MASTER = re.compile(r"^local\[(\d+|\*)\]$")
SUBNET = re.compile(r"^subnet-[0-9a-f]+$")
ALLOCATION_STRATEGIES = (
    "capacity-optimized",
    "price-capacity-optimized",
    "capacity-optimized-prioritized",
    "lowest-price",
)
# EMR's limits on AutoTerminationPolicy.IdleTimeout and Spot TimeoutDurationMinutes.
IDLE_TIMEOUT_RANGE = (timedelta(minutes=1), timedelta(days=7))
SPOT_TIMEOUT_RANGE = (timedelta(minutes=5), timedelta(minutes=1440))

TIMING_KEYS = {
    "max_age",
    "drain_deadline",
    "health_check_interval",
    "failure_threshold",
    "launch_timeout",
    "max_batches",
    "sweep_grace",
}
DEFAULTS_KEYS = TIMING_KEYS | {"owner"}
POOL_KEYS = DEFAULTS_KEYS | {"serves", "local", "emr", "sessions", "budget_per_day"}
SESSION_KEYS = {
    "enabled",
    "per_cluster",
    "recycle_after",
    "recycle_heap",
    "recycle_python_mb",
    "statement_timeout",
    "inline_wait",
    "start_timeout",
    "driver_memory",
    "driver_cores",
    "executor_memory",
    "executor_cores",
    "num_executors",
    "conf",
}
SPARK_SIZE = re.compile(r"^\d+[kmgt]?$", re.IGNORECASE)
SERVES_KEYS = {"pipelines", "streams"}
LOCAL_KEYS = {"master", "instance_type", "market"}
MARKETS = {"on_demand": "ON_DEMAND", "spot": "SPOT"}  # as the YAML writes them: as EMR reports them
EMR_KEYS = {
    "release_label",
    "subnet_ids",
    "log_uri",
    "service_role",
    "job_flow_role",
    "idle_timeout",
    "tags",
    "master",
    "core",
    "task",
    "configurations",
    "bootstrap_actions",
    "security_groups",
    "livy_access",
    "deploy_mode",
    "python",
}
EMR_OPTIONAL_KEYS = {"tags", "configurations", "bootstrap_actions", "security_groups", "livy_access", "deploy_mode", "python"}
SECURITY_GROUP_KEYS = {"master", "workers", "service_access", "additional_master", "additional_workers"}
LIVY_ACCESS_KEYS = {"security_groups", "cidrs"}
SECURITY_GROUP = re.compile(r"^sg-[0-9a-f]+$")
BOOTSTRAP_KEYS = {"name", "path", "args"}
DEPLOY_MODES = ("client", "cluster")
# The v1 default service role; EMR deprecates it (the v2 role is EMR_DefaultRole_V2).
V1_SERVICE_ROLE = "EMR_DefaultRole"
# Provisioning and bootstrapping after the capacity arrived: a launch timeout must leave this after
# the task fleet's spot timeout, or a cluster that falls back to on-demand is declared DEAD while booting.
BOOT_AFTER_CAPACITY = timedelta(minutes=10)
ON_DEMAND_FLEET_KEYS = {"instance_types", "capacity"}
TASK_FLEET_KEYS = {"instance_types", "capacity", "spot_timeout", "allocation_strategy"}
INSTANCE_TYPE_KEYS = {"type", "weight", "ebs_gb"}
DEFAULT_TIMINGS: dict[str, Any] = {
    "max_age": "6h",
    "drain_deadline": "30m",
    "health_check_interval": "15s",
    "failure_threshold": 3,
    "launch_timeout": "20m",
    "max_batches": 2,
    "sweep_grace": "15m",
}


def fleet_dag_id(pool: str) -> str:
    """The DAG that keeps a pool supplied with clusters (``fleet_<pool>``)."""
    return f"fleet_{pool}"


def airflow_pool(pool: str) -> str:
    """The Airflow pool of a cluster pool's batch tasks: its slots (``max_batches``) count
    deferred tasks too, so no more batches run on the cluster at once than it can take."""
    return f"spotlake_{pool}"


# One priority for every task of a cluster pool's Airflow pool (windows, reconciliation,
# maintenance). Airflow gives a free slot to the waiting task of highest priority and, among
# equals, of the oldest logical date, so no task waits behind newer ones. With windows above the
# others, every-minute windows that kept the pool full starved the rest: a reconciliation never
# started, and one whose batch had already ended waited for a slot to finish, keeping its job
# SUBMITTED and its draining cluster running. A run without a logical date (triggered from the CLI
# or the API) would sort after every dated one and starve the same way: the weight rule
# (operators/priority.py, registered by the Airflow plugin) puts any run that is not a scheduled
# window or a backfill one above.
POOL_TASK_PRIORITY = 100
POOL_TASK_WEIGHT_RULE = "operators.priority.PoolTaskPriority"


def pool_task_args(pool: str) -> dict[str, Any]:
    """An operator's Airflow pool and priority for a batch task on cluster pool ``pool``."""
    return {"pool": airflow_pool(pool), "priority_weight": POOL_TASK_PRIORITY, "weight_rule": POOL_TASK_WEIGHT_RULE}


def pools_path() -> Path:
    return Path(os.environ.get("SPOTLAKE_POOLS", DEFAULT_POOLS))


def provider_name() -> str:
    """The cluster provider in use: ``SPOTLAKE_PROVIDER`` (default ``local``)."""
    name = os.environ.get("SPOTLAKE_PROVIDER", "local").strip().lower() or "local"
    if name not in PROVIDERS:
        raise ConfigError(f"SPOTLAKE_PROVIDER={name!r} is not a cluster provider; set it to one of {', '.join(PROVIDERS)}")
    return name


@dataclass(frozen=True)
class InstanceType:
    type: str
    weight: int = 1
    ebs_gb: int | None = None


@dataclass(frozen=True)
class InstanceFleet:
    """One EMR instance fleet: MASTER and CORE on demand, TASK on spot."""

    role: str
    instance_types: tuple[InstanceType, ...]
    capacity: int
    spot_timeout: timedelta | None = None
    allocation_strategy: str = "capacity-optimized"

    @property
    def spot(self) -> bool:
        return self.role == "TASK"


@dataclass(frozen=True)
class EmrShape:
    release_label: str
    subnet_ids: tuple[str, ...]
    log_uri: str
    service_role: str
    job_flow_role: str
    idle_timeout: timedelta
    master: InstanceFleet
    core: InstanceFleet
    task: InstanceFleet
    tags: dict[str, str] = field(default_factory=dict)
    # EMR classifications, sent as they are, over spotlake's own (see providers/emr.py)
    configurations: tuple[dict[str, Any], ...] = ()
    bootstrap_actions: tuple[BootstrapAction, ...] = ()
    security_groups: SecurityGroups | None = None
    livy_access: LivyAccess | None = None
    # client: the Spark driver runs in Livy's process on the primary node (on demand); cluster: in
    # a YARN container, which node labels keep on the on-demand core nodes.
    deploy_mode: str = "client"
    python: str = "/usr/bin/python3.11"  # the interpreter the jobs' Python archive is built for


@dataclass(frozen=True)
class BootstrapAction:
    name: str
    path: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class SecurityGroups:
    """EMR-managed security groups of the cluster; ``master`` must admit the Airflow workers on
    Livy's port 8998 (docs/deploying-to-aws.md)."""

    master: str | None = None
    workers: str | None = None
    service_access: str | None = None
    additional_master: tuple[str, ...] = ()
    additional_workers: tuple[str, ...] = ()


@dataclass(frozen=True)
class LivyAccess:
    """Who may reach Livy's port 8998 on the pool's primary node: the Airflow workers' and
    triggerer's security groups and CIDR blocks, nobody else. ``python -m spotlake.aws_setup``
    makes the pool's Livy security group with exactly these rules; the EMR provider adds it to
    every cluster's primary node (docs/deploying-to-aws.md, Network)."""

    security_groups: tuple[str, ...] = ()
    cidrs: tuple[str, ...] = ()


@dataclass(frozen=True)
class LocalShape:
    """A local cluster: one Livy server whose Spark runs at ``master``. The cost ledger
    (:mod:`spotlake.ledger`) counts it as one instance of ``instance_type`` on ``market``
    (``ON_DEMAND`` or ``SPOT``), priced from config/prices.yaml as if EMR ran it."""

    master: str
    instance_type: str = "m5.xlarge"
    market: str = "ON_DEMAND"


@dataclass(frozen=True)
class SessionSettings:
    """How a pool runs windows in long-lived Livy sessions (:mod:`spotlake.sessions`).

    ``enabled`` false: every job of the pool is its own Livy batch. ``per_cluster`` sessions per
    cluster, each running one statement (window) at a time; a session is replaced after
    ``recycle_after`` windows, when it grew past ``recycle_heap`` (driver heap live after GC, share of
    its maximum) or ``recycle_python_mb`` (its Python process), when the job code changes, or when it
    died. A statement running past
    ``statement_timeout`` is cancelled, its session replaced and its window re-queued. The task waits
    up to ``inline_wait`` for its statement before it defers; a session has ``start_timeout`` to
    become idle. The sizes and ``conf`` are the session's Spark settings (Livy's driverMemory,
    executorMemory, numExecutors...; ``conf`` e.g. spark.dynamicAllocation.enabled).
    """

    enabled: bool = True
    per_cluster: int = 2
    recycle_after: int = 500
    recycle_heap: float = 0.8
    recycle_python_mb: int = 2048
    statement_timeout: timedelta = timedelta(minutes=30)
    inline_wait: timedelta = timedelta(seconds=20)
    start_timeout: timedelta = timedelta(minutes=5)
    driver_memory: str | None = None
    driver_cores: int | None = None
    executor_memory: str | None = None
    executor_cores: int | None = None
    num_executors: int | None = None
    conf: tuple[tuple[str, str], ...] = ()

    def livy_body(self) -> dict[str, Any]:
        """The sizes of a new session, as Livy's ``POST /sessions`` names them."""
        body: dict[str, Any] = {}
        for key, name in (
            ("driver_memory", "driverMemory"),
            ("driver_cores", "driverCores"),
            ("executor_memory", "executorMemory"),
            ("executor_cores", "executorCores"),
            ("num_executors", "numExecutors"),
        ):
            if getattr(self, key) is not None:
                body[name] = getattr(self, key)
        return body


@dataclass(frozen=True)
class PoolConfig:
    name: str
    max_age: timedelta
    drain_deadline: timedelta
    health_check_interval: timedelta
    failure_threshold: int
    launch_timeout: timedelta
    max_batches: int = 2
    # A cluster running under the project's tags that the registry does not run is terminated
    # once this old (see spotlake.fleet.Fleet.sweep).
    sweep_grace: timedelta = timedelta(minutes=15)
    # The pool's daily spend (instance-hours × config/prices.yaml, UTC days) above which the
    # alerts raise ``pool:<name>:budget``; None: no budget.
    budget_per_day: float | None = None
    serves_pipelines: tuple[str, ...] = ()
    serves_streams: tuple[str, ...] = ()
    local: LocalShape | None = None
    emr: EmrShape | None = None
    sessions: SessionSettings = field(default_factory=SessionSettings)
    owner: str = DEFAULT_OWNER  # the Airflow owner of the pool's fleet DAG

    def serves_pipeline(self, pipeline: str) -> bool:
        return any(fnmatch.fnmatchcase(pipeline, pattern) for pattern in self.serves_pipelines)

    @property
    def dag_id(self) -> str:
        return fleet_dag_id(self.name)

    @property
    def airflow_pool(self) -> str:
        return airflow_pool(self.name)


@dataclass(frozen=True)
class PoolsConfig:
    path: Path
    provider: str
    pools: tuple[PoolConfig, ...]

    def get(self, name: str) -> PoolConfig:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise ConfigError(
            f"{self.path}: no pool named '{name}'; defined pools: {', '.join(p.name for p in self.pools)} "
            "— add it under 'pools' or fix the name"
        )

    def names(self) -> list[str]:
        return [p.name for p in self.pools]


def load(path: Path | None = None, provider: str | None = None) -> PoolsConfig:
    path = path or pools_path()
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; create it (see config/pools.yaml in the project)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse(raw, path, provider or provider_name())


def parse(raw: Any, path: Path, provider: str = "local") -> PoolsConfig:
    where = str(path)
    raw = _mapping(raw, where)
    _unknown_keys(raw, {"defaults", "pools"}, where)
    defaults = _mapping(raw.get("defaults") or {}, f"{where}: defaults")
    _unknown_keys(defaults, DEFAULTS_KEYS, f"{where}: defaults")
    if "owner" in defaults:
        owner(defaults["owner"], f"{where}: defaults.owner")
    entries = raw.get("pools")
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"{where}: 'pools' must be a mapping of pool name to pool settings, with at least one pool")
    pools = tuple(_pool(name, entry, f"{where}: pools.{name}", defaults, provider) for name, entry in entries.items())
    return PoolsConfig(path=path, provider=provider, pools=pools)


def check_pipelines(pools: PoolsConfig, pipelines: PipelinesConfig) -> None:
    """Every pipeline's pool exists and lists the pipeline under ``serves.pipelines``."""
    for pipeline in pipelines.pipelines:
        where = f"{pipelines.path}: pipeline {pipeline.name}"
        if pipeline.pool not in pools.names():
            raise ConfigError(
                f"{where}: pool '{pipeline.pool}' is not defined in {pools.path}; defined pools: "
                f"{', '.join(pools.names())} — add the pool or change the pipeline's pool"
            )
        if not pools.get(pipeline.pool).serves_pipeline(pipeline.name):
            raise ConfigError(
                f"{where}: runs on pool '{pipeline.pool}', but {pools.path}: pools.{pipeline.pool}.serves."
                f"pipelines does not list it; add '{pipeline.name}' (or a pattern such as "
                f"'{pipeline.name.split('_')[0]}_*') there"
            )


def _pool(name: Any, entry: Any, where: str, defaults: dict[str, Any], provider: str) -> PoolConfig:
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"{where}: pool names are lower-case letters, digits and _ (got {name!r}); rename it")
    entry = _mapping(entry or {}, where)
    _unknown_keys(entry, POOL_KEYS, where)
    timing = {**DEFAULT_TIMINGS, **defaults, **{k: v for k, v in entry.items() if k in TIMING_KEYS}}
    durations = {
        key: parse_duration(timing[key], f"{where}.{key}")
        for key in ("max_age", "drain_deadline", "health_check_interval", "launch_timeout", "sweep_grace")
    }
    for key, value in durations.items():
        if value <= timedelta(0):
            raise ConfigError(f"{where}.{key}: must be longer than zero; write e.g. 30s, 15m or 6h")
    threshold = timing["failure_threshold"]
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
        raise ConfigError(
            f"{where}.failure_threshold: {threshold!r} is not a positive integer; it is the number of "
            "consecutive failed health checks before a cluster is declared DEAD (e.g. 3)"
        )
    max_batches = timing["max_batches"]
    if not isinstance(max_batches, int) or isinstance(max_batches, bool) or max_batches < 1:
        raise ConfigError(
            f"{where}.max_batches: {max_batches!r} is not a positive integer; it is how many batches the "
            "pool's cluster runs at once (its Airflow pool's slots), e.g. 2"
        )
    serves = _mapping(entry.get("serves") or {}, f"{where}.serves")
    _unknown_keys(serves, SERVES_KEYS, f"{where}.serves")
    local = _local(entry["local"], f"{where}.local") if entry.get("local") is not None else None
    emr = _emr(entry["emr"], f"{where}.emr") if entry.get("emr") is not None else None
    if emr is not None and provider == "emr":
        spot = emr.task.spot_timeout or timedelta(minutes=10)
        if durations["launch_timeout"] < spot + BOOT_AFTER_CAPACITY:
            raise ConfigError(
                f"{where}.launch_timeout: {timing['launch_timeout']} leaves no time to boot after the task fleet's "
                f"spot_timeout ({int(spot.total_seconds() // 60)}m), when EMR falls back to on-demand: such a cluster "
                f"would be declared DEAD while it boots. Set launch_timeout to at least "
                f"{int((spot + BOOT_AFTER_CAPACITY).total_seconds() // 60)}m, or shorten spot_timeout"
            )
    if (provider == "local" and local is None) or (provider == "emr" and emr is None):
        raise ConfigError(
            f"{where}: SPOTLAKE_PROVIDER is '{provider}' but the pool has no '{provider}' section; "
            f"describe the pool's {provider} cluster shape there"
        )
    sessions = _sessions(entry.get("sessions"), f"{where}.sessions", max_batches)
    budget = entry.get("budget_per_day")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0):
        raise ConfigError(
            f"{where}.budget_per_day: {budget!r} is not an amount above 0; write the pool's daily spend limit in the "
            "currency of config/prices.yaml (e.g. 25 for USD 25 a day), or remove it for no budget"
        )
    return PoolConfig(
        budget_per_day=float(budget) if budget is not None else None,
        name=name,
        owner=owner(entry.get("owner", defaults.get("owner", DEFAULT_OWNER)), f"{where}.owner"),
        failure_threshold=threshold,
        max_batches=max_batches,
        sessions=sessions,
        serves_pipelines=_names(serves.get("pipelines"), f"{where}.serves.pipelines"),
        serves_streams=_names(serves.get("streams"), f"{where}.serves.streams"),
        local=local,
        emr=emr,
        **durations,
    )


def _names(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: expected a list of names (patterns such as 'shop_*' allowed)")
    return tuple(value)


def _share(value: Any, where: str) -> float:
    """A share written as a percentage (``80%``) or a fraction (``0.8``), above 0 and at most 1."""
    text = str(value).strip()
    try:
        share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        share = -1.0
    if not 0 < share <= 1 or isinstance(value, bool):
        raise ConfigError(f"{where}: {value!r} is not a share of the driver's heap; write e.g. 80% or 0.8")
    return share


def _positive_int(value: Any, where: str, meaning: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{where}: {value!r} is not a positive integer; it is {meaning}")
    return value


def _sessions(entry: Any, where: str, max_batches: int) -> SessionSettings:
    """``sessions:`` of a pool; ``per_cluster`` defaults to the pool's ``max_batches``."""
    entry = _mapping(entry or {}, where)
    _unknown_keys(entry, SESSION_KEYS, where)
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}.enabled: {enabled!r} is not true or false")
    durations = {}
    for key, default in (("statement_timeout", "30m"), ("inline_wait", "20s"), ("start_timeout", "5m")):
        durations[key] = parse_duration(entry.get(key, default), f"{where}.{key}")
    if durations["statement_timeout"] <= timedelta(0) or durations["start_timeout"] <= timedelta(0):
        raise ConfigError(f"{where}: statement_timeout and start_timeout must be longer than zero (e.g. 30m, 5m)")
    sizes: dict[str, Any] = {}
    for key in ("driver_memory", "executor_memory"):
        if entry.get(key) is not None:
            value = str(entry[key])
            if not SPARK_SIZE.match(value):
                raise ConfigError(f"{where}.{key}: '{value}' is not a Spark memory size; write e.g. 1g or 768m")
            sizes[key] = value
    for key in ("driver_cores", "executor_cores", "num_executors"):
        if entry.get(key) is not None:
            sizes[key] = _positive_int(entry[key], f"{where}.{key}", "a Spark size (cores or executors)")
    conf = _mapping(entry.get("conf") or {}, f"{where}.conf")
    return SessionSettings(
        enabled=enabled,
        per_cluster=_positive_int(
            entry.get("per_cluster", max_batches),
            f"{where}.per_cluster",
            "how many long-lived sessions each cluster of the pool keeps (e.g. 2)",
        ),
        recycle_after=_positive_int(
            entry.get("recycle_after", 500),
            f"{where}.recycle_after",
            "how many windows a session runs before it is replaced (e.g. 500)",
        ),
        recycle_heap=_share(entry.get("recycle_heap", "80%"), f"{where}.recycle_heap"),
        recycle_python_mb=_positive_int(
            entry.get("recycle_python_mb", 2048),
            f"{where}.recycle_python_mb",
            "the session's Python process size in MiB that gets it replaced (e.g. 2048)",
        ),
        conf=tuple(sorted((str(k), str(v)) for k, v in conf.items())),
        statement_timeout=durations["statement_timeout"],
        inline_wait=durations["inline_wait"],
        start_timeout=durations["start_timeout"],
        **sizes,
    )


def _local(entry: Any, where: str) -> LocalShape:
    entry = _mapping(entry, where)
    _unknown_keys(entry, LOCAL_KEYS, where)
    master = str(entry.get("master", "local[2]"))
    if not LOCAL_MASTER.match(master):
        raise ConfigError(f"{where}.master: '{master}' is not a local Spark master; write local[N] or local[*]")
    instance_type = str(entry.get("instance_type", "m5.xlarge"))
    if not INSTANCE_TYPE.match(instance_type):
        raise ConfigError(f"{where}.instance_type: '{instance_type}' is not an EC2 instance type; write e.g. m5.xlarge")
    market = str(entry.get("market", "on_demand"))
    if market not in MARKETS:
        raise ConfigError(f"{where}.market: '{market}' is not a market; write on_demand or spot")
    return LocalShape(master=master, instance_type=instance_type, market=MARKETS[market])


def _emr(entry: Any, where: str) -> EmrShape:
    entry = _mapping(entry, where)
    _unknown_keys(entry, EMR_KEYS, where)
    missing = sorted(k for k in EMR_KEYS - EMR_OPTIONAL_KEYS if k not in entry)
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}; every EMR pool sets them")
    label = str(entry["release_label"])
    if not RELEASE_LABEL.match(label):
        raise ConfigError(
            f"{where}.release_label: '{label}' is not an EMR 7.x release label; the Spark jobs need "
            "Spark 3.5, so write e.g. emr-7.5.0"
        )
    subnets = entry["subnet_ids"]
    if not isinstance(subnets, list) or not subnets or not all(isinstance(s, str) and SUBNET.match(s) for s in subnets):
        raise ConfigError(
            f"{where}.subnet_ids: expected a non-empty list of subnet ids (subnet-...); list several "
            "subnets so EMR can place instance fleets where spot capacity is"
        )
    log_uri = str(entry["log_uri"])
    if not log_uri.startswith(("s3://", "s3n://")):
        raise ConfigError(f"{where}.log_uri: '{log_uri}' is not an S3 location; write s3://bucket/prefix/")
    idle = parse_duration(entry["idle_timeout"], f"{where}.idle_timeout")
    if not IDLE_TIMEOUT_RANGE[0] <= idle <= IDLE_TIMEOUT_RANGE[1]:
        raise ConfigError(f"{where}.idle_timeout: EMR accepts 1m to 7d; got {entry['idle_timeout']}")
    tags = _mapping(entry.get("tags") or {}, f"{where}.tags")
    for key in tags:
        if str(key).startswith("spotlake:"):
            raise ConfigError(f"{where}.tags.{key}: tags starting with 'spotlake:' are the fleet's own; rename it")
    service_role = _text(entry["service_role"], f"{where}.service_role")
    if service_role.rsplit("/", 1)[-1] == V1_SERVICE_ROLE:
        raise ConfigError(
            f"{where}.service_role: {V1_SERVICE_ROLE} is EMR's deprecated v1 service role; use the v2 role "
            "EMR_DefaultRole_V2 (`aws emr create-default-roles` creates it; policy AmazonEMRServicePolicy_v2). "
            "spotlake tags every cluster for-use-with-amazon-emr-managed-policies=true as the v2 policy requires"
        )
    deploy_mode = str(entry.get("deploy_mode", "client"))
    if deploy_mode not in DEPLOY_MODES:
        raise ConfigError(f"{where}.deploy_mode: '{deploy_mode}' is not one of {', '.join(DEPLOY_MODES)}")
    python = str(entry.get("python", "/usr/bin/python3.11"))
    if not python.startswith("/"):
        raise ConfigError(f"{where}.python: '{python}' is not an absolute path of a Python 3.11 interpreter")
    return EmrShape(
        release_label=label,
        subnet_ids=tuple(subnets),
        log_uri=log_uri,
        service_role=service_role,
        job_flow_role=_text(entry["job_flow_role"], f"{where}.job_flow_role"),
        idle_timeout=idle,
        master=_fleet(entry["master"], f"{where}.master", "MASTER"),
        core=_fleet(entry["core"], f"{where}.core", "CORE"),
        task=_fleet(entry["task"], f"{where}.task", "TASK"),
        tags={str(k): str(v) for k, v in tags.items()},
        configurations=_configurations(entry.get("configurations") or [], f"{where}.configurations"),
        bootstrap_actions=_bootstrap_actions(entry.get("bootstrap_actions") or [], f"{where}.bootstrap_actions"),
        security_groups=_security_groups(entry["security_groups"], f"{where}.security_groups")
        if entry.get("security_groups")
        else None,
        livy_access=_livy_access(entry.get("livy_access"), f"{where}.livy_access"),
        deploy_mode=deploy_mode,
        python=python,
    )


def _configurations(value: Any, where: str) -> tuple[dict[str, Any], ...]:
    """EMR classifications as RunJobFlow takes them: ``{Classification, Properties, Configurations}``."""
    if not isinstance(value, list):
        raise ConfigError(
            f"{where}: expected a list of EMR classifications such as "
            "[{Classification: spark-defaults, Properties: {spark.executor.memory: 4g}}]"
        )
    out = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        item = _mapping(item, at)
        _unknown_keys(item, {"Classification", "Properties", "Configurations"}, at)
        name = item.get("Classification")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{at}.Classification: expected a classification name such as spark-defaults")
        properties = _mapping(item.get("Properties") or {}, f"{at}.Properties")
        for key, prop in properties.items():
            if isinstance(prop, (dict, list)) or prop is None:
                raise ConfigError(f"{at}.Properties.{key}: expected a string, number or boolean, got {prop!r}")
        config: dict[str, Any] = {
            "Classification": name,
            "Properties": {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in properties.items()},
        }
        if item.get("Configurations"):
            config["Configurations"] = list(_configurations(item["Configurations"], f"{at}.Configurations"))
        out.append(config)
    return tuple(out)


def _bootstrap_actions(value: Any, where: str) -> tuple[BootstrapAction, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of {{name, path: s3://..., args: [...]}}")
    if len(value) > 16:
        raise ConfigError(f"{where}: EMR runs at most 16 bootstrap actions; got {len(value)}")
    actions = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        item = _mapping(item, at)
        _unknown_keys(item, BOOTSTRAP_KEYS, at)
        path = item.get("path")
        if not isinstance(path, str) or not path.startswith("s3://"):
            raise ConfigError(f"{at}.path: {path!r} is not an S3 location of a script; write s3://bucket/key.sh")
        args = item.get("args") or []
        if not isinstance(args, list) or not all(isinstance(a, (str, int, float)) for a in args):
            raise ConfigError(f"{at}.args: expected a list of strings")
        actions.append(BootstrapAction(name=_text(item.get("name"), f"{at}.name"), path=path, args=tuple(str(a) for a in args)))
    return tuple(actions)


def _livy_access(value: Any, where: str) -> LivyAccess:
    """``emr.livy_access``: required, since Livy runs any code it is sent as the cluster's role."""
    if not value:
        raise ConfigError(
            f"{where}: required: Livy on the primary node runs whatever code it is sent, as the cluster's "
            "instance role, so only the Airflow workers and triggerer may reach its port 8998; name their "
            "security groups (security_groups: [sg-...]) or CIDR blocks (cidrs: [10.0.0.0/24])"
        )
    value = _mapping(value, where)
    _unknown_keys(value, LIVY_ACCESS_KEYS, where)
    groups = value.get("security_groups") or []
    if not isinstance(groups, list) or not all(isinstance(g, str) and SECURITY_GROUP.match(g) for g in groups):
        raise ConfigError(f"{where}.security_groups: expected a list of security group ids (sg-...)")
    cidrs = value.get("cidrs") or []
    if not isinstance(cidrs, list):
        raise ConfigError(f"{where}.cidrs: expected a list of CIDR blocks such as 10.0.0.0/24")
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(str(cidr), strict=True)
        except ValueError:
            raise ConfigError(f"{where}.cidrs: {cidr!r} is not a CIDR block (e.g. 10.0.0.0/24, no host bits)") from None
        if network.prefixlen < (8 if network.version == 4 else 32):
            raise ConfigError(
                f"{where}.cidrs: {cidr} admits far more than the Airflow workers to Livy, which runs any code it is "
                "sent as the cluster's role; name their security group or subnet instead (at most a /8, or /32 for IPv6)"
            )
    if not groups and not cidrs:
        raise ConfigError(f"{where}: name at least one security group or CIDR block of the Airflow workers")
    # Canonical form (EC2 answers with it), so the rules compare equal to what EC2 holds.
    return LivyAccess(security_groups=tuple(groups), cidrs=tuple(str(ipaddress.ip_network(str(c))) for c in cidrs))


def _security_groups(value: Any, where: str) -> SecurityGroups:
    value = _mapping(value, where)
    _unknown_keys(value, SECURITY_GROUP_KEYS, where)

    def group(key: str) -> str | None:
        sg = value.get(key)
        if sg is not None and (not isinstance(sg, str) or not SECURITY_GROUP.match(sg)):
            raise ConfigError(f"{where}.{key}: {sg!r} is not a security group id (sg-...)")
        return sg

    def groups(key: str) -> tuple[str, ...]:
        sgs = value.get(key) or []
        if not isinstance(sgs, list) or not all(isinstance(s, str) and SECURITY_GROUP.match(s) for s in sgs):
            raise ConfigError(f"{where}.{key}: expected a list of security group ids (sg-...)")
        return tuple(sgs)

    return SecurityGroups(
        master=group("master"),
        workers=group("workers"),
        service_access=group("service_access"),
        additional_master=groups("additional_master"),
        additional_workers=groups("additional_workers"),
    )


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected a non-empty name (an IAM role name or ARN)")
    return value.strip()


def _fleet(entry: Any, where: str, role: str) -> InstanceFleet:
    entry = _mapping(entry, where)
    _unknown_keys(entry, TASK_FLEET_KEYS if role == "TASK" else ON_DEMAND_FLEET_KEYS, where)
    raw_types = entry.get("instance_types")
    if not isinstance(raw_types, list) or not raw_types:
        raise ConfigError(f"{where}.instance_types: expected a non-empty list such as [{{type: m5.xlarge}}]")
    types = tuple(_instance_type(t, f"{where}.instance_types[{i}]") for i, t in enumerate(raw_types))
    capacity = entry.get("capacity")
    if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
        raise ConfigError(f"{where}.capacity: expected the fleet's target capacity, a positive integer")
    if role == "MASTER" and capacity != 1:
        raise ConfigError(f"{where}.capacity: the master fleet has exactly one instance; set capacity: 1")
    if role != "TASK":
        return InstanceFleet(role=role, instance_types=types, capacity=capacity)
    spot_timeout = parse_duration(entry.get("spot_timeout", "10m"), f"{where}.spot_timeout")
    if not SPOT_TIMEOUT_RANGE[0] <= spot_timeout <= SPOT_TIMEOUT_RANGE[1]:
        raise ConfigError(f"{where}.spot_timeout: EMR accepts 5m to 24h; got {entry.get('spot_timeout')}")
    strategy = str(entry.get("allocation_strategy", "capacity-optimized"))
    if strategy not in ALLOCATION_STRATEGIES:
        raise ConfigError(f"{where}.allocation_strategy: '{strategy}' is not one of {', '.join(ALLOCATION_STRATEGIES)}")
    return InstanceFleet(
        role=role, instance_types=types, capacity=capacity, spot_timeout=spot_timeout, allocation_strategy=strategy
    )


def _instance_type(entry: Any, where: str) -> InstanceType:
    if isinstance(entry, str):
        entry = {"type": entry}
    entry = _mapping(entry, where)
    _unknown_keys(entry, INSTANCE_TYPE_KEYS, where)
    name = entry.get("type")
    if not isinstance(name, str) or not INSTANCE_TYPE.match(name):
        raise ConfigError(f"{where}.type: {name!r} is not an EC2 instance type such as m5.xlarge")
    weight = entry.get("weight", 1)
    if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
        raise ConfigError(f"{where}.weight: expected a positive integer (capacity units of one instance)")
    ebs = entry.get("ebs_gb")
    if ebs is not None and (not isinstance(ebs, int) or isinstance(ebs, bool) or ebs < 1):
        raise ConfigError(f"{where}.ebs_gb: expected a positive integer (GiB of gp3 storage per instance)")
    return InstanceType(type=name, weight=weight, ebs_gb=ebs)

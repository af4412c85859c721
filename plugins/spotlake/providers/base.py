"""What every cluster provider offers the fleet.

A provider launches a pool's cluster under the fleet's cluster id, tells how the
cluster is doing (:class:`ClusterHealth`), gives its Livy endpoint and terminates
it. The fleet (:mod:`spotlake.fleet`) owns every decision and every registry
write; providers only talk to the outside world.
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from spotlake.errors import SpotlakeError

if TYPE_CHECKING:
    from spotlake.pools import PoolConfig
    from spotlake.registry import Cluster


class ProviderError(SpotlakeError):
    """The provider could not do what was asked; the message says what and the fix."""


class LaunchFailed(ProviderError):
    """A cluster could not be launched; no cluster was left behind."""


class Liveness(StrEnum):
    ALIVE = "alive"
    BOOTING = "booting"
    DEAD = "dead"


class Cause(StrEnum):
    """Why a cluster is not alive, as far as the provider can tell."""

    UNREACHABLE = "unreachable"  # a failed check: process gone, Livy not answering
    SPOT_LOSS = "spot-loss"  # spot capacity reclaimed
    INSTANCE_FAILURE = "instance-failure"  # instances lost or never provisioned
    EXTERNAL_TERMINATION = "external-termination"  # someone outside spotlake terminated it
    OWN_TERMINATION = "own-termination"  # spotlake terminated it (rotation, drain, unhealthy)
    IDLE_TERMINATION = "idle-termination"  # auto-terminated when idle / all steps completed
    LAUNCH_FAILURE = "launch-failure"  # bootstrap or validation failed
    OTHER = "other"


class TerminationReason(StrEnum):
    """Why spotlake terminates a cluster; EMR clusters carry it as tag ``spotlake:terminated-by``."""

    ROTATION = "rotation"
    DRAIN_DEADLINE = "drain-deadline"
    UNHEALTHY = "unhealthy"
    LAUNCH_TIMEOUT = "launch-timeout"
    LAUNCH_FAILED = "launch-failed"
    UNTRACKED = "untracked"  # swept: carries the project's tags but the registry does not run it


@dataclass(frozen=True)
class ClusterHealth:
    """One observation of a cluster.

    ``definitive``: the provider says the cluster is gone for good (e.g. EMR reports it
    TERMINATED), so the fleet need not wait for ``failure_threshold`` failed checks.
    ``own_termination``: it is gone because spotlake terminated it.
    """

    liveness: Liveness
    reason: str = ""
    cause: Cause | None = None
    own_termination: bool = False
    definitive: bool = False
    endpoint: str | None = None

    @property
    def alive(self) -> bool:
        return self.liveness == Liveness.ALIVE

    @classmethod
    def ok(cls, endpoint: str, reason: str = "") -> ClusterHealth:
        return cls(Liveness.ALIVE, reason=reason, endpoint=endpoint)

    @classmethod
    def booting(cls, reason: str) -> ClusterHealth:
        return cls(Liveness.BOOTING, reason=reason)

    @classmethod
    def failed(cls, reason: str, cause: Cause = Cause.UNREACHABLE) -> ClusterHealth:
        return cls(Liveness.DEAD, reason=reason, cause=cause)


@dataclass(frozen=True)
class LaunchedCluster:
    """What a launch gave: the provider's id, and the Livy endpoint if already known."""

    cluster_id: str
    provider_id: str
    endpoint: str | None = None


@dataclass(frozen=True)
class RunningCluster:
    """A cluster the provider runs under the project's tags (:meth:`ClusterProvider.running`):
    the fleet's cluster id and pool from its tags, the provider's id, and when it was created."""

    cluster_id: str
    pool: str
    provider_id: str
    created_at: datetime | None
    state: str = ""


@dataclass(frozen=True)
class InstanceUsage:
    """One instance a cluster ran on, as the provider bills it: the EC2 instance type, the market
    (``ON_DEMAND`` or ``SPOT``), the role (``MASTER``, ``CORE``, ``TASK``), and when it started and
    ended (ISO times; ``end`` "" while it runs). What :mod:`spotlake.ledger` prices."""

    instance_type: str
    market: str
    role: str
    start: str
    end: str = ""


def encode_instances(usage: list[InstanceUsage]) -> str:
    """The registry's form of a cluster's instances (:attr:`spotlake.registry.Cluster.instances`)."""
    return json.dumps([[u.instance_type, u.market, u.role, u.start, u.end] for u in usage], separators=(",", ":"))


def decode_instances(text: str) -> list[InstanceUsage]:
    """:func:`encode_instances` read back; "" (never metered) is no instance."""
    if not text:
        return []
    return [InstanceUsage(*(str(v) for v in row)) for row in json.loads(text)]


class ClusterProvider(ABC):
    """Where a pool's clusters come from."""

    name: str

    @abstractmethod
    def launch(self, pool: PoolConfig, cluster_id: str) -> LaunchedCluster:
        """Start a cluster of ``pool``'s shape known by ``cluster_id``.

        Idempotent per ``cluster_id``: a retried launch returns the cluster the first
        attempt created. Raises :class:`LaunchFailed` leaving no cluster behind.
        """

    @abstractmethod
    def health(self, cluster: Cluster) -> ClusterHealth:
        """How the cluster is doing now; never raises for a dead cluster."""

    @abstractmethod
    def endpoint(self, cluster: Cluster) -> str | None:
        """The cluster's Livy endpoint, or None while it is not known yet."""

    @abstractmethod
    def terminate(self, cluster: Cluster, reason: str) -> None:
        """Stop the cluster (idempotent), marking it as stopped by spotlake for ``reason``. The
        provider may stop it later (EMR: TERMINATING for minutes): :meth:`gone` confirms."""

    @abstractmethod
    def gone(self, cluster: Cluster) -> bool:
        """Whether the provider confirms the cluster no longer runs (nothing of it is billed):
        EMR's TERMINATED or TERMINATED_WITH_ERRORS, or a cluster it no longer knows."""

    @abstractmethod
    def running(self, pool: PoolConfig) -> list[RunningCluster]:
        """The clusters of ``pool`` the provider runs (or is starting) under the project's tags and
        this registry's prefix, whatever the registry says: what the fleet's sweep looks at."""

    @abstractmethod
    def instances(self, pool: PoolConfig, cluster: Cluster) -> list[InstanceUsage]:
        """The instances the cluster has run on so far, ended ones included (EMR's ListInstances;
        locally, one instance of the pool's configured type): the cost ledger's instance-hours."""

    @abstractmethod
    def terminate_running(self, found: RunningCluster, reason: str) -> None:
        """Stop a cluster found by :meth:`running` (by the provider's id), as :meth:`terminate`."""


Probe = Callable[[str], str | None]
"""Asks a Livy endpoint whether it answers: None when it does, else why not
(:func:`hooks.livy.probe_livy` in Airflow; injected so the core needs no HTTP client of its own)."""


def provider_for(
    name: str, *, probe: Probe, emr_hook: Callable[[], Any] | None = None, ec2_client: Callable[[], Any] | None = None
) -> ClusterProvider:
    """The provider called ``name`` (``local`` or ``emr``; see :func:`spotlake.pools.provider_name`).
    ``emr_hook`` makes the EMR provider's Airflow EmrHook, ``ec2_client`` its EC2 client (for the
    pool's Livy security group; :func:`hooks.aws.cluster_provider` passes both)."""
    if name == "local":
        # Local clusters are the local stack's (the developer tools, never deployed): found by name,
        # so that the core does not depend on them.
        local = importlib.import_module("spotlake_dev.localstack.provider")
        provider: ClusterProvider = local.LocalClusterProvider(probe=probe)
        return provider
    if name == "emr":
        from spotlake.providers.emr import EmrProvider

        return EmrProvider(emr_hook, probe=probe, ec2_client=ec2_client)
    raise ProviderError(f"no cluster provider named '{name}'; use local or emr (SPOTLAKE_PROVIDER)")

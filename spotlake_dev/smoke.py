"""The smoke test for an AWS account: one command that launches one cluster of the cheapest pool on
EMR, extracts one window of a pipeline's table, runs a click stream for a minute, checks what both
wrote, and removes everything it created.

    python -m spotlake_dev.smoke --pipeline shop_orders --artifacts s3://<bucket>/spotlake/artifacts \\
        --kafka-bootstrap <brokers> --region <region>                                    # needs AWS
    python -m spotlake_dev.smoke --dry-run --pipeline shop_orders                            # moto, in-process

It first prints its cost estimate (:data:`PRICES`, on-demand list prices) and asks before it
launches anything. Everything it writes is its own, never a deployment's:

- the state tables under a fresh prefix ``spotlake-smoke-<random>`` (:mod:`spotlake.aws_setup`);
  a prefix whose tables exist is refused, so a deployment's tables are never touched or deleted;
- the cluster as pool ``<pool>_smoke_<token>`` (its own EMR name and tags, a 30-minute idle
  timeout at most as a backstop), launched and promoted by :class:`spotlake.fleet.Fleet` through
  :class:`spotlake.providers.emr.EmrProvider`;
- the window as pipeline ``<pipeline>_smoke_<token>``: its own lake tables in the lake's namespace
  and its own lake state, the job document built by the extraction operator's
  :func:`~operators.extraction.extraction_document` and the artifacts' ``request``;
- the stream with its own checkpoint, lake and dead-letter locations (``…-smoke-<token>``) and its
  own sink schema ``<schema>_smoke_<token>``, which it creates with the sink's migrations.

The teardown runs whatever happened (a failed step, Ctrl-C): it stops the stream batch, terminates
the cluster, drops the smoke lake tables and the stream's outputs and sink schema, deletes the state
tables, and prints what it removed and, for anything it could not remove, the command to remove it.

``--dry-run`` sends nothing to AWS. Every AWS request the run makes is checked by botocore's own
parameter validation (and RunJobFlow by :func:`spotlake.providers.emr.validate_request`, EMR's rules
that moto does not enforce), then answered by moto: the moto server of ``--endpoint-url``, or moto
inside this process. The Livy calls are printed, not sent; the databases are not reached.

Run it where Airflow's workers run: it needs their network path to the clusters' Livy port 8998, the
source database (the row count check) and the sink database (the stream's schema).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spark_jobs.common.contract import decode_job, encode_job
from spotlake import artifacts, aws_setup, job_dependencies, pools, streaming
from spotlake import config as pipelines_config
from spotlake.errors import SpotlakeError
from spotlake.fleet import span
from spotlake.lake import split_s3
from spotlake.providers.emr import EmrProvider
from spotlake.registry import Cluster, ClusterState, Registry

# ---------------------------------------------------------------- prices (an estimate's data)

# On-demand list prices in USD per instance-hour, us-east-1, Linux: (EC2, the EMR uplift on top), as
# AWS published them around mid-2024; not fetched by this tool (it runs without the pricing API):
# check them against PRICES_SOURCE before relying on the estimate.
# Spot capacity (the task fleet) usually costs much less; other regions charge other prices.
# An instance type missing here is reported by the estimate, never guessed: add it with its prices.
PRICES_TAKEN = "2024-06"
PRICES_REGION = "us-east-1"
PRICES_SOURCE = "https://aws.amazon.com/ec2/pricing/on-demand/ and https://aws.amazon.com/emr/pricing/"
PRICES: dict[str, tuple[float, float]] = {
    "m5.xlarge": (0.192, 0.048),
    "m5a.xlarge": (0.172, 0.043),
    "m6i.xlarge": (0.192, 0.048),
    "r5.xlarge": (0.252, 0.063),
    "r5.2xlarge": (0.504, 0.126),
    "r5a.2xlarge": (0.452, 0.113),
    "r6i.2xlarge": (0.504, 0.126),
    "r5.4xlarge": (1.008, 0.252),
}
# What the estimate assumes the run takes, in minutes (EMR and EC2 bill per second).
ASSUMED_MINUTES = {"launch": 15, "window": 5, "stream": 3, "teardown": 2}
# The smoke cluster's idle auto-termination: a backstop should the teardown itself fail.
SMOKE_IDLE_TIMEOUT = timedelta(minutes=30)
LIVY_GROUP_WAIT_S = 900.0  # how long the teardown waits for EMR to let the Livy group go
TERMINATED_BY = "smoke-test"
TERMINAL_BATCH_STATES = frozenset({"success", "dead", "killed", "error"})
DEFAULT_STREAM = "clicks"
PREFIX_PATTERN = re.compile(r"^spotlake-smoke-([0-9a-f]+)$")
DRY_RUN_BOOTSTRAP = "b-1.smoke.invalid:9092"


class SmokeError(SpotlakeError):
    """A step of the smoke test failed; the message says what and, where it can, the fix."""


class RequestInvalid(SmokeError):
    """An AWS request failed botocore's parameter validation or EMR's rules."""


# ---------------------------------------------------------------- the cost estimate


@dataclasses.dataclass(frozen=True)
class FleetCost:
    role: str
    capacity: int
    spot: bool
    instances: tuple[int, int]  # fewest and most instances the fleet's types need
    types: tuple[str, ...]
    low: float | None  # USD/hour of the cheapest known type at the capacity; None: no known type
    high: float | None
    unknown: tuple[str, ...]

    def line(self) -> str:
        few, many = self.instances
        count = f"{few} instance{'s' if few > 1 else ''}" if few == many else f"{few}-{many} instances"
        how = (
            f"capacity {self.capacity} unit{'s' if self.capacity > 1 else ''}, spot; at on-demand prices"
            if self.spot
            else "on demand"
        )
        price = "no price" if self.low is None else _money_range(self.low, self.high, "/h")
        text = f"{self.role:<6} {count:<12} ({' or '.join(self.types)}; {how})  {price}"
        if self.unknown:
            text += f"; no price for {', '.join(self.unknown)} (left out of the estimate)"
        return text


@dataclasses.dataclass(frozen=True)
class CostEstimate:
    pool: str
    fleets: tuple[FleetCost, ...]
    minutes: dict[str, int]
    idle_timeout: timedelta

    @property
    def unknown(self) -> tuple[str, ...]:
        return tuple(sorted({t for f in self.fleets for t in f.unknown}))

    @property
    def complete(self) -> bool:
        """Every fleet has at least one priced instance type."""
        return all(f.low is not None for f in self.fleets)

    @property
    def hourly(self) -> tuple[float, float] | None:
        if not self.complete:
            return None
        return (sum(f.low for f in self.fleets if f.low is not None), sum(f.high for f in self.fleets if f.high is not None))

    @property
    def hours(self) -> float:
        return sum(self.minutes.values()) / 60

    @property
    def total(self) -> tuple[float, float] | None:
        hourly = self.hourly
        return None if hourly is None else (hourly[0] * self.hours, hourly[1] * self.hours)

    def lines(self, region: str | None) -> list[str]:
        where = f"; prices in {region} differ" if region and region != PRICES_REGION else ""
        out = [
            f"Cost estimate for pool {self.pool}: an ESTIMATE from list prices, not a quote",
            f"  prices: on-demand USD per instance-hour in {PRICES_REGION} (EC2 plus the EMR uplift), "
            f"as published around {PRICES_TAKEN}, not fetched: check {PRICES_SOURCE}{where}",
            *(f"  {f.line()}" for f in self.fleets),
        ]
        spent = ", ".join(f"{k} {v} min" for k, v in self.minutes.items())
        hourly, total = self.hourly, self.total
        if hourly is None or total is None:
            missing = ", ".join(f.role for f in self.fleets if f.low is None)
            out.append(
                f"  cluster: cannot be estimated: no price for any instance type of the {missing} fleet(s); "
                f"add them to PRICES in spotlake_dev/smoke.py ({PRICES_SOURCE})"
            )
            return out
        extra = hourly[1] * self.idle_timeout.total_seconds() / 3600
        out += [
            f"  cluster: {_money_range(*hourly, ' per hour')}",
            f"  time: about {round(self.hours * 60)} min billed ({spent}; assumed, EMR and EC2 bill per second)",
            f"  this run: about {_money_range(*total)}; spot task nodes usually cost less, and the DynamoDB, S3, "
            "Glue and Secrets Manager requests a few cents at most",
            f"  worst case, should the teardown itself fail: the cluster ends itself after "
            f"{int(self.idle_timeout.total_seconds() // 60)} min idle, {_money(extra)} more at most",
        ]
        if self.unknown:
            out.append(f"  unknown instance types (not in the price table): {', '.join(self.unknown)}")
        return out


def _money(value: float) -> str:
    return f"${value:.2f}"


def _money_range(low: float, high: float | None, unit: str = "") -> str:
    high = low if high is None else high
    if abs(high - low) < 0.005:
        return f"${low:.3f}{unit}" if unit == "/h" else f"{_money(low)}{unit}"
    if unit == "/h":
        return f"${low:.3f}-${high:.3f}{unit}"
    return f"{_money(low)}-{_money(high)}{unit}"


def fleet_cost(fleet: pools.InstanceFleet, prices: dict[str, tuple[float, float]]) -> FleetCost:
    """What a fleet costs per hour: for each of its instance types, the instances its capacity
    needs (capacity in weight units / the type's weight, rounded up) at that type's price."""
    known: list[float] = []
    counts: list[int] = []
    unknown: list[str] = []
    for kind in fleet.instance_types:
        instances = math.ceil(fleet.capacity / kind.weight)
        counts.append(instances)
        if kind.type in prices:
            ec2, emr = prices[kind.type]
            known.append(instances * (ec2 + emr))
        else:
            unknown.append(kind.type)
    return FleetCost(
        role=fleet.role,
        capacity=fleet.capacity,
        spot=fleet.spot,
        instances=(min(counts), max(counts)),
        types=tuple(t.type for t in fleet.instance_types),
        low=min(known) if known else None,
        high=max(known) if known else None,
        unknown=tuple(unknown),
    )


def estimate(
    pool: pools.PoolConfig, prices: dict[str, tuple[float, float]] | None = None, minutes: dict[str, int] | None = None
) -> CostEstimate:
    """The smoke test's cost on ``pool``'s EMR shape (master, core and task fleets)."""
    shape = pool.emr
    if shape is None:
        raise SmokeError(f"pool '{pool.name}' has no emr section in config/pools.yaml: nothing to launch on EMR")
    prices = PRICES if prices is None else prices
    return CostEstimate(
        pool=pool.name,
        fleets=tuple(fleet_cost(f, prices) for f in (shape.master, shape.core, shape.task)),
        minutes=dict(ASSUMED_MINUTES if minutes is None else minutes),
        idle_timeout=min(shape.idle_timeout, SMOKE_IDLE_TIMEOUT),
    )


def cheapest_pool(config: pools.PoolsConfig, prices: dict[str, tuple[float, float]] | None = None) -> pools.PoolConfig:
    """The pool whose cluster costs least per hour (upper bound of the estimate); pools whose cost
    cannot be estimated come last, in their order in the file."""

    def cost(pool: pools.PoolConfig) -> float:
        hourly = estimate(pool, prices).hourly
        return math.inf if hourly is None else hourly[1]

    return min(config.pools, key=cost)


# ---------------------------------------------------------------- checked AWS requests


@cache
def _service_model(service: str) -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


def check_request(service: str, operation: str, params: dict[str, Any]) -> None:
    """botocore's own parameter validation of one request (what a real call checks before it is
    sent), and for RunJobFlow EMR's rules that the API model does not carry; RequestInvalid names
    the operation and the fields."""
    from botocore.exceptions import ParamValidationError
    from botocore.validate import validate_parameters

    model = _service_model(service).operation_model(operation)
    try:
        validate_parameters(params, model.input_shape)
    except ParamValidationError as exc:
        raise RequestInvalid(f"{service} {operation} request is invalid: {exc}") from None
    if (service, operation) == ("emr", "RunJobFlow"):
        problems = emr_rule_problems(params)
        if problems:
            raise RequestInvalid(f"emr RunJobFlow request breaks EMR's rules: {'; '.join(problems)}")


def emr_rule_problems(request: dict[str, Any]) -> list[str]:
    """The problems :func:`spotlake.providers.emr.validate_request` finds (none when the
    provider module has no such check)."""
    from spotlake.providers import emr

    rules = getattr(emr, "validate_request", None)
    if rules is None:
        return []
    try:
        found = rules(request)
    except Exception as exc:  # noqa: BLE001 - a rule check that raises is a finding too
        return [str(exc) or type(exc).__name__]
    if not found:
        return []
    return [found] if isinstance(found, str) else [str(p) for p in found]


@dataclasses.dataclass
class Journal:
    """Every AWS request of the run, as checked; printed as it happens when ``show`` is set."""

    say: Callable[[str], None]
    show: bool = False
    verbose: bool = False
    requests: list[tuple[str, str, bool]] = dataclasses.field(default_factory=list)

    def note(self, service: str, operation: str, params: dict[str, Any], sent: bool) -> None:
        self.requests.append((service, operation, sent))
        if not self.show:
            return
        verb = "sent" if sent else "held"
        if operation == "RunJobFlow" or self.verbose:
            self.say(f"      {verb}: {service} {operation}")
            for line in _field_lines(params):
                self.say(f"          {line}")
            return
        text = json.dumps(params, default=str, separators=(",", ":"))
        self.say(f"      {verb}: {service} {operation} {text if len(text) <= 150 else text[:147] + '...'}")


def _field_lines(params: dict[str, Any], at: str = "", depth: int = 0) -> list[str]:
    """A request as one line per field, two levels deep (``Instances.InstanceFleets[0]: {...}``)."""
    lines = []
    for key, value in params.items():
        name = f"{at}.{key}" if at else key
        if depth < 1 and isinstance(value, dict):
            lines += _field_lines(value, name, depth + 1)
        elif depth < 2 and isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines += [f"{name}[{i}]: {json.dumps(v, default=str, separators=(',', ':'))}" for i, v in enumerate(value)]
        else:
            lines.append(f"{name}: {json.dumps(value, default=str, separators=(',', ':'))}")
    return lines


class CheckedClient:
    """A boto3 client whose every request is checked (:func:`check_request`) and noted in the
    journal before it is sent; requests of ``hold`` are checked and noted but not sent."""

    def __init__(self, client: Any, service: str, journal: Journal, hold: frozenset[str] = frozenset()) -> None:
        self._client = client
        self._service = service
        self._journal = journal
        self._hold = hold

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        operation = self._client.meta.method_to_api_mapping.get(name)
        if operation is None:
            return attr  # meta, exceptions, get_waiter, get_paginator

        def call(**params: Any) -> Any:
            check_request(self._service, operation, params)
            held = operation in self._hold
            self._journal.note(self._service, operation, params, sent=not held)
            if held:
                return {}
            return attr(**params)

        return call


class Aws:
    """The run's AWS clients: one region, one endpoint (a moto server in a dry run, or moto in
    this process), each request checked first."""

    def __init__(self, region: str, endpoint_url: str | None, journal: Journal, dry_run: bool) -> None:
        import boto3

        self.region = region
        self.endpoint_url = endpoint_url
        self.journal = journal
        session = boto3.session.Session(region_name=region)
        credentials: dict[str, str] = {}
        if dry_run and session.get_credentials() is None:
            credentials = {"aws_access_key_id": "smoke-dry-run", "aws_secret_access_key": "smoke-dry-run"}
        self._session = boto3.session.Session(region_name=region, **credentials)
        # A dry run writes nothing to S3 (the job code would go to the artifacts bucket).
        self._hold = {"s3": frozenset({"PutObject", "DeleteObjects", "DeleteObject"})} if dry_run else {}
        self._clients: dict[str, CheckedClient] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            raw = self._session.client(service, endpoint_url=self.endpoint_url)
            self._clients[service] = CheckedClient(raw, service, self.journal, self._hold.get(service, frozenset()))
        return self._clients[service]


class _EmrHook:
    """What :class:`~spotlake.providers.emr.EmrProvider` uses of Airflow's EmrHook, over the run's
    own (checked) EMR client: the smoke test runs outside Airflow, with the caller's credentials."""

    def __init__(self, client: Any) -> None:
        self.conn = client

    def get_conn(self) -> Any:
        return self.conn

    def create_job_flow(self, job_flow_overrides: dict[str, Any]) -> dict[str, Any]:
        return self.conn.run_job_flow(**job_flow_overrides)


class SmokeEmrProvider(EmrProvider):
    """The fleet's EMR provider, its every call through the run's checked EMR client."""

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(lambda: _EmrHook(client), **kwargs)


# ---------------------------------------------------------------- Livy as the dry run sees it


@dataclasses.dataclass(frozen=True)
class Probe:
    state: str
    detail: str = ""

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_BATCH_STATES


class PrintedLivy:
    """Livy in a dry run: each call is printed (the batch body as Airflow's Livy provider builds
    and checks it, the job document decoded), none is sent. A window batch "succeeds" at once, a
    stream batch "runs"."""

    def __init__(self, endpoint: str, say: Callable[[str], None], batches: dict[int, str]) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.say = say
        self.batches = batches  # shared: batch id -> state

    def post_batch(self, **kwargs: Any) -> int:
        from airflow.providers.apache.livy.hooks.livy import LivyHook

        body = LivyHook.build_post_batch_body(**kwargs)
        batch_id = len(self.batches)
        self.batches[batch_id] = "running" if "stream" in str(body.get("name", "")) else "success"
        shown = dict(body)
        document = None
        args = list(body.get("args", []))
        if len(args) == 2 and args[0] == "--job":
            document = decode_job(args[1], ValueError)
            shown["args"] = ["--job", f"<{len(args[1])} characters: base64 of the job document below>"]
        self.say(f"      not sent: POST {self.endpoint}/batches (batch {batch_id} here), body:")
        for line in _field_lines(shown):
            self.say(f"          {line}")
        if document is not None:
            self.say("        the job document (--job):")
            for line in _field_lines(document):
                self.say(f"          {line}")
        return batch_id

    def get_batch_state(self, session_id: int | str, retry_args: dict[str, Any] | None = None) -> str:
        return self.batches.get(int(session_id), "dead")

    def probe(self, batch_id: int) -> Probe:
        self.say(f"      not sent: GET {self.endpoint}/batches/{batch_id}/state")
        return Probe(self.batches.get(batch_id, "lost"))

    def error_line(self, batch_id: int) -> str:
        return ""

    def delete(self, batch_id: int) -> None:
        self.say(f"      not sent: DELETE {self.endpoint}/batches/{batch_id}")
        self.batches[batch_id] = "killed"


# ---------------------------------------------------------------- steps, as a person reads them


class Failed(Exception):
    """A step failed (already printed); the run goes on with the teardown."""


@dataclasses.dataclass
class Step:
    number: int
    title: str
    say: Callable[[str], None]
    status: str = "ok"  # ok, warning, skipped, failed
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def note(self) -> str:
        return "; ".join(self.notes)

    def line(self, text: str) -> None:
        self.say(f"    {text}")

    def warn(self, text: str) -> None:
        if self.status != "skipped":
            self.status = "warning"
        self.notes.append(text)
        self.line(f"WARNING: {text}")

    def skip(self, text: str) -> None:
        self.status = "skipped"
        self.notes.append(text)


class Steps:
    def __init__(self, say: Callable[[str], None], clock: Callable[[], float]) -> None:
        self.say = say
        self.clock = clock
        self.done: list[Step] = []

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[Step]:
        step = Step(len(self.done) + 1, title, self.say)
        self.done.append(step)
        self.say(f"{step.number:>2}. {title}")
        started = self.clock()
        try:
            yield step
        except KeyboardInterrupt:
            step.seconds, step.status, step.notes = self.clock() - started, "failed", ["interrupted"]
            self.say(f"    -> INTERRUPTED after {step.seconds:.1f} s")
            raise
        except Exception as exc:
            step.seconds = self.clock() - started
            step.status = "failed"
            step.notes.append(_reason(exc))
            self.say(f"    -> FAILED after {step.seconds:.1f} s: {step.note}")
            raise Failed(step.note) from exc
        step.seconds = self.clock() - started
        said = {"ok": "done", "warning": "done, with a warning", "skipped": f"skipped: {step.note}"}[step.status]
        self.say(f"    -> {said} ({step.seconds:.1f} s)")

    def failed(self) -> list[Step]:
        return [s for s in self.done if s.status == "failed"]


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, SpotlakeError) else text


# ---------------------------------------------------------------- the smoke test


@dataclasses.dataclass(frozen=True)
class Options:
    pool: str | None = None
    pipeline: str | None = None
    stream: str | None = DEFAULT_STREAM
    region: str | None = None
    prefix: str | None = None
    artifacts: str | None = None
    kafka_bootstrap: str | None = None
    dry_run: bool = False
    endpoint_url: str | None = None
    yes: bool = False
    stream_seconds: int = 60
    batch_timeout: timedelta = timedelta(minutes=30)
    verbose: bool = False


def fresh_prefix() -> str:
    return f"spotlake-smoke-{secrets.token_hex(3)}"


def token_of(prefix: str) -> str:
    """The short token naming the run's pool, pipeline, schema and S3 locations."""
    match = PREFIX_PATTERN.match(prefix)
    return match.group(1) if match else hashlib.sha256(prefix.encode()).hexdigest()[:6]


def smoke_uri(uri: str, token: str) -> str:
    """A location beside ``uri`` that is the smoke test's alone (same bucket and folder, so the
    clusters' policy for the stream's locations covers it)."""
    return f"{uri.rstrip('/')}-smoke-{token}"


class Smoke:
    """One smoke run. Collaborators are injected so the steps run against fakes too:
    ``aws`` (the checked clients), ``provider`` (the cluster provider), ``livy_for(endpoint)`` (the
    batch client of :func:`spotlake.jobs.submit_or_reconnect`), ``control_for(endpoint)`` (probe,
    error line, delete of a batch)."""

    def __init__(
        self,
        options: Options,
        *,
        pools_config: pools.PoolsConfig,
        pipelines: pipelines_config.PipelinesConfig,
        streams: streaming.StreamsConfig | None,
        aws: Aws,
        provider: Any,
        livy_for: Callable[[str], Any],
        control_for: Callable[[str], Any],
        say: Callable[[str], None] = print,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        poll: float = 15.0,
    ) -> None:
        self.options = options
        self.dry_run = options.dry_run
        self.say = say
        self.sleep = sleep
        self.clock = clock
        self.poll = poll
        self.aws = aws
        self.provider = provider
        self.livy_for = livy_for
        self.control_for = control_for
        self.prefix = options.prefix or fresh_prefix()
        if hasattr(provider, "registry_prefix"):
            provider.registry_prefix = self.prefix  # its clusters' and Livy group's tags: this run's registry
        self.token = token_of(self.prefix)
        self.region = aws.region
        self.pool = pools_config.get(options.pool) if options.pool else cheapest_pool(pools_config)
        self.estimate = estimate(self.pool)
        shape = self.pool.emr
        assert shape is not None  # estimate() raised otherwise
        self.smoke_pool = dataclasses.replace(
            self.pool,
            name=f"{self.pool.name}_smoke_{self.token}",
            emr=dataclasses.replace(
                shape,
                idle_timeout=min(shape.idle_timeout, SMOKE_IDLE_TIMEOUT),
                tags={**shape.tags, "spotlake-smoke": self.prefix},
            ),
        )
        pipeline = pipelines.get(options.pipeline) if options.pipeline else pipelines.pipelines[0]
        self.pipeline = pipeline
        self.smoke_pipeline = dataclasses.replace(
            pipeline, name=f"{pipeline.name}_smoke_{self.token}", pool=self.smoke_pool.name, initial_load=False
        )
        self.pipelines = dataclasses.replace(pipelines, pipelines=(self.smoke_pipeline,))
        self.stream = streams.get(options.stream) if (streams is not None and options.stream) else None
        self.smoke_stream = (
            None
            if self.stream is None
            else dataclasses.replace(
                self.stream,
                pool=self.smoke_pool.name,
                sink_schema=f"{self.stream.sink_schema}_smoke_{self.token}",
                checkpoint=smoke_uri(self.stream.checkpoint, self.token),
                catalog=self.pipelines.lake,
                lake=dataclasses.replace(
                    self.stream.lake,
                    events=f"{self.stream.lake.events}_smoke_{self.token}",
                    dead_letters=f"{self.stream.lake.dead_letters}_smoke_{self.token}" if self.stream.lake.dead_letters else None,
                )
                if self.stream.lake
                else None,
            )
        )
        self.root = (options.artifacts or artifacts.artifacts_root()).rstrip("/")
        # A dry run answered by moto inside this process: its buckets are empty by construction.
        self.in_process = self.dry_run and not aws.endpoint_url
        self.steps = Steps(say, clock)
        self.registry = Registry(aws.client("dynamodb"), self.prefix)
        # What the run created, for the teardown.
        self.tables: list[str] = []
        self.cluster_id = ""
        self.window_label = ""
        self.lake_tables_possible = False
        self.namespace_existed: bool | None = None
        self.window_job: Any = None
        self.stream_batch: tuple[str, int] | None = None
        self.stream_ready = False  # its sink schema exists (a dry run: assumed)
        self.stream_outputs = False
        self.sink_schema_created = False
        self.sink_target = ""
        self.left: list[tuple[str, str]] = []  # (what, how to remove it)
        self.livy_group = ""  # the smoke pool's Livy security group, made by the launch step
        self.stand_in: dict[str, Any] = {}  # a dry run's VPC for the pool (moto has none of its subnets)
        self.kept: list[str] = []  # what stays on purpose
        self.extract_artifacts: Any = None
        self.stream_artifacts: Any = None
        self.interrupted = False

    # ------------------------------------------------------------------ the run
    def header(self) -> None:
        mode = "DRY RUN" if self.dry_run else "real run on AWS"
        self.say(f"spotlake smoke test: {mode}")
        if self.dry_run:
            where = f"the moto server at {self.options.endpoint_url}" if self.options.endpoint_url else "moto inside this process"
            self.say(
                f"  nothing is sent to AWS: each AWS request is checked by botocore's validation (RunJobFlow "
                f"by EMR's rules too), then answered by {where}; Livy calls are printed, not sent; the "
                "databases are not reached"
            )
        picked = "" if self.options.pool else " (the cheapest by the estimate; --pool to choose)"
        self.say(
            f"  pool {self.pool.name}{picked}, as {self.smoke_pool.name}; pipeline {self.pipeline.name} "
            f"({self.pipeline.database}.{self.pipeline.table}) as {self.smoke_pipeline.name}; "
            f"stream {self.stream.name if self.stream else 'none (--no-stream)'}"
        )
        self.say(f"  region {self.region}; state tables {self.prefix}-*; artifacts {self.root}")
        self.say("")
        for line in self.estimate.lines(self.region):
            self.say(line)
        self.say("")

    def preflight(self) -> list[str]:
        """What stops a real run before it spends anything."""
        problems = []
        if not self.dry_run:
            if not self.root.startswith(("s3://", "s3a://")):
                problems.append(
                    f"the artifacts root {self.root} is not on S3: EMR reads the job code from S3; "
                    "give --artifacts s3://<bucket>/<prefix> (or set SPOTLAKE_ARTIFACTS)"
                )
            if self.stream is not None and not self.options.kafka_bootstrap:
                problems.append(
                    "the stream step needs the Kafka brokers: give --kafka-bootstrap host:port,... "
                    "(Airflow's spotlake_kafka connection has them), or --no-stream"
                )
        return problems

    def run(self) -> int:
        """Every step, then the teardown whatever happened; the exit status (0: passed)."""
        try:
            self._steps()
        except Failed:
            pass
        except KeyboardInterrupt:
            self.interrupted = True
            self.say("interrupted: tearing down")
        finally:
            self.teardown()
        return self.verdict()

    def _steps(self) -> None:
        self.create_tables()
        self.publish_job_code()
        self.launch()
        self.wait_ready()
        self.extract_window()
        self.check_window()
        if self.smoke_stream is not None:
            self.prepare_sink()
            self.run_stream()
            self.check_sink()

    # ------------------------------------------------------------------ 1. tables
    def create_tables(self) -> None:
        with self.steps.step(f"Create the state tables under the fresh prefix {self.prefix}") as step:
            dynamodb = self.aws.client("dynamodb")
            existing = [
                r.table for r in aws_setup.ensure_tables(dynamodb, self.prefix, dry_run=True) if r.outcome == aws_setup.EXISTS
            ]
            if existing:
                raise SmokeError(
                    f"{', '.join(existing)} already exist: the smoke test runs only under a prefix of its own, "
                    "whose tables it deletes at the end; leave --prefix out (a fresh one is drawn) or choose "
                    "another"
                )
            self.tables = list(aws_setup.table_keys(self.prefix))
            for result in aws_setup.ensure_tables(dynamodb, self.prefix):
                step.line(result.line())

    # ------------------------------------------------------------------ 2. job code
    def publish_job_code(self) -> None:
        with self.steps.step("Check the job dependencies and publish the job code") as step:
            s3 = self.aws.client("s3") if self.root.startswith(("s3://", "s3a://")) else None
            if s3 is None:
                step.warn(f"{self.root} is not on S3; the real run needs --artifacts s3://<bucket>/<prefix>")
            placeholder = False
            try:
                manifest = job_dependencies.load(self.root, s3)
            except (job_dependencies.DependenciesMissing, ClientError) as exc:
                why = (
                    _reason(exc)
                    if not isinstance(exc, ClientError)
                    else (
                        f"{self.root}/{job_dependencies.MANIFEST} cannot be read "
                        f"({exc.response.get('Error', {}).get('Code', 'error')}): publish the job dependencies with "
                        f"`python -m spotlake.job_dependencies publish --to {self.root}`"
                    )
                )
                if not self.dry_run:
                    raise SmokeError(why) from None
                if s3 is None:
                    step.warn(f"{why}; the Livy batch bodies are not built")
                    return
                if self.in_process:
                    step.line(
                        "moto in this process has no artifacts: the batch bodies below name placeholder "
                        f"dependencies (the real run reads {self.root}/{job_dependencies.MANIFEST})"
                    )
                else:
                    step.warn(f"{why}; the batch bodies below name placeholder dependencies")
                s3, placeholder = PlaceholderManifest(s3, self.root), True
                manifest = job_dependencies.load(self.root, s3)
            step.line(
                f"{'placeholder: ' if placeholder else ''}{len(manifest.jars)} jar(s) and "
                f"{manifest.python_archive.rsplit('/', 1)[-1]} (CPython {manifest.python}, {manifest.platform})"
                f" named by {self.root}/{job_dependencies.MANIFEST}"
            )
            self.extract_artifacts = artifacts.publish("extraction", s3=s3, root=self.root)
            step.line(f"extraction job: {self.extract_artifacts.entry}")
            if self.smoke_stream is not None:
                self.stream_artifacts = artifacts.publish("clickstream", s3=s3, root=self.root)
                step.line(f"stream job: {self.stream_artifacts.entry}")
            if self.dry_run:
                step.line("(dry run: the job code's PutObject requests are checked, not sent)")
            self._check_bootstrap_actions(step)

    def _check_bootstrap_actions(self, step: Step) -> None:
        actions = getattr(self.pool.emr, "bootstrap_actions", ()) or ()
        s3 = self.aws.client("s3")
        for action in actions:
            bucket, key = split_s3(action.path)
            try:
                s3.head_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                message = (
                    f"bootstrap action {action.name}: {action.path} cannot be read "
                    f"({exc.response.get('Error', {}).get('Code', 'error')}); every node runs it at launch — "
                    "publish it with `python -m spotlake.job_dependencies publish --to <artifacts root>`"
                )
                if not self.dry_run:
                    raise SmokeError(message) from None
                if self.in_process:
                    step.line(f"bootstrap action {action.name}: the real run checks that {action.path} is there")
                else:
                    step.warn(message)
                continue
            step.line(f"bootstrap action {action.name}: {action.path} is there")

    # ------------------------------------------------------------------ 3-4. cluster
    def _fleet(self) -> Any:
        from spotlake.fleet import Fleet

        return Fleet(self.registry, self.provider)

    def launch(self) -> None:
        with self.steps.step(f"Launch one cluster of pool {self.pool.name} on EMR") as step:
            from spotlake.fleet import FleetReport

            fleet = self._fleet()
            vacancy = fleet.vacancy(self.smoke_pool)
            if vacancy is None:
                raise SmokeError(f"pool {self.smoke_pool.name} already has a cluster under {self.prefix}")
            build = getattr(self.provider, "job_flow_request", None)
            if build is not None:
                request = build(self.smoke_pool, vacancy.cluster_id, datetime.now(UTC))
                check_request("emr", "RunJobFlow", request)
                step.line("RunJobFlow request: botocore's validation and EMR's rules pass")
                for spec in request.get("Instances", {}).get("InstanceFleets", []):
                    types = "|".join(c["InstanceType"] for c in spec.get("InstanceTypeConfigs", []))
                    step.line(
                        f"{spec.get('InstanceFleetType')}: {types}, on demand "
                        f"{spec.get('TargetOnDemandCapacity', 0)}, spot {spec.get('TargetSpotCapacity', 0)}"
                    )
            self._livy_access(step)
            self.cluster_id = vacancy.cluster_id
            report = FleetReport(self.smoke_pool.name)
            cluster = fleet.fill(self.smoke_pool, vacancy, report)
            if report.errors or cluster is None or cluster.state == ClusterState.DEAD:
                why = "; ".join(report.errors) or (cluster.reason if cluster else "no cluster")
                raise SmokeError(f"the launch of {self.cluster_id} failed: {why}")
            step.line(f"cluster {self.cluster_id}: EMR {cluster.provider_id or '(id pending)'}, {cluster.state}")

    def _livy_access(self, step: Step) -> None:
        """The smoke pool's Livy security group, as `python -m spotlake.aws_setup` makes a pool's
        (``emr.livy_access``); removed by the teardown. A dry run first makes a VPC for the pool:
        neither moto in this process nor a moto server has the pool's subnets."""
        shape = self.smoke_pool.emr
        if shape is None or shape.livy_access is None:
            return
        ec2 = self.aws.client("ec2")
        if self.dry_run:
            vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
            subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{n}.0/24")["Subnet"]["SubnetId"] for n in (1, 2)]
            airflow = ec2.create_security_group(GroupName="airflow-workers", Description="Airflow workers", VpcId=vpc)
            self.stand_in = {"vpc": vpc, "subnets": subnets, "airflow": airflow["GroupId"]}
            self.smoke_pool = dataclasses.replace(
                self.smoke_pool,
                emr=dataclasses.replace(
                    shape,
                    subnet_ids=tuple(subnets),
                    livy_access=pools.LivyAccess(security_groups=(airflow["GroupId"],)),
                ),
            )
            step.line(
                f"dry run: the cluster goes into a VPC made for it ({vpc}; the real run uses emr.subnet_ids "
                f"{', '.join(shape.subnet_ids)}) and Livy admits its stand-in for the Airflow workers"
            )
        for result in aws_setup.ensure_livy_groups(ec2, self.prefix, [self.smoke_pool]):
            step.line(result.line())
        find = getattr(self.provider, "livy_group", None)
        self.livy_group = str(find(self.smoke_pool) or "") if find is not None else ""

    def wait_ready(self) -> None:
        timeout = self.pool.launch_timeout
        with self.steps.step(f"Wait for the cluster to be READY (launch_timeout {span(timeout)})") as step:
            fleet = self._fleet()
            deadline = self.clock() + timeout.total_seconds() + 120
            started, reported = self.clock(), self.clock()
            while True:
                cluster = self._cluster()
                if cluster.state == ClusterState.READY:
                    step.line(f"READY at {cluster.endpoint} after {span(timedelta(seconds=self.clock() - started))}")
                    if self.dry_run:
                        self.say(f"      not sent: GET {cluster.endpoint}/batches?size=0 (the Livy check)")
                    return
                if cluster.state != ClusterState.LAUNCHING:
                    raise SmokeError(f"cluster {self.cluster_id} is {cluster.state}: {cluster.reason}")
                if self.clock() > deadline:
                    raise SmokeError(f"cluster {self.cluster_id} not READY after {span(timeout)}")
                fleet.check_health(self.smoke_pool)
                if self._cluster().state == ClusterState.LAUNCHING:
                    fleet.launch(self.smoke_pool)  # makes it READY once EMR and Livy are up
                if self._cluster().state != ClusterState.READY:
                    if self.clock() - reported >= 60:
                        reported = self.clock()
                        step.line(
                            f"still starting after {span(timedelta(seconds=self.clock() - started))}: "
                            f"{self._seen(self._cluster())}"
                        )
                    self.sleep(self.poll)

    def _seen(self, cluster: Cluster) -> str:
        """What the provider says of the cluster now (EMR's state; Livy's answer once EMR is up)."""
        try:
            return self.provider.health(cluster).reason or cluster.state
        except Exception as exc:  # noqa: BLE001 - only a progress line
            return f"{cluster.state} ({_reason(exc)[:150]})"

    def _cluster(self) -> Cluster:
        cluster = self.registry.get_cluster(self.smoke_pool.name, self.cluster_id)
        if cluster is None:
            raise SmokeError(f"cluster {self.cluster_id} is not in {self.registry.clusters_table}")
        return cluster

    # ------------------------------------------------------------------ 5-6. window
    def extract_window(self) -> None:
        pipeline = self.smoke_pipeline
        with self.steps.step(
            f"Extract one window of {self.pipeline.name} ({self.pipeline.database}.{self.pipeline.table})"
        ) as step:
            from operators.extraction import extraction_document
            from spark_jobs.common.lake_state import LakeState, WindowRecord, iso, parse_iso
            from spotlake.jobs import submit_or_reconnect
            from spotlake.windows import job_key, window_for_run

            if self.extract_artifacts is None:
                step.skip("no job dependencies, so no batch to submit")
                return
            self._note_namespace()
            now = datetime.now(UTC)
            window = window_for_run(pipeline.schedule, pipeline.lookback, None, None, now)
            lake_state = LakeState(self.registry.client, self.prefix)
            # No initial snapshot: the window reads its own range only (initial_load off).
            state = lake_state.ensure(pipeline.name, pipeline.initial_load, window.start)
            watermark = parse_iso(state.watermark) if state.watermark else None
            record = lake_state.plan_window(
                WindowRecord(
                    pipeline=pipeline.name,
                    window=window.label,
                    job_key=job_key(pipeline.name, window),
                    start=iso(window.start),
                    end=iso(window.end),
                    read_from=iso(window.read_from(watermark)),
                    planned_at=iso(now),
                )
            )
            self.window_label = window.label
            step.line(
                f"window {window.label}: {pipeline.cursor} in [{record.read_from}, {record.end}) into "
                f"{self.pipelines.lake.qualified(pipeline.current_table)} (and its changes table)"
            )
            request = self.extract_artifacts.request(
                record.job_key, self.smoke_pool.name, name=f"spotlake-extract-{pipeline.name}-{window.label}"
            )

            def build_args(run_id: str) -> list[str]:
                document = extraction_document(self.pipelines, pipeline, self.registry, record.job_key, "window", run_id)
                document["window"] = {"start": record.start, "end": record.end, "read_from": record.read_from}
                return ["--job", encode_job(document)]

            job = submit_or_reconnect(self.registry, request, self.livy_for, build_args=build_args).job
            self.lake_tables_possible = True  # the batch may create them from now on
            step.line(f"batch {job.batch_id} on {job.endpoint} (run {job.run_id[:8]})")
            state_name = self._wait_batch(job.endpoint, job.batch_id, self.options.batch_timeout, step)
            if state_name != "success":
                error = self.control_for(job.endpoint).error_line(job.batch_id)
                raise SmokeError(
                    f"batch {job.batch_id} ended {state_name}"
                    + (f": {error}" if error else f"; its log: GET {job.endpoint}/batches/{job.batch_id}/log")
                )
            self.window_job = job

    def _wait_batch(
        self, endpoint: str, batch_id: int, timeout: timedelta, step: Step, until: frozenset[str] = TERMINAL_BATCH_STATES
    ) -> str:
        control = self.control_for(endpoint)
        started = self.clock()
        unreachable = 0
        last = ""
        while True:
            probe = control.probe(batch_id)
            if probe.state != last:
                step.line(f"batch {batch_id}: {probe.state}" + (f" ({probe.detail})" if probe.detail else ""))
                last = probe.state
            if probe.state in until or probe.state in TERMINAL_BATCH_STATES:
                return probe.state
            unreachable = unreachable + 1 if probe.state in ("unreachable", "lost") else 0
            if unreachable >= 8:
                raise SmokeError(f"Livy at {endpoint} stopped answering about batch {batch_id}: {probe.detail}")
            if self.clock() - started > timeout.total_seconds():
                raise SmokeError(f"batch {batch_id} still {probe.state} after {span(timeout)}")
            self.sleep(min(self.poll, 10.0))

    def check_window(self) -> None:
        with self.steps.step("Check the committed window against the source") as step:
            from spark_jobs.common.lake_state import LakeState

            pipeline = self.smoke_pipeline
            if self.dry_run or not self.window_label:
                check_request("secretsmanager", "GetSecretValue", {"SecretId": pipeline.source.secret_id})
                step.line(
                    f"the real run reads window {self.window_label or '?'} from {self.prefix}-extraction-log, "
                    f"counts its rows in the lake's changes table, and counts the source's rows in the "
                    f"window's range with the secret {pipeline.source.secret_id}"
                )
                step.skip("dry run: no batch ran" if self.dry_run else "no window was extracted")
                return
            lake_state = LakeState(self.registry.client, self.prefix)
            record = lake_state.window(pipeline.name, self.window_label)
            job = self.window_job
            if record is None or record.state != "COMMITTED" or record.run_id != job.run_id:
                said = "missing" if record is None else f"{record.state} by run {record.run_id}"
                raise SmokeError(
                    f"the batch succeeded but window {self.window_label} is {said}, not COMMITTED by run {job.run_id}"
                )
            state = lake_state.get(pipeline.name)
            current = f"; current table {record.current_rows} rows" if record.current_rows is not None else ""
            step.line(
                f"window {record.window}: COMMITTED, {record.rows_read} rows read, {record.rows_written} "
                f"written in {record.chunks} chunk(s){current}; watermark {state.watermark if state else '?'}"
            )
            lake_rows, how = self._lake_rows(record)
            step.line(f"lake: {lake_rows} rows of window {record.window} ({how})")
            source_rows, said = self._source_rows(record)
            if source_rows is None:
                step.warn(f"the source count was skipped: {said}")
                return
            step.line(f"source: {source_rows} rows with {pipeline.cursor} in the window's range ({said})")
            if source_rows != lake_rows:
                step.warn(
                    f"the lake has {lake_rows} rows of the window and the source {source_rows} now: rows "
                    "changed since the window was read (a live source) or the window missed some"
                )

    def _lake_rows(self, record: Any) -> tuple[int, str]:
        try:
            from pyiceberg.expressions import EqualTo

            from spotlake import lake

            table = lake.load(
                dataclasses.replace(self.pipelines, lake=self._lake_in_region()),
                self.smoke_pipeline.name,
                changes=True,
                secrets=self.aws.client("secretsmanager"),
            )
            rows = table.scan(row_filter=EqualTo("_window", record.window)).to_arrow().num_rows
            return rows, "counted in the changes table with pyiceberg"
        except Exception as exc:  # noqa: BLE001 - fall back to what the job recorded
            return record.rows_written, f"as the job recorded them; the lake was not read: {_reason(exc)[:200]}"

    def _lake_in_region(self) -> Any:
        """The lake's configuration for pyiceberg, in the run's region."""
        lake = self.pipelines.lake
        return dataclasses.replace(lake, properties={"client.region": self.region, **lake.properties})

    def _source_rows(self, record: Any) -> tuple[int | None, str]:
        pipeline = self.smoke_pipeline
        try:
            import pymysql
        except ImportError:
            return None, "pymysql is not installed here (it is in requirements/dev.txt)"
        try:
            from spark_jobs.extraction.mysql_source import TimeLine, parse_zone
        except ImportError as exc:
            return None, f"the source's time line needs pyspark (requirements/dev.txt): {exc}"
        from spark_jobs.common.database_secret import parse_database_secret
        from spark_jobs.common.job_documents import quote_identifier
        from spark_jobs.common.lake_state import parse_iso

        try:
            text = self.aws.client("secretsmanager").get_secret_value(SecretId=pipeline.source.secret_id)
            secret = parse_database_secret(
                text.get("SecretString"),
                f"source secret '{pipeline.source.secret_id}'",
                SmokeError,
                database_required=False,
                endpoint=pipeline.source.endpoint,
            )
            connection = pymysql.connect(
                host=secret.host,
                port=secret.port,
                user=secret.username,
                password=secret.password,
                database=pipeline.database,
                connect_timeout=10,
                init_command="SET time_zone = '+00:00'",
            )
        except (SpotlakeError, ClientError, BotoCoreError, pymysql.MySQLError) as exc:
            return None, f"the source could not be reached from here: {_reason(exc)}"
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s "
                    "AND TABLE_NAME = %s AND COLUMN_NAME = %s",
                    (pipeline.database, pipeline.table, pipeline.cursor),
                )
                cursor_type = str(cursor.fetchone()[0]).lower()
                zone_name = "UTC"
                if cursor_type != "timestamp":
                    zone_name = str(pipeline.read.get("time_zone") or "")
                    if not zone_name:
                        cursor.execute("SELECT @@global.time_zone, @@system_time_zone")
                        global_zone, system_zone = cursor.fetchone()
                        zone_name = str(system_zone if global_zone == "SYSTEM" else global_zone)
                zone = parse_zone(zone_name)
                if zone is None:
                    return None, f"the source's time zone {zone_name!r} is not an offset or an IANA name"
                line = TimeLine(cursor_type, zone_name, zone)
                low, high = line.cursor_bounds(parse_iso(record.read_from), parse_iso(record.read_until or record.end))
                column = quote_identifier(pipeline.cursor)
                cursor.execute(
                    f"SELECT COUNT(*) FROM {quote_identifier(pipeline.database)}."
                    f"{quote_identifier(pipeline.table)} WHERE {column} >= %s AND {column} < %s",
                    (low, high),
                )
                return int(cursor.fetchone()[0]), f"{cursor_type} cursor, {low} to {high} on the source's clock"
        finally:
            connection.close()

    def _note_namespace(self) -> None:
        """Whether the lake's Glue database existed before the run (the job creates a missing one)."""
        if self.pipelines.lake.type != "glue":
            return
        try:
            self.aws.client("glue").get_database(Name=self.pipelines.lake.namespace)
            self.namespace_existed = True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "EntityNotFoundException":
                self.namespace_existed = False

    # ------------------------------------------------------------------ 7-9. stream
    def _sink(self) -> Any:
        """The stream's sink probe over its own schema (psycopg2 with the sink's secret)."""
        from spark_jobs.common.database_secret import parse_database_secret
        from spotlake.stream_supervisor import SinkDatabase

        stream = self.smoke_stream
        assert stream is not None
        import psycopg2

        text = self.aws.client("secretsmanager").get_secret_value(SecretId=stream.sink_secret_id)
        secret = parse_database_secret(
            text.get("SecretString"),
            f"sink secret '{stream.sink_secret_id}'",
            SmokeError,
            database_required=True,
            endpoint=stream.sink_endpoint,
        )
        self.sink_target = f"host={secret.host} port={secret.port} dbname={secret.database} user={secret.username}"

        def connect() -> Any:
            return psycopg2.connect(
                host=secret.host,
                port=secret.port,
                dbname=secret.database,
                user=secret.username,
                password=secret.password,
                connect_timeout=10,
            )

        return SinkDatabase(connect, stream.sink_schema)

    def prepare_sink(self) -> None:
        stream = self.smoke_stream
        assert stream is not None
        with self.steps.step(f"Create the stream's own sink schema {stream.sink_schema}") as step:
            from spotlake import sink_schema

            if self.dry_run:
                check_request("secretsmanager", "GetSecretValue", {"SecretId": stream.sink_secret_id})
                step.line(
                    f"the real run connects with the secret {stream.sink_secret_id} and applies "
                    f"{len(sink_schema.migrations())} migration(s) of sql/streaming/ to {stream.sink_schema}"
                )
                step.skip("dry run: the database is not reached")
                self.stream_ready = True
                return
            try:
                applied = self._sink().ensure_schema()  # one transaction: all of it or nothing
            except ImportError:
                step.skip("psycopg2 is not installed here (requirements/dev.txt); the stream needs its schema")
                return
            except Exception as exc:  # noqa: BLE001 - any failure to reach the sink skips the stream
                step.skip(
                    f"the sink database could not be prepared from here ({_reason(exc)[:300]}); the stream "
                    "needs its schema: run the smoke test where Airflow's workers run, or --no-stream"
                )
                return
            self.sink_schema_created = self.stream_ready = True
            step.line(f"{stream.sink_schema}: {len(applied)} migration(s) applied")

    def run_stream(self) -> None:
        stream = self.smoke_stream
        assert stream is not None
        seconds = self.options.stream_seconds
        with self.steps.step(f"Run stream {stream.name} for {seconds} s") as step:
            from spotlake.jobs import submit_or_reconnect

            if not self.stream_ready or self.stream_artifacts is None:
                step.skip("no sink schema" if self.stream_artifacts is not None else "no job dependencies")
                return
            bootstrap = self.options.kafka_bootstrap or DRY_RUN_BOOTSTRAP
            if not self.options.kafka_bootstrap:
                step.line(f"(dry run without --kafka-bootstrap: the document names {bootstrap})")
            request = self.stream_artifacts.request(
                stream.job_key,
                self.smoke_pool.name,
                name=f"spotlake-stream-{stream.name}",
                conf={**streaming.STREAM_SPARK_CONF, **stream.spark_conf},
            )

            def build_args(run_id: str) -> list[str]:
                document = stream.job_document(run_id, 1, bootstrap, region=self.region)
                return ["--job", encode_job(document)]

            self.stream_outputs = True
            job = submit_or_reconnect(self.registry, request, self.livy_for, build_args=build_args).job
            self.stream_batch = (job.endpoint, job.batch_id)
            step.line(f"batch {job.batch_id} on {job.endpoint}: topics {', '.join(stream.topics)} into {stream.sink_schema}")
            state = self._wait_batch(job.endpoint, job.batch_id, timedelta(minutes=10), step, until=frozenset({"running"}))
            if state != "running":
                error = self.control_for(job.endpoint).error_line(job.batch_id)
                raise SmokeError(f"stream batch {job.batch_id} ended {state} before it ran" + (f": {error}" if error else ""))
            if self.dry_run:
                step.line(f"(dry run: the real run lets it run {seconds} s, longer if no micro-batch committed yet)")
            else:
                self._let_it_run(seconds, step)
            self._stop_stream(step)

    def _let_it_run(self, seconds: int, step: Step) -> None:
        """``seconds`` of the stream, then up to as long again until its first micro-batch commits."""
        started = self.clock()
        sink = self._sink()
        stream = self.smoke_stream
        assert stream is not None and self.stream_batch is not None
        endpoint, batch_id = self.stream_batch
        control = self.control_for(endpoint)
        while True:
            self.sleep(min(10.0, seconds))
            probe = control.probe(batch_id)
            if probe.terminal:
                error = control.error_line(batch_id)
                raise SmokeError(
                    f"stream batch {batch_id} ended {probe.state} while it ran"
                    + (f": {error}" if error else f"; its log: GET {endpoint}/batches/{batch_id}/log")
                )
            elapsed = self.clock() - started
            if elapsed < seconds:
                continue
            try:
                progress = sink.progress(stream.query_name)
            except Exception as exc:  # noqa: BLE001 - the check step says it
                step.line(f"the sink's progress could not be read: {_reason(exc)[:200]}")
                return
            if progress is not None or elapsed >= 2 * seconds:
                return

    def _stop_stream(self, step: Step) -> None:
        if self.stream_batch is None:
            return
        endpoint, batch_id = self.stream_batch
        self.control_for(endpoint).delete(batch_id)
        self.stream_batch = None
        step.line(f"batch {batch_id} killed")

    def check_sink(self) -> None:
        stream = self.smoke_stream
        assert stream is not None
        with self.steps.step(f"Check the sink schema {stream.sink_schema} got rows") as step:
            if self.dry_run:
                step.line(
                    f"the real run reads {stream.sink_schema}.stream_progress ({stream.query_name}) and "
                    f"counts {stream.sink_schema}.click_aggregates"
                )
                step.skip("dry run: no batch ran")
                return
            if not self.stream_ready:
                step.skip("the stream did not run")
                return
            sink = self._sink()
            progress = sink.progress(stream.query_name)
            from spotlake.sink_schema import quote_schema

            connection = sink.connect()
            try:
                cursor = connection.cursor()
                cursor.execute(f"SELECT count(*) FROM {quote_schema(stream.sink_schema)}.click_aggregates")
                rows = int(cursor.fetchone()[0])
                connection.rollback()
            finally:
                connection.close()
            if progress is None or rows == 0:
                raise SmokeError(
                    f"no micro-batch reached the sink ({'no' if progress is None else 'a'} committed progress, "
                    f"{rows} aggregate rows): were events written to {', '.join(stream.topics)} (the stream reads "
                    f"from {stream.starting_offsets})? The batch log says why a query failed"
                )
            step.line(
                f"micro-batch {progress.last_batch_id} committed at {progress.committed_at}; {rows} rows in click_aggregates"
            )

    # ------------------------------------------------------------------ teardown
    def teardown(self) -> None:
        self.say("")
        self.say("Teardown (runs whatever happened before)")
        for action in (
            self._teardown_stream,
            self._teardown_cluster,
            self._teardown_livy_access,
            self._teardown_lake,
            self._teardown_stream_outputs,
            self._teardown_sink,
            self._teardown_tables,
        ):
            try:
                action()
            except Failed:
                continue
            except KeyboardInterrupt:
                self.interrupted = True
                self.say("    interrupted during the teardown; going on with it")

    def _leave(self, what: str, how: str) -> None:
        self.left.append((what, how))

    def _teardown_stream(self) -> None:
        if self.stream_batch is None:
            return
        with self.steps.step("Stop the stream batch") as step:
            endpoint, batch_id = self.stream_batch
            try:
                self._stop_stream(step)
            except Exception:
                self._leave(f"stream batch {batch_id} on {endpoint}", f"curl -X DELETE {endpoint}/batches/{batch_id}")
                raise

    def _teardown_cluster(self) -> None:
        if not self.cluster_id:
            return
        with self.steps.step(f"Terminate the cluster {self.cluster_id}") as step:
            clusters: list[Cluster] = []
            try:
                clusters = self.registry.clusters(self.smoke_pool.name)
            except Exception as exc:  # noqa: BLE001 - the provider can still find it by its tag
                step.line(f"the registry could not be read ({_reason(exc)[:150]}); looking the cluster up on EMR")
            if not clusters:
                clusters = [
                    Cluster(
                        pool=self.smoke_pool.name,
                        cluster_id=self.cluster_id,
                        provider=getattr(self.provider, "name", "emr"),
                        state="",
                    )
                ]
            for cluster in clusters:
                job_flow = cluster.provider_id or self._find(cluster.cluster_id)
                if not job_flow:
                    step.line(f"{cluster.cluster_id}: no live EMR cluster (none was created, or it is gone)")
                    continue
                cluster = dataclasses.replace(cluster, provider_id=job_flow)
                try:
                    health = self.provider.health(cluster)
                except Exception:  # noqa: BLE001 - terminate it anyway
                    health = None
                if health is not None and health.definitive:
                    step.line(f"{cluster.cluster_id}: already ended ({health.reason})")
                    continue
                try:
                    self.provider.terminate(cluster, TERMINATED_BY)
                except Exception:
                    self._leave(
                        f"EMR cluster {job_flow} ({cluster.cluster_id})",
                        f"aws emr terminate-clusters --cluster-ids {job_flow} --region {self.region}",
                    )
                    raise
                step.line(f"{cluster.cluster_id}: TerminateJobFlows {job_flow} sent; EMR stops its instances in a few minutes")
                log_uri = self.smoke_pool.emr.log_uri if self.smoke_pool.emr else ""
                if log_uri and not self.dry_run:
                    self.kept.append(
                        f"EMR's logs of {job_flow} under {log_uri.rstrip('/')}/{job_flow}/ (EMR writes "
                        f"them until the cluster is gone; remove them later with: aws s3 rm --recursive "
                        f"{log_uri.rstrip('/')}/{job_flow}/)"
                    )

    def _teardown_livy_access(self) -> None:
        if not self.livy_group and not self.stand_in:
            return
        with self.steps.step("Delete the pool's Livy security group") as step:
            ec2 = self.aws.client("ec2")
            groups = [g for g in (self.livy_group, self.stand_in.get("airflow", "")) if g]
            # EMR releases the primary node's network interface minutes after TerminateJobFlows.
            deadline = self.clock() + (0 if self.dry_run else LIVY_GROUP_WAIT_S)
            for group in groups:
                while True:
                    try:
                        ec2.delete_security_group(GroupId=group)
                        step.line(f"security group {group}: deleted")
                        break
                    except ClientError as exc:
                        code = exc.response.get("Error", {}).get("Code", "")
                        if code == "DependencyViolation" and self.clock() < deadline:
                            self.sleep(self.poll)
                            continue
                        self._leave(f"security group {group}", f"aws ec2 delete-security-group --group-id {group}")
                        raise SmokeError(f"security group {group} could not be deleted: {_reason(exc)}") from None
            for subnet in self.stand_in.get("subnets", []):
                ec2.delete_subnet(SubnetId=subnet)
            if self.stand_in:
                ec2.delete_vpc(VpcId=self.stand_in["vpc"])
                step.line(f"the dry run's VPC {self.stand_in['vpc']}: deleted")

    def _find(self, cluster_id: str) -> str | None:
        find = getattr(self.provider, "find", None)
        return find(cluster_id) if find is not None else None

    def _teardown_lake(self) -> None:
        if not self.lake_tables_possible:
            return
        names = (self.smoke_pipeline.current_table, self.smoke_pipeline.changes_table)
        self._drop_tables(self.pipelines.lake.namespace, names, remove_empty_namespace=self.namespace_existed is False)

    def _drop_tables(self, namespace: str, names: tuple[str, ...], remove_empty_namespace: bool = False) -> None:
        """Drop the smoke tables ``names`` of ``namespace`` in the lake's catalog, and their files."""
        lake = self.pipelines.lake
        with self.steps.step(f"Drop the smoke lake tables {', '.join(f'{namespace}.{n}' for n in names)}") as step:
            if lake.type != "glue":
                self._purge_with_pyiceberg(namespace, names, step)
                return
            glue = self.aws.client("glue")
            for name in names:
                try:
                    table = glue.get_table(DatabaseName=namespace, Name=name)["Table"]
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") == "EntityNotFoundException":
                        step.line(f"{namespace}.{name}: not there (nothing to drop)")
                        continue
                    self._leave(
                        f"Glue table {namespace}.{name}",
                        f"aws glue delete-table --database-name {namespace} --name {name} --region {self.region}",
                    )
                    raise
                location = table.get("StorageDescriptor", {}).get("Location", "")
                if location:
                    removed = self._remove_s3(location, step)
                    step.line(f"{location}: {removed} file(s) removed")
                glue.delete_table(DatabaseName=namespace, Name=name)
                step.line(f"{namespace}.{name}: dropped from the Glue catalog")
            if remove_empty_namespace:
                try:
                    left = glue.get_tables(DatabaseName=namespace).get("TableList", [])
                except ClientError:
                    left = None
                if left == []:
                    glue.delete_database(Name=namespace)
                    step.line(f"Glue database {namespace}: created by the job, empty, removed")

    def _purge_with_pyiceberg(self, namespace: str, names: tuple[str, ...], step: Step) -> None:
        """Drop the tables and their files from a catalog other than Glue (the jdbc one) with pyiceberg."""
        lake = self.pipelines.lake
        if self.dry_run:
            step.line(f"the real run drops them and their files from the {lake.type} catalog with pyiceberg")
            return
        qualified = [f"{lake.catalog}.{namespace}.{name}" for name in names]
        try:
            from pyiceberg.exceptions import NoSuchTableError

            from spotlake import lake as lake_reader

            catalog = lake_reader.catalog(self._lake_in_region(), self.aws.client("secretsmanager"))
            for name, shown in zip(names, qualified, strict=True):
                try:
                    catalog.purge_table(f"{namespace}.{name}")
                    step.line(f"{shown}: dropped, files too")
                except NoSuchTableError:
                    step.line(f"{shown}: not there (nothing to drop)")
        except Exception:
            for shown in qualified:
                self._leave(
                    f"lake table {shown} (the {lake.type} catalog)",
                    f"DROP TABLE {shown} PURGE (Spark SQL with the lake's catalog)",
                )
            raise

    def _remove_s3(self, uri: str, step: Step) -> int:
        """Delete every object under the folder ``uri``; the count removed (a dry run removes none)."""
        bucket, key = split_s3(uri)
        prefix = key.strip("/") + "/"
        s3 = self.aws.client("s3")
        removed = 0
        try:
            keys: list[str] = []
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
            while True:
                page = s3.list_objects_v2(**kwargs)
                keys += [item["Key"] for item in page.get("Contents", [])]
                if not page.get("IsTruncated"):
                    break
                kwargs["ContinuationToken"] = page["NextContinuationToken"]
            for start in range(0, len(keys), 1000):
                batch = keys[start : start + 1000]
                answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
                if answer.get("Errors"):
                    raise SmokeError(
                        f"S3 refused to delete {len(answer['Errors'])} object(s) under {uri}: "
                        f"{answer['Errors'][0].get('Message', '')}"
                    )
                removed += 0 if self.dry_run else len(batch)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
                return 0
            self._leave(f"S3 objects under {uri}", f"aws s3 rm --recursive s3://{bucket}/{prefix}")
            raise
        except SmokeError:
            self._leave(f"S3 objects under {uri}", f"aws s3 rm --recursive s3://{bucket}/{prefix}")
            raise
        return removed

    def _teardown_stream_outputs(self) -> None:
        stream = self.smoke_stream
        if stream is None or not self.stream_outputs:
            return
        if stream.lake is not None:
            self._drop_tables(stream.lake.namespace, tuple(n for n in (stream.lake.events, stream.lake.dead_letters) if n))
        locations = [stream.checkpoint]
        with self.steps.step("Remove the stream's checkpoint") as step:
            for uri in locations:
                try:
                    split_s3(uri)
                except ValueError:
                    self._leave(f"stream output {uri}", f"remove the folder {uri}")
                    continue
                step.line(f"{uri}: {self._remove_s3(uri, step)} file(s) removed")

    def _teardown_sink(self) -> None:
        stream = self.smoke_stream
        if stream is None or not self.sink_schema_created:
            return
        with self.steps.step(f"Drop the sink schema {stream.sink_schema}") as step:
            from spotlake.sink_schema import quote_schema

            drop = f"DROP SCHEMA IF EXISTS {quote_schema(stream.sink_schema)} CASCADE"
            try:
                connection = self._sink().connect()
                try:
                    connection.cursor().execute(drop)
                    connection.commit()
                finally:
                    connection.close()
            except Exception:
                target = self.sink_target or f"<the database of {stream.sink_secret_id}>"
                self._leave(f"sink schema {stream.sink_schema}", f"psql \"{target}\" -c '{drop}'")
                raise
            step.line(f"{stream.sink_schema}: dropped")

    def _teardown_tables(self) -> None:
        if not self.tables:
            return
        with self.steps.step(f"Delete the state tables {self.prefix}-*") as step:
            dynamodb = self.aws.client("dynamodb")
            failures = []
            for table in self.tables:
                try:
                    dynamodb.delete_table(TableName=table)
                    step.line(f"{table}: deleted")
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                        step.line(f"{table}: not there (nothing to delete)")
                        continue
                    failures.append(table)
                    self._leave(
                        f"DynamoDB table {table}", f"aws dynamodb delete-table --table-name {table} --region {self.region}"
                    )
            if failures:
                raise SmokeError(f"could not delete {', '.join(failures)}")

    # ------------------------------------------------------------------ verdict
    def verdict(self) -> int:
        self.say("")
        failed = self.steps.failed()
        warned = [s for s in self.steps.done if s.status == "warning"]
        skipped = [s for s in self.steps.done if s.status == "skipped" and not s.note.startswith("dry run")]
        requests = self.aws.journal.requests
        if self.left:
            self.say("LEFT BEHIND (could not be removed; remove it by hand):")
            for what, how in self.left:
                self.say(f"  - {what}:")
                self.say(f"      {how}")
        for kept in self.kept:
            self.say(f"Kept: {kept}")
        if self.dry_run:
            sent = sum(1 for *_, was_sent in requests if was_sent)
            self.say(f"{len(requests)} AWS requests built and validated ({sent} answered by moto, {len(requests) - sent} held).")
        if self.interrupted:
            self.say(
                "Verdict: INTERRUPTED"
                + ("; something is left behind (above)" if self.left else "; everything it created was removed")
            )
            return 130
        if failed:
            first = failed[0]
            self.say(f"Verdict: FAILED at step {first.number} ({first.title}): {first.note}")
            return 1
        if self.left:
            self.say("Verdict: FAILED: the checks passed but the teardown left something behind (above)")
            return 1
        notes = [f"step {s.number}: {s.note}" for s in warned + skipped]
        if self.dry_run:
            self.say(
                "Verdict: DRY RUN PASSED: every request validated"
                + (f"; warnings for the real run: {'; '.join(notes)}" if notes else "")
            )
        else:
            self.say(
                "Verdict: PASSED"
                + (f", with warnings: {'; '.join(notes)}" if notes else "")
                + "; everything it created was removed"
            )
        return 0


class PlaceholderManifest:
    """The artifacts bucket as a dry run sees it when no job dependencies are published there: the
    manifest reads as one naming placeholder files, so the batch bodies can still be built."""

    def __init__(self, s3: Any, root: str) -> None:
        self._s3 = s3
        self._root = root.rstrip("/")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    def get_object(self, **params: Any) -> dict[str, Any]:
        if params.get("Key", "").endswith(job_dependencies.MANIFEST):
            check_request("s3", "GetObject", params)
            base = f"{self._root.replace('s3a://', 's3://', 1)}/deps/NOT-PUBLISHED"
            manifest = job_dependencies.Manifest(jars=[f"{base}/jobs.jar"], python_archive=f"{base}/pydeps.tar.gz")
            import io

            return {"Body": io.BytesIO(manifest.to_json().encode())}
        return self._s3.get_object(**params)


# ---------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m spotlake_dev.smoke",
        description=__doc__.splitlines()[0],
        epilog="Reference: docs/deploying-to-aws.md, section Smoke test.",
    )
    parser.add_argument(
        "--pool", default=None, help="the pool of config/pools.yaml to launch (default: the cheapest by the estimate)"
    )
    parser.add_argument(
        "--pipeline", default=None, help="the pipeline of config/pipelines.yaml to extract one window of (default: the first)"
    )
    parser.add_argument(
        "--stream",
        default=DEFAULT_STREAM,
        help=f"the stream of config/streaming.yaml to run for a minute (default {DEFAULT_STREAM})",
    )
    parser.add_argument("--no-stream", dest="stream", action="store_const", const=None, help="skip the stream")
    parser.add_argument(
        "--kafka-bootstrap",
        default=None,
        help="the stream's Kafka brokers, host:port,... (what Airflow's spotlake_kafka connection says)",
    )
    parser.add_argument("--region", default=None, help="AWS region (default: the AWS configuration's)")
    parser.add_argument(
        "--prefix",
        default=None,
        help="the state tables' prefix (default: a fresh spotlake-smoke-<random>; an existing prefix is refused)",
    )
    parser.add_argument("--artifacts", default=None, help="the artifacts root, s3://bucket/prefix (default: SPOTLAKE_ARTIFACTS)")
    parser.add_argument("--stream-seconds", type=int, default=60, help="how long the stream runs (default 60)")
    parser.add_argument(
        "--batch-timeout", type=int, default=30, metavar="MINUTES", help="how long the window's batch may take (default 30)"
    )
    parser.add_argument("--yes", action="store_true", help="do not ask before launching")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="send nothing to AWS: validate every request, answer it with moto, print Livy calls",
    )
    parser.add_argument(
        "--endpoint-url", default=None, help="AWS endpoint of the dry run (a moto server); without it, moto inside this process"
    )
    parser.add_argument("--verbose", action="store_true", help="print every request in full")
    return parser


def build(
    options: Options,
    say: Callable[[str], None] = print,
    aws: Aws | None = None,
    provider: Any = None,
    livy: Callable[[str], Any] | None = None,
) -> Smoke:
    """A :class:`Smoke` over the project's configuration and its collaborators: EMR through
    :class:`~spotlake.providers.emr.EmrProvider` and Livy (printed in a dry run) unless given."""
    from hooks.livy import probe_livy

    region = options.region or _default_region(options.dry_run)
    journal = Journal(say, show=options.dry_run, verbose=options.verbose)
    aws = aws or Aws(region, options.endpoint_url or os.environ.get("AWS_ENDPOINT_URL"), journal, options.dry_run)
    if provider is None:
        provider = SmokeEmrProvider(
            aws.client("emr"), probe=None if options.dry_run else probe_livy, ec2_client=lambda: aws.client("ec2")
        )
    streams = streaming.load() if options.stream else None
    livy_for: Callable[[str], Any]
    control_for: Callable[[str], Any]
    if livy is not None:
        livy_for = control_for = livy
    elif options.dry_run:
        batches: dict[int, str] = {}

        def printed(endpoint: str) -> PrintedLivy:
            return PrintedLivy(endpoint, say, batches)

        livy_for = control_for = printed
    else:
        from hooks.livy import EndpointLivyHook, LivyBatchControl

        livy_for, control_for = EndpointLivyHook, LivyBatchControl
    return Smoke(
        options,
        pools_config=pools.load(provider="emr"),
        pipelines=pipelines_config.load(),
        streams=streams,
        aws=aws,
        provider=provider,
        livy_for=livy_for,
        control_for=control_for,
        say=say,
        poll=0.0 if options.dry_run else 15.0,
    )


def _default_region(dry_run: bool) -> str:
    import boto3

    region = boto3.session.Session().region_name
    if region:
        return region
    if dry_run:
        return PRICES_REGION
    raise SmokeError("no AWS region: give --region or set AWS_DEFAULT_REGION")


def _confirm(smoke: Smoke, ask: Callable[[str], str]) -> bool:
    total = smoke.estimate.total
    cost = f" for about {_money_range(*total)}" if total else " (its cost could not be estimated)"
    try:
        answer = ask(f"Launch an EMR cluster of pool {smoke.pool.name}{cost}? Type yes to go on: ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def main(argv: list[str] | None = None, ask: Callable[[str], str] = input) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.endpoint_url and not args.dry_run:
        parser.error("--endpoint-url is for the dry run (a moto server); a real run talks to AWS")
    # The steps say what happened; the libraries' own INFO lines would repeat it.
    for name in ("spotlake", "botocore", "boto3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    options = Options(
        pool=args.pool,
        pipeline=args.pipeline,
        stream=args.stream,
        region=args.region,
        prefix=args.prefix,
        artifacts=args.artifacts,
        kafka_bootstrap=args.kafka_bootstrap,
        dry_run=args.dry_run,
        endpoint_url=args.endpoint_url,
        yes=args.yes,
        stream_seconds=args.stream_seconds,
        batch_timeout=timedelta(minutes=args.batch_timeout),
        verbose=args.verbose,
    )
    in_process = options.dry_run and not (options.endpoint_url or os.environ.get("AWS_ENDPOINT_URL"))
    with contextlib.ExitStack() as stack:
        if in_process:
            try:
                from moto import mock_aws
            except ImportError:
                print(
                    "spotlake smoke: a dry run without --endpoint-url answers AWS requests with moto inside this "
                    "process, and moto is not installed: install requirements/dev.txt, or give --endpoint-url of "
                    "a moto server",
                    file=sys.stderr,
                )
                return 2
            stack.enter_context(mock_aws())
        try:
            smoke = build(options)
        except SpotlakeError as exc:
            print(f"spotlake smoke: {exc}", file=sys.stderr)
            return 2
        smoke.header()
        problems = smoke.preflight()
        if problems:
            for problem in problems:
                print(f"spotlake smoke: {problem}", file=sys.stderr)
            return 2
        if not (options.dry_run or options.yes) and not _confirm(smoke, ask):
            print("Nothing was launched.")
            return 1
        return smoke.run()


if __name__ == "__main__":
    sys.exit(main())

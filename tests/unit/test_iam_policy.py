"""The IAM policies of docs/iam/ grant what the code calls, and nothing else.

The test reads the code with ``ast`` (nothing is imported or run), finds every AWS API call
and names its IAM action through botocore's service models:

- a call ``<client>.<method>(...)`` on a boto3 client: ``method`` is the operation whose
  ``xform_name`` it is (``put_item`` -> ``PutItem``); ``get_paginator("list_objects_v2")`` is
  that operation, ``get_waiter("table_exists")`` the waiter's (``DescribeTable``);
- a client is ``boto3.client("<service>")`` (or a session's), an Airflow AWS hook's
  ``get_conn()`` / ``conn`` (the hook's service: HOOK_SERVICES, or ``client_type=``), a name or
  ``self.<attribute>`` bound to one, a function or property returning one, or a receiver
  declared in CLIENTS (clients handed over from elsewhere, e.g. the registry's ``self.client``);
- a call of an Airflow hook's own method is mapped by HOOK_METHODS (``EmrHook.create_job_flow``
  -> ``RunJobFlow``); a hook method not mapped there fails the test;
- the action is ``<signing name>:<operation>`` (``elasticmapreduce:RunJobFlow``), except where
  IAM authorises an operation under another action (IAM_ACTIONS: ``ListObjectsV2`` is
  ``s3:ListBucket``), and ``TransactWriteItems``, which IAM authorises item by item: the
  actions of the item kinds (``Put``, ``Update``, ``Delete``, ``ConditionCheck``) its file writes.

A call of a botocore operation's name on a receiver the test cannot resolve fails too, unless
the receiver is in NOT_AWS (objects that are not AWS clients, e.g. the Registry): so a client
passed around under a new name cannot slip by unseen.

Each policy is compared with the calls of its side:

- docs/iam/airflow-policy.json, Airflow's role: plugins/ and dags/, except EXCLUDED (the local
  stack, the demo and the click generator are never deployed; the setup step has its own
  policy), plus the functions of the spark_jobs modules this code imports that it calls (by
  name, with what they call in turn: spark_jobs.common.lake_state's ``ensure``, ``plan_window`` …);
- docs/iam/emr-instance-policy.json, the EMR clusters' instance profile: spark_jobs/;
- docs/iam/setup-policy.json, the deployer's one-off setup step: plugins/spotlake/aws_setup.py.

The test fails for a call whose action the policy lacks (naming the action and the call's
file:line), and for an action of the policy that no call needs (a stale permission), unless
LIBRARY_ACTIONS gives the reason it is there (actions of libraries our code drives but does
not call itself: Iceberg's S3FileIO and GlueCatalog, EMR's use of iam:PassRole ...).
UNGRANTED_CALLS lists the few calls the deployed role deliberately lacks, with the reason.
"""

from __future__ import annotations

import ast
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import botocore.session
import pytest
from botocore import xform_name

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "deploying-to-aws.md"
TEST_FILE = "tests/unit/test_iam_policy.py"

# ------------------------------------------------------------------ the sides and their policies

EXCLUDED = {
    "spotlake_dev/localstack/": "the local stack (moto server, local S3, Livy): never deployed",
    "spotlake_dev/demo.py": "the local demo's data and resources: never deployed",
    "spotlake_dev/clickgen/": "the click generator, a load tool writing to Kafka: never run by the DAGs",
    "plugins/spotlake/aws_setup.py": "the setup step: run once by the deployer, with docs/iam/setup-policy.json",
    "plugins/spotlake/prices.py": "the prices refresh: run by a person with their own credentials "
    "(pricing:GetProducts, ec2:DescribeSpotPriceHistory; docs/deploying-to-aws.md, Cost), never by the DAGs",
    "spotlake_dev/smoke.py": "the AWS smoke test: run by a person with their own credentials, never deployed "
    "(docs/deploying-to-aws.md, Smoke test)",
}


@dataclass(frozen=True)
class Side:
    name: str
    policy: str
    roots: tuple[str, ...]
    shares_spark_jobs: bool = False  # also the spark_jobs functions its code calls

    def files(self) -> list[str]:
        found = []
        for root in self.roots:
            paths = [ROOT / root] if root.endswith(".py") else sorted((ROOT / root).rglob("*.py"))
            found += [p.relative_to(ROOT).as_posix() for p in paths]
        if self.name == "airflow":
            found = [f for f in found if not any(f.startswith(e) for e in EXCLUDED)]
        return found


SIDES = (
    Side("airflow", "docs/iam/airflow-policy.json", ("plugins", "dags"), shares_spark_jobs=True),
    Side("emr-instance", "docs/iam/emr-instance-policy.json", ("spark_jobs",)),
    Side("setup", "docs/iam/setup-policy.json", ("plugins/spotlake/aws_setup.py",)),
)

# Actions a policy grants that no code of ours calls, and why they are needed.
_ICEBERG_S3 = (
    "Iceberg's S3FileIO (the lake's files), EMRFS (the streams' checkpoints and Parquet, "
    "remove_orphan_files' listing) and Livy reading the published job artifacts"
)
_GLUE = "Iceberg's GlueCatalog, for the SQL the jobs run (CREATE NAMESPACE/TABLE, ALTER TABLE, commits)"
_KMS = (
    "only with a customer-managed KMS key on the secrets or the buckets: Secrets Manager and S3 use it "
    "on the role's behalf (the statement is limited to them by kms:ViaService)"
)
_PYICEBERG = "pyiceberg's GlueCatalog, when spotlake.lake reads the lake with Airflow's role"
LIBRARY_ACTIONS: dict[str, dict[str, str]] = {
    "airflow": {
        "iam:PassRole": "RunJobFlow hands the pools' service role and instance profile role to EMR",
        "glue:GetDatabase": _PYICEBERG,
        "glue:GetTable": _PYICEBERG,
        "kms:Decrypt": (
            "Secrets Manager decrypts a stream's MSK SCRAM secret (kafka_security.mechanism SCRAM-SHA-512) "
            "with its customer-managed key, which MSK requires, on the role's behalf"
        ),
    },
    "emr-instance": {
        **{f"s3:{a}": _ICEBERG_S3 for a in ("GetObject", "PutObject", "DeleteObject", "ListBucket")},
        "s3:AbortMultipartUpload": "Iceberg's S3FileIO aborts the multipart upload of a failed write",
        **{f"glue:{a}": _GLUE for a in ("GetDatabase", "CreateDatabase", "GetTable", "GetTables", "CreateTable", "UpdateTable")},
        "kms:Decrypt": _KMS,
        "kms:GenerateDataKey": _KMS,
    },
    "setup": {
        "ec2:CreateTags": "CreateSecurityGroup with TagSpecifications: EC2 authorises tagging at creation as ec2:CreateTags",
    },
}

# (file, action): calls the deployed role deliberately lacks.
UNGRANTED_CALLS = {
    (
        "plugins/spotlake/lake.py",
        "secretsmanager:GetSecretValue",
    ): "spotlake.lake reads a jdbc catalog's secret (the local stack's catalog); on AWS the catalog is Glue "
    "(docs/deploying-to-aws.md, section 3), which has none",
}

# ------------------------------------------------------------------ how calls map to actions

# Receivers that hold a client handed over from elsewhere, per file.
CLIENTS = {
    "plugins/spotlake/registry.py": {"self.client": "dynamodb"},  # hooks.aws.registry: AwsBaseHook(dynamodb)
    "plugins/spotlake/stream_status.py": {"self.client": "dynamodb"},  # the registry's client
    "plugins/spotlake/alert_store.py": {"self.client": "dynamodb"},  # the registry's client
    "plugins/spotlake/artifacts.py": {"s3": "s3"},  # the operators' S3Hook(...).get_conn()
    "plugins/spotlake/job_dependencies.py": {"s3": "s3"},  # the same, or boto3.client("s3") in its main
    "plugins/spotlake/lake.py": {"secrets": "secretsmanager"},
    "plugins/spotlake/aws_setup.py": {"client": "dynamodb"},
    "plugins/spotlake/providers/emr.py": {"self.ec2": "ec2"},  # hooks.aws.cluster_provider: EC2Hook(...).conn
    "plugins/spotlake/freshness.py": {"store.client": "dynamodb"},  # a LakeState's client: the registry's
    "spark_jobs/common/lake_state.py": {"self.client": "dynamodb"},  # the jobs' boto3.client("dynamodb"), the registry's
}
# Receivers that hold an Airflow hook handed over from elsewhere, per file: the hook's class.
HOOKS = {
    "plugins/spotlake/providers/emr.py": {"self.hook": "EmrHook"},  # hooks.aws.emr_hook: EmrHook(aws_conn_id)
}
# Receivers of calls named like AWS operations that are not AWS clients.
NOT_AWS = {
    "self",  # an object's own methods (Registry.get_job)
    "registry",
    "self.registry",
    "self.fleet.registry",  # spotlake.registry.Registry (get_job, update_job)
    "BaseHook",  # Airflow's BaseHook.get_connection
    "table",  # a pyiceberg Table (scan)
    "botocore.session",  # loads service models to validate requests offline (providers/emr.validate_shape)
    "session",  # a SQLAlchemy session of Airflow's metadata database (ui.app.paused_dags: query)
}
# Airflow's AWS hooks: the service of their client (None: the client_type argument says).
HOOK_SERVICES = {
    "AwsBaseHook": None,
    "AwsGenericHook": None,
    "S3Hook": "s3",
    "EmrHook": "emr",
    "DynamoDBHook": "dynamodb",
    "SecretsManagerHook": "secretsmanager",
    "GlueCatalogHook": "glue",
}
HOOK_CLIENT_GETTERS = {"get_conn", "conn"}
# A hook's own methods and the operations they call (read in the provider's source).
HOOK_METHODS = {
    ("EmrHook", "create_job_flow"): ("RunJobFlow",),
    ("S3Hook", "load_bytes"): ("PutObject",),
    ("S3Hook", "read_key"): ("GetObject",),
    ("S3Hook", "list_keys"): ("ListObjectsV2",),
}
# boto3's own client methods (not botocore operations) and the operations they make.
BOTO3_METHODS = {
    ("s3", "upload_file"): ("PutObject",),  # multipart: CreateMultipartUpload/UploadPart/Complete… are s3:PutObject
    ("s3", "upload_fileobj"): ("PutObject",),
    ("s3", "download_file"): ("HeadObject", "GetObject"),
    ("s3", "download_fileobj"): ("HeadObject", "GetObject"),
}
CLIENT_LOCAL = {"can_paginate", "close"}  # client methods that call nothing
# Operations IAM authorises under another action.
IAM_ACTIONS = {
    ("s3", "ListObjectsV2"): "ListBucket",
    ("s3", "ListObjects"): "ListBucket",
    ("s3", "HeadBucket"): "ListBucket",
    ("s3", "PutPublicAccessBlock"): "PutBucketPublicAccessBlock",
    ("s3", "HeadObject"): "GetObject",
    ("s3", "CreateMultipartUpload"): "PutObject",
    ("s3", "UploadPart"): "PutObject",
    ("s3", "CompleteMultipartUpload"): "PutObject",
    ("s3", "DeleteObjects"): "DeleteObject",
    ("dynamodb", "TransactGetItems"): "GetItem",
}
TRANSACT_ITEMS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem"}
# Services whose operation names make an unresolved receiver suspicious.
WATCHED = ("dynamodb", "s3", "emr", "secretsmanager", "glue", "kms", "sts")


@cache
def _session() -> botocore.session.Session:
    return botocore.session.get_session()


@cache
def operations(service: str) -> dict[str, str]:
    """boto3 method name -> operation name."""
    return {xform_name(op): op for op in _session().get_service_model(service).operation_names}


@cache
def known_service(name: str) -> bool:
    return name in _session().get_available_services()


def waiter_operation(service: str, waiter: str) -> str:
    model = _session().get_waiter_model(service)
    name = next(n for n in model.waiter_names if xform_name(n) == waiter)
    return model.get_waiter(name).operation


def action(service: str, operation: str) -> str:
    prefix = _session().get_service_model(service).signing_name
    return f"{prefix}:{IAM_ACTIONS.get((service, operation), operation)}"


# ------------------------------------------------------------------ the scan


@dataclass(frozen=True)
class Call:
    path: str
    line: int
    function: str  # innermost enclosing def ("" at module level)
    action: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line} ({self.text})"


@dataclass
class Scan:
    """One file's AWS calls, the names it calls, and what it could not resolve."""

    path: str
    calls: list[Call] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    called: set[str] = field(default_factory=set)  # names of everything it calls
    graph: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # def -> names it calls
    used_declared: set[str] = field(default_factory=set)


def _terminal(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""


def _is_property(node: ast.FunctionDef) -> bool:
    return any(_terminal(d) in ("property", "cached_property") for d in node.decorator_list)


class FileScanner:
    """Resolves which expressions are AWS clients or hooks ("client", service) / ("hook", class, service)."""

    def __init__(self, path: str, tree: ast.Module) -> None:
        self.path, self.tree = path, tree
        self.declared = CLIENTS.get(path, {})
        self.declared_hooks = HOOKS.get(path, {})
        self.bindings: dict[str, tuple[str, ...]] = {}  # "name" or "self.attr" -> kind
        self.returns: dict[str, tuple[str, ...]] = {}  # function name -> kind of what it returns
        self.scan = Scan(path)
        self.transact_items = {
            TRANSACT_ITEMS[k.value]
            for d in ast.walk(tree)
            if isinstance(d, ast.Dict)
            for k in d.keys
            if isinstance(k, ast.Constant) and k.value in TRANSACT_ITEMS
        }

    # -------------------------------------------------------------- kinds
    def kind(self, node: ast.expr) -> tuple[str, ...] | None:
        if isinstance(node, ast.Call):
            return self._call_kind(node)
        if isinstance(node, ast.Attribute) and node.attr in HOOK_CLIENT_GETTERS:
            inner = self.kind(node.value)
            if inner and inner[0] == "hook":
                return ("client", inner[2])
        text = ast.unparse(node)
        if text in self.declared:
            self.scan.used_declared.add(text)
            return ("client", self.declared[text])
        if text in self.declared_hooks:
            hook = self.declared_hooks[text]
            return ("hook", hook, HOOK_SERVICES[hook])
        return self.bindings.get(text)

    def _call_kind(self, node: ast.Call) -> tuple[str, ...] | None:
        func, name = node.func, _terminal(node.func)
        if (
            name == "client"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and known_service(node.args[0].value)
        ):
            return ("client", node.args[0].value)
        if name in HOOK_SERVICES:
            service = HOOK_SERVICES[name] or next(
                (k.value.value for k in node.keywords if k.arg == "client_type" and isinstance(k.value, ast.Constant)), None
            )
            return ("hook", name, service) if service else None
        if isinstance(func, ast.Attribute) and func.attr in HOOK_CLIENT_GETTERS:
            inner = self.kind(func.value)
            if inner and inner[0] == "hook":
                return ("client", inner[2])
        if name in self.returns and (isinstance(func, ast.Name) or ast.unparse(func).startswith("self.")):
            return self.returns[name]
        return None

    def bind(self) -> None:
        """Names, attributes and functions bound to clients or hooks (to a fixed point)."""
        for _ in range(4):
            for node in ast.walk(self.tree):
                if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                    kind = self.kind(node.value)
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    for target in targets:
                        if kind and isinstance(target, ast.Name | ast.Attribute):
                            self.bindings[ast.unparse(target)] = kind
                elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    kinds = [
                        k
                        for r in ast.walk(node)
                        if isinstance(r, ast.Return) and r.value is not None and (k := self.kind(r.value))
                    ]
                    if kinds:
                        self.returns[node.name] = kinds[0]
                        if _is_property(node):
                            self.bindings[f"self.{node.name}"] = kinds[0]

    # -------------------------------------------------------------- calls
    def run(self) -> Scan:
        self.bind()
        self._visit(self.tree, "")
        return self.scan

    def _visit(self, node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            if isinstance(child, ast.Call):
                self.scan.called.add(_terminal(child.func))
                self.scan.graph[function].add(_terminal(child.func))
                if isinstance(child.func, ast.Attribute):
                    self._call(child, function)
            self._visit(child, inner)

    def _record(self, node: ast.Call, function: str, service: str, operation: str) -> None:
        text = ast.unparse(node.func)
        if (service, operation) == ("dynamodb", "TransactWriteItems"):
            if not self.transact_items:
                self.scan.problems.append(
                    f"{self.path}:{node.lineno}: {text}: no Put/Update/Delete/ConditionCheck "
                    "item in the file, so its actions are unknown"
                )
            for item in sorted(self.transact_items):
                self.scan.calls.append(Call(self.path, node.lineno, function, action("dynamodb", item), text))
            return
        self.scan.calls.append(Call(self.path, node.lineno, function, action(service, operation), text))

    def _call(self, node: ast.Call, function: str) -> None:
        assert isinstance(node.func, ast.Attribute)
        method, receiver = node.func.attr, node.func.value
        kind = self.kind(receiver)
        where = f"{self.path}:{node.lineno}: {ast.unparse(node.func)}"
        if kind and kind[0] == "client":
            self._client_call(node, function, kind[1], method, where)
        elif kind and kind[0] == "hook":
            if method in HOOK_CLIENT_GETTERS:
                return
            if (kind[1], method) not in HOOK_METHODS:
                self.scan.problems.append(
                    f"{where}: {kind[1]}.{method} is not in HOOK_METHODS; add the operations "
                    f"it calls (read the provider's source) to {TEST_FILE}"
                )
                return
            for operation in HOOK_METHODS[(kind[1], method)]:
                self._record(node, function, kind[2], operation)
        elif method == "resource" and node.args and isinstance(node.args[0], ast.Constant):
            self.scan.problems.append(f"{where}: a boto3 resource; use a client (this test reads client calls)")
        elif ast.unparse(receiver) not in NOT_AWS and (
            method in ("get_paginator", "get_waiter") or any(method in operations(s) for s in WATCHED)
        ):
            self.scan.problems.append(
                f"{where}: looks like an AWS call but `{ast.unparse(receiver)}` is not known as a client. Fix: "
                f"declare it in CLIENTS (file -> receiver -> service) or, if it is no AWS client, in NOT_AWS, "
                f"in {TEST_FILE}"
            )

    def _client_call(self, node: ast.Call, function: str, service: str, method: str, where: str) -> None:
        argument = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
        if method == "get_paginator" and isinstance(argument, str):
            self._record(node, function, service, operations(service)[argument])
        elif method == "get_waiter" and isinstance(argument, str):
            self._record(node, function, service, waiter_operation(service, argument))
        elif method in operations(service):
            self._record(node, function, service, operations(service)[method])
        elif (service, method) in BOTO3_METHODS:
            for operation in BOTO3_METHODS[(service, method)]:
                self._record(node, function, service, operation)
        elif method not in CLIENT_LOCAL:
            self.scan.problems.append(
                f"{where}: {service} clients have no operation `{method}` "
                f"(botocore {botocore.__version__}); fix the call or the receiver's service"
            )


@cache
def scan(path: str) -> Scan:
    return FileScanner(path, ast.parse((ROOT / path).read_text(), filename=path)).run()


def _imported_spark_jobs(paths: list[str]) -> set[str]:
    """spark_jobs modules imported by ``paths`` (and by those, transitively)."""
    found: set[str] = set()
    todo = list(paths)
    while todo:
        tree = ast.parse((ROOT / todo.pop()).read_text())
        for node in ast.walk(tree):
            names = (
                [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                if isinstance(node, ast.ImportFrom) and node.module
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for name in names:
                path = name.replace(".", "/") + ".py"
                if not (ROOT / path).is_file():
                    path = name.replace(".", "/") + "/__init__.py"  # a package
                if name.startswith("spark_jobs.") and (ROOT / path).is_file() and path not in found:
                    found.add(path)
                    todo.append(path)
    return found


def side_calls(side: Side) -> list[Call]:
    files = side.files()
    calls = [c for f in files for c in scan(f).calls]
    if side.shares_spark_jobs:
        shared = sorted(_imported_spark_jobs(files))
        reached: set[str] = set().union(*(scan(f).called for f in files))
        graph: dict[str, set[str]] = defaultdict(set)
        for path in shared:
            for function, names in scan(path).graph.items():
                graph[function] |= names
        todo = list(reached)
        while todo:
            for name in graph.get(todo.pop(), set()) - reached:
                reached.add(name)
                todo.append(name)
        calls += [c for f in shared for c in scan(f).calls if c.function in reached or not c.function]
    return calls


def policy_actions(side: Side) -> set[str]:
    document = json.loads((ROOT / side.policy).read_text())
    actions: set[str] = set()
    for statement in document["Statement"]:
        listed = statement["Action"]
        actions |= {listed} if isinstance(listed, str) else set(listed)
    return actions


# ------------------------------------------------------------------ the tests


def test_every_aws_call_is_understood() -> None:
    problems = [p for f in sorted({f for s in SIDES for f in s.files()}) for p in scan(f).problems]
    assert not problems, "\n".join(problems)


def test_the_declared_clients_are_in_use() -> None:
    for path, receivers in CLIENTS.items():
        if not (ROOT / path).is_file():
            pytest.fail(f"{TEST_FILE}: CLIENTS names {path}, which does not exist any more")
        unused = set(receivers) - scan(path).used_declared
        assert not unused, f"{TEST_FILE}: CLIENTS[{path!r}] declares {sorted(unused)}, which no AWS call uses"


def test_the_scan_finds_the_calls_it_should() -> None:
    """The scan itself, on calls known to be there (through hooks, properties, paginators, waiters, transactions)."""
    found = {(c.path, c.action) for s in SIDES for c in side_calls(s)}
    for expected in [
        ("plugins/spotlake/providers/emr.py", "elasticmapreduce:RunJobFlow"),  # EmrHook.create_job_flow
        ("plugins/spotlake/providers/emr.py", "elasticmapreduce:DescribeCluster"),  # self.client = self.hook.conn
        ("plugins/spotlake/registry.py", "dynamodb:UpdateItem"),  # transact_write_items of Update items
        ("plugins/spotlake/alert_store.py", "dynamodb:PutItem"),  # the alerts' conditional writes
        ("plugins/spotlake/alert_store.py", "dynamodb:Scan"),
        ("spark_jobs/common/lake_state.py", "dynamodb:ConditionCheckItem"),
        ("spark_jobs/common/database_secret.py", "secretsmanager:GetSecretValue"),  # boto3.client(...).get_secret_value
        ("plugins/spotlake/aws_setup.py", "dynamodb:CreateTable"),
        ("plugins/spotlake/aws_setup.py", "dynamodb:DescribeTable"),  # get_waiter("table_exists")
    ]:
        assert expected in found, f"the scan missed {expected}"
    airflow = {c.action for c in side_calls(SIDES[0]) if c.path == "spark_jobs/common/lake_state.py"}
    # Airflow uses lake_state's planning (ensure, plan_window, record_failure …), never its commit lock.
    assert {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"} <= airflow
    assert "dynamodb:ConditionCheckItem" not in airflow


def _missing(side: Side) -> Iterator[str]:
    granted = policy_actions(side)
    by_action: dict[str, list[Call]] = defaultdict(list)
    for call in side_calls(side):
        if (call.path, call.action) not in UNGRANTED_CALLS:
            by_action[call.action].append(call)
    for name, calls in sorted(by_action.items()):
        if name not in granted:
            yield (
                f"{side.policy} lacks {name}, which the code calls at "
                f"{', '.join(c.where for c in sorted(set(calls), key=lambda c: (c.path, c.line)))}. "
                f"Fix: add {name} to the policy (and to its copy in docs/deploying-to-aws.md), or drop the call"
            )


@pytest.mark.parametrize("side", SIDES, ids=lambda s: s.name)
def test_the_policy_grants_every_call(side: Side) -> None:
    missing = list(_missing(side))
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("side", SIDES, ids=lambda s: s.name)
def test_the_policy_grants_nothing_else(side: Side) -> None:
    called = {c.action for c in side_calls(side)}
    libraries = LIBRARY_ACTIONS[side.name]
    stale = sorted(policy_actions(side) - called - set(libraries))
    assert not stale, (
        f"{side.policy} grants {', '.join(stale)}, which no code of its side calls. Fix: remove "
        f"them, or, if a library needs them, add them to LIBRARY_ACTIONS in {TEST_FILE} with the reason"
    )
    unused = sorted(set(libraries) - policy_actions(side))
    assert not unused, f"{TEST_FILE}: LIBRARY_ACTIONS[{side.name!r}] lists {unused}, which {side.policy} no longer grants"


def test_the_ungranted_calls_are_still_made() -> None:
    made = {(c.path, c.action) for s in SIDES for c in side_calls(s)}
    for entry in UNGRANTED_CALLS:
        assert entry in made, f"{TEST_FILE}: UNGRANTED_CALLS lists {entry}, which the code no longer calls"


@pytest.mark.parametrize("side", SIDES, ids=lambda s: s.name)
def test_the_policy_is_well_formed(side: Side) -> None:
    text = (ROOT / side.policy).read_text()
    document = json.loads(text)
    assert document["Version"] == "2012-10-17" and set(document) == {"Version", "Statement"}
    sids = [s["Sid"] for s in document["Statement"]]
    assert len(sids) == len(set(sids)), f"{side.policy}: Sids repeat"
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow" and statement.get("Resource"), statement
        listed = statement["Action"]
        assert all("*" not in a for a in ([listed] if isinstance(listed, str) else listed)), (
            f"{side.policy}: no wildcard actions: {statement['Sid']}"
        )
    assert not re.search(r"\b\d{12}\b", text), f"{side.policy}: an account id; write <account>"
    assert "<account>" in text and "<region>" in text, f"{side.policy}: ARNs with <region> and <account>"


def _doc_policies() -> list[object]:
    return [
        json.loads(block) for block in re.findall(r"```json\n(.*?)```", DOC.read_text(), flags=re.S) if '"Statement"' in block
    ]


def test_the_doc_shows_the_policy_files() -> None:
    """docs/deploying-to-aws.md shows each policy file as it is (and names it), and no other policy."""
    shown = _doc_policies()
    doc = DOC.read_text()
    files = {side.policy: json.loads((ROOT / side.policy).read_text()) for side in SIDES}
    for path, document in files.items():
        assert document in shown, f"docs/deploying-to-aws.md does not show {path} as it is; copy the file into its block"
        assert f"({path.removeprefix('docs/')})" in doc, f"docs/deploying-to-aws.md does not link {path}"
    assert len(shown) == len(files), "docs/deploying-to-aws.md shows a policy that is not one of docs/iam/*.json"


def test_the_airflow_role_needs_no_table_creation() -> None:
    """Airflow's tasks never run the setup step (which would need dynamodb:CreateTable)."""
    for path in SIDES[0].files():
        if path == "plugins/spotlake/registry.py":
            continue
        assert "create_tables" not in scan(path).called and "ensure_tables" not in scan(path).called, (
            f"{path} creates the tables at run time: Airflow's role would need dynamodb:CreateTable; run "
            "python -m spotlake.aws_setup at deployment instead"
        )

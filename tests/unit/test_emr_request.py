"""The RunJobFlow request of every pool, checked field by field against EMR's rules that moto
does not enforce, and against botocore's own parameter validation."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from spotlake import pools
from spotlake.errors import ConfigError
from spotlake.providers.base import LaunchFailed
from spotlake.providers.emr import (
    TAG_MANAGED_POLICIES,
    EmrProvider,
    validate_request,
    validate_shape,
)

POOLS = Path(__file__).resolve().parents[2] / "config" / "pools.yaml"
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def emr_pools() -> pools.PoolsConfig:
    return pools.load(POOLS, provider="emr")


def request_of(pool: str) -> dict[str, Any]:
    return EmrProvider(probe=None).job_flow_request(emr_pools().get(pool), f"{pool}-1", NOW)


@pytest.mark.parametrize("pool", ["small", "large"])
def test_every_pools_request_keeps_emrs_rules_and_botocores_model(pool: str) -> None:
    request = request_of(pool)
    assert validate_request(request) == []
    assert validate_shape(request) == []


@pytest.mark.parametrize("pool", ["small", "large"])
def test_the_request_carries_what_a_job_needs_on_the_cluster(pool: str) -> None:
    request = request_of(pool)
    shape = emr_pools().get(pool).emr
    configs = {c["Classification"]: c for c in request["Configurations"]}
    # The driver stays off spot: client mode (Livy on the primary) and application masters on CORE.
    assert configs["livy-conf"]["Properties"]["livy.spark.deploy-mode"] == "client"
    assert configs["yarn-site"]["Properties"] == {
        "yarn.node-labels.enabled": "true",
        "yarn.node-labels.am.default-node-label-expression": "CORE",
    }
    export = configs["spark-env"]["Configurations"][0]
    assert export["Classification"] == "export"
    assert export["Properties"]["PYSPARK_PYTHON"] == "/usr/bin/python3.11"
    assert request["BootstrapActions"] == [
        {
            "Name": "install-python-3.11",
            "ScriptBootstrapAction": {
                "Path": "s3://spotlake-artifacts/spotlake/artifacts/bootstrap/install-python.sh",
                "Args": [],
            },
        }
    ]
    instances = request["Instances"]
    assert instances["EmrManagedMasterSecurityGroup"] == shape.security_groups.master
    assert instances["EmrManagedSlaveSecurityGroup"] == shape.security_groups.workers
    assert instances["ServiceAccessSecurityGroup"] == shape.security_groups.service_access
    assert request["ServiceRole"] == "EMR_DefaultRole_V2"
    assert {"Key": TAG_MANAGED_POLICIES, "Value": "true"} in request["Tags"]
    for fleet in instances["InstanceFleets"]:
        assert fleet["LaunchSpecifications"]["OnDemandSpecification"]["AllocationStrategy"] == "lowest-price"
    master = next(f for f in instances["InstanceFleets"] if f["InstanceFleetType"] == "MASTER")
    assert master["TargetOnDemandCapacity"] == 1 and "TargetSpotCapacity" not in master


def test_a_pools_own_classifications_are_merged_over_spotlakes() -> None:
    configs = {c["Classification"]: c for c in request_of("large")["Configurations"]}
    assert configs["spark-defaults"]["Properties"]["spark.executor.memory"] == "8g"
    raw = yaml.safe_load(POOLS.read_text())
    raw["pools"]["small"]["emr"]["configurations"] = [
        {"Classification": "livy-conf", "Properties": {"livy.server.session.timeout": "2h"}},
        {
            "Classification": "spark-env",
            "Configurations": [{"Classification": "export", "Properties": {"JAVA_HOME": "/usr/lib/jvm/java-17"}}],
        },
    ]
    pool = pools.parse(raw, POOLS, "emr").get("small")
    configs = {c["Classification"]: c for c in EmrProvider(probe=None).job_flow_request(pool, "c", NOW)["Configurations"]}
    assert configs["livy-conf"]["Properties"] == {"livy.spark.deploy-mode": "client", "livy.server.session.timeout": "2h"}
    assert configs["spark-env"]["Configurations"][0]["Properties"] == {
        "PYSPARK_PYTHON": "/usr/bin/python3.11",
        "PYSPARK_DRIVER_PYTHON": "/usr/bin/python3.11",
        "JAVA_HOME": "/usr/lib/jvm/java-17",
    }


def fleet(request: dict[str, Any], role: str) -> dict[str, Any]:
    return next(f for f in request["Instances"]["InstanceFleets"] if f["InstanceFleetType"] == role)


MUTATIONS = {
    "master with both targets": (lambda r: fleet(r, "MASTER").update(TargetSpotCapacity=0), "exactly one of"),
    "master capacity 2": (lambda r: fleet(r, "MASTER").update(TargetOnDemandCapacity=2), "to 1"),
    "spot timeout 2 minutes": (
        lambda r: fleet(r, "TASK")["LaunchSpecifications"]["SpotSpecification"].update(TimeoutDurationMinutes=2),
        "outside 5..1440",
    ),
    "no spot specification": (
        lambda r: fleet(r, "TASK")["LaunchSpecifications"].pop("SpotSpecification"),
        "needs LaunchSpecifications.SpotSpecification",
    ),
    "bad spot strategy": (
        lambda r: fleet(r, "TASK")["LaunchSpecifications"]["SpotSpecification"].update(AllocationStrategy="cheapest"),
        "AllocationStrategy must be one of",
    ),
    "no on-demand strategy": (lambda r: fleet(r, "CORE").pop("LaunchSpecifications"), "no OnDemandSpecification"),
    "idle timeout 10 s": (lambda r: r["AutoTerminationPolicy"].update(IdleTimeout=10), "IdleTimeout"),
    "v1 service role": (lambda r: r.update(ServiceRole="EMR_DefaultRole"), "deprecated v1 role"),
    "no managed-policies tag": (
        lambda r: r.update(Tags=[t for t in r["Tags"] if t["Key"] != TAG_MANAGED_POLICIES]),
        TAG_MANAGED_POLICIES,
    ),
    "EMR 6": (lambda r: r.update(ReleaseLabel="emr-6.15.0"), "not an EMR 7 release"),
    "bootstrap over https": (
        lambda r: r["BootstrapActions"][0]["ScriptBootstrapAction"].update(Path="https://example.com/x.sh"),
        "must be an s3:// location",
    ),
    "six instance types without strategy": (
        lambda r: fleet(r, "MASTER").update(InstanceTypeConfigs=[{"InstanceType": "m5.xlarge"}] * 6, LaunchSpecifications={}),
        "1 to 5",
    ),
    "classification twice": (lambda r: r["Configurations"].append(copy.deepcopy(r["Configurations"][0])), "appears twice"),
    "no subnets": (lambda r: r["Instances"].update(Ec2SubnetIds=[]), "at least one subnet"),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_each_rule_catches_its_breach(name: str) -> None:
    request = copy.deepcopy(request_of("small"))
    mutate, problem = MUTATIONS[name]
    mutate(request)
    assert any(problem in p for p in validate_request(request)), validate_request(request)


def test_botocore_validation_names_a_wrong_field() -> None:
    request = copy.deepcopy(request_of("small"))
    request["Instances"]["InstanceFleets"][0]["TargetOnDemandCapacity"] = "one"
    assert any("TargetOnDemandCapacity" in p for p in validate_shape(request))


def test_a_launch_with_a_broken_request_is_refused_before_any_call(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = yaml.safe_load(POOLS.read_text())
    pool = pools.parse(raw, POOLS, "emr").get("small")
    monkeypatch.setattr("spotlake.providers.emr._fleet", lambda f: {"InstanceFleetType": f.role, "InstanceTypeConfigs": []})
    with pytest.raises(LaunchFailed, match="breaks EMR's rules.*config/pools.yaml"):
        EmrProvider(probe=None).job_flow_request(pool, "c", NOW)


def edited(change: Any) -> dict[str, Any]:
    raw = yaml.safe_load(POOLS.read_text())
    change(raw)
    return raw


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda r: r["pools"]["small"]["emr"].update(service_role="EMR_DefaultRole"), "deprecated v1 service role"),
        (lambda r: r["pools"]["large"].update(launch_timeout="20m"), r"launch_timeout: 20m .* at least 25m"),
        (lambda r: r["pools"]["small"]["emr"].update(security_groups={"master": "default"}), "not a security group id"),
        (
            lambda r: r["pools"]["small"]["emr"].update(bootstrap_actions=[{"name": "x", "path": "/opt/x.sh"}]),
            "not an S3 location",
        ),
        (lambda r: r["pools"]["small"]["emr"].update(deploy_mode="yarn"), "deploy_mode"),
        (lambda r: r["pools"]["small"]["emr"].update(configurations=[{"Properties": {}}]), "Classification"),
    ],
)
def test_pool_config_refuses_what_emr_would(change: Any, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        pools.parse(edited(change), POOLS, "emr")


def test_the_launch_timeout_rule_applies_to_emr_only() -> None:
    raw = edited(lambda r: r["pools"]["large"].update(launch_timeout="20m"))
    assert pools.parse(raw, POOLS, "local").get("large").launch_timeout.total_seconds() == 1200

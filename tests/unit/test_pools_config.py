from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from spotlake import config, pools
from spotlake.errors import ConfigError

PATH = Path("config/pools.yaml")


def base() -> dict[str, Any]:
    return {
        "defaults": {"max_age": "6h", "failure_threshold": 3},
        "pools": {
            "small": {
                "serves": {"pipelines": ["shop_*"]},
                "local": {"master": "local[2]"},
                "emr": {
                    "release_label": "emr-7.5.0",
                    "subnet_ids": ["subnet-0a1", "subnet-0b2"],
                    "log_uri": "s3://logs/small/",
                    "service_role": "EMR_DefaultRole_V2",
                    "job_flow_role": "EMR_EC2_DefaultRole",
                    "idle_timeout": "1h",
                    "tags": {"team": "data"},
                    "livy_access": {"security_groups": ["sg-0a1"], "cidrs": ["10.1.0.0/24", "2001:DB8:0::/48"]},
                    "master": {"instance_types": [{"type": "m5.xlarge"}], "capacity": 1},
                    "core": {"instance_types": ["m5.xlarge"], "capacity": 1},
                    "task": {
                        "instance_types": [{"type": "m5.xlarge"}, {"type": "m5a.xlarge", "weight": 2}],
                        "capacity": 4,
                        "spot_timeout": "10m",
                    },
                },
            },
            "large": {"max_age": "12h", "local": {"master": "local[1]"}},
        },
    }


def parse(raw: dict[str, Any], provider: str = "local") -> pools.PoolsConfig:
    return pools.parse(raw, PATH, provider)


def test_project_pools_file_is_valid_for_both_providers() -> None:
    for provider in ("local", "emr"):
        cfg = pools.load(provider=provider)
        assert {"small", "large"} <= set(cfg.names())
        assert cfg.provider == provider
    small = pools.load(provider="emr").get("small")
    assert small.emr is not None and len(small.emr.task.instance_types) >= 3
    assert small.health_check_interval == timedelta(seconds=15)
    assert pools.load(provider="local").get("large").local.master == "local[1]"


def test_defaults_and_overrides() -> None:
    cfg = parse(base())
    small, large = cfg.get("small"), cfg.get("large")
    assert small.max_age == timedelta(hours=6) and large.max_age == timedelta(hours=12)
    assert small.health_check_interval == timedelta(seconds=15)  # built-in default
    assert small.failure_threshold == 3 and small.drain_deadline == timedelta(minutes=30)
    assert small.serves_pipeline("shop_orders") and not small.serves_pipeline("clicks")
    task = small.emr.task
    assert [t.type for t in task.instance_types] == ["m5.xlarge", "m5a.xlarge"]
    assert task.instance_types[1].weight == 2 and task.spot
    assert task.allocation_strategy == "capacity-optimized"
    assert small.emr.core.instance_types[0].type == "m5.xlarge"  # a bare string is a type


@pytest.mark.parametrize(
    ("path", "key", "where"),
    [
        (("pools", "small", "emr", "task", "instance_types", 0), "cpu", "pools.small.emr.task.instance_types[0]"),
        (("pools", "small", "emr", "master"), "spot_timeout", "pools.small.emr.master"),
        (("pools", "small", "emr"), "instance_type", "pools.small.emr"),
        (("pools", "small"), "max_agee", "pools.small"),
        (("pools", "small", "serves"), "tables", "pools.small.serves"),
        (("defaults",), "pool", "defaults"),
    ],
)
def test_unknown_key_anywhere_names_file_pool_key_and_allowed(path: tuple[Any, ...], key: str, where: str) -> None:
    raw = copy.deepcopy(base())
    node: Any = raw
    for step in path:
        node = node[step]
    node[key] = 1
    with pytest.raises(ConfigError) as err:
        parse(raw)
    message = str(err.value)
    assert str(PATH) in message and where in message and key in message and "allowed keys are" in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r["pools"]["small"]["emr"].update(release_label="emr-6.15.0"), "EMR 7.x"),
        (lambda r: r["pools"]["small"]["emr"]["master"].update(capacity=2), "exactly one instance"),
        (lambda r: r["pools"]["small"]["emr"]["task"]["instance_types"][0].update(type="huge"), "EC2 instance type"),
        (lambda r: r["pools"]["small"]["emr"]["task"].update(allocation_strategy="cheapest"), "allocation_strategy"),
        (lambda r: r["pools"]["small"]["emr"].update(subnet_ids=[]), "subnet_ids"),
        (lambda r: r["pools"]["small"]["emr"].update(idle_timeout="30s"), "idle_timeout"),
        (lambda r: r["pools"]["small"]["emr"]["tags"].update({"spotlake:pool": "x"}), "fleet's own"),
        (lambda r: r["pools"]["small"].update(failure_threshold=0), "failure_threshold"),
        (lambda r: r["pools"]["small"].update(health_check_interval="soon"), "not a duration"),
        (lambda r: r["pools"]["small"]["local"].update(master="yarn"), "local[N]"),
        (lambda r: r["pools"]["small"]["emr"].pop("log_uri"), "missing key(s) log_uri"),
        (lambda r: r["pools"]["small"]["emr"].pop("livy_access"), "livy_access: required: Livy on the primary node runs"),
        (lambda r: r["pools"]["small"]["emr"]["livy_access"].update(cidrs=["0.0.0.0/0"]), "admits far more than the Airflow"),
        (lambda r: r["pools"]["small"]["emr"]["livy_access"].update(cidrs=["0.0.0.0/1"]), "admits far more than the Airflow"),
        (lambda r: r["pools"]["small"]["emr"]["livy_access"].update(cidrs=["10.1.0.1/24"]), "is not a CIDR block"),
        (lambda r: r["pools"]["small"]["emr"]["livy_access"].update(security_groups=["airflow"]), "security group ids"),
        (lambda r: r["pools"]["small"]["emr"].update(livy_access={"cidrs": []}), "at least one security group or CIDR"),
    ],
)
def test_invalid_values_say_where_and_how_to_fix(change: Any, expected: str) -> None:
    raw = copy.deepcopy(base())
    change(raw)
    with pytest.raises(ConfigError, match="pools.small") as err:
        parse(raw)
    assert expected in str(err.value)


def test_pool_needs_a_shape_for_the_provider_in_use() -> None:
    with pytest.raises(ConfigError, match=r"pools.large: SPOTLAKE_PROVIDER is 'emr' but the pool has no"):
        parse(base(), provider="emr")


def test_provider_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPOTLAKE_PROVIDER", raising=False)
    assert pools.provider_name() == "local"
    monkeypatch.setenv("SPOTLAKE_PROVIDER", "EMR")
    assert pools.provider_name() == "emr"
    monkeypatch.setenv("SPOTLAKE_PROVIDER", "k8s")
    with pytest.raises(ConfigError, match="set it to one of local, emr"):
        pools.provider_name()


def test_pipelines_run_on_pools_that_serve_them(tmp_path: Path) -> None:
    cfg = pools.load(provider="local")
    pools.check_pipelines(cfg, config.load())  # the project's files agree
    raw = yaml.safe_load(config.DEFAULT_CONFIG.read_text())
    raw["pipelines"][0]["pool"] = "huge"
    with pytest.raises(ConfigError, match="pool 'huge' is not defined"):
        pools.check_pipelines(cfg, config.parse(raw, tmp_path / "pipelines.yaml"))
    raw["pipelines"][0]["pool"] = "large"
    with pytest.raises(ConfigError, match="serves.pipelines does not list it"):
        pools.check_pipelines(cfg, config.parse(raw, tmp_path / "pipelines.yaml"))


def test_the_fleet_dags_owner_comes_from_the_defaults_or_the_pool() -> None:
    assert {p.name: p.owner for p in parse(base()).pools} == {"small": "data-platform", "large": "data-platform"}
    raw = copy.deepcopy(base())
    raw["defaults"]["owner"] = "platform-oncall"
    raw["pools"]["large"]["owner"] = "streaming"
    assert {p.name: p.owner for p in parse(raw).pools} == {"small": "platform-oncall", "large": "streaming"}


@pytest.mark.parametrize(("where", "bad"), [(("pools", "large"), "a, b"), (("defaults",), "")])
def test_a_bad_owner_names_the_file_the_entry_and_the_fix(where: tuple[str, ...], bad: str) -> None:
    raw = copy.deepcopy(base())
    node: Any = raw
    for step in where:
        node = node[step]
    node["owner"] = bad
    with pytest.raises(ConfigError) as err:
        parse(raw)
    at = "pools.large.owner" if where[0] == "pools" else "defaults.owner"
    assert str(err.value).startswith(f"{PATH}: {at}: {bad!r} is not an owner; write the one team or person")


def test_livy_access_blocks_are_kept_in_the_form_ec2_answers_with() -> None:
    access = parse(base()).get("small").emr.livy_access
    assert access == pools.LivyAccess(security_groups=("sg-0a1",), cidrs=("10.1.0.0/24", "2001:db8::/48"))

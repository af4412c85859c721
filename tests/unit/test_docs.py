"""The configuration reference documents every key the validators accept."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spotlake import alert_config, config, pools
from spotlake.alerts import AlertKind

DOC = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()


def documented(section: str) -> set[str]:
    """Names in back-quotes in the table rows of the doc's ``section`` (a ## heading)."""
    body = DOC.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in body.splitlines() if line.startswith("|")]
    names = (name for row in rows for name in re.findall(r"`([a-z_.<>]+)`", row.split("|")[1]))
    return {part for name in names for part in name.split(".")}


@pytest.mark.parametrize(
    ("section", "keys"),
    [
        ("`config/pipelines.yaml`", config.DEFAULTS_KEYS),
        ("`config/pipelines.yaml`", config.PIPELINE_KEYS),
        ("`config/pipelines.yaml`", config.SOURCE_KEYS),
        ("`config/pipelines.yaml`", set(config.TRANSFORM_OPS)),
        ("`config/pipelines.yaml`", config.LAKE_KEYS),
        ("`config/pipelines.yaml`", config.MAINTENANCE_KEYS),
        ("`config/pipelines.yaml`", config.RECONCILE_KEYS),
        ("`config/pools.yaml`", pools.POOL_KEYS),
        ("`config/pools.yaml`", pools.SERVES_KEYS | pools.LOCAL_KEYS),
        ("`config/pools.yaml`", pools.EMR_KEYS),
        ("`config/alerts.yaml`", alert_config.TOP_KEYS | alert_config.NOTIFIER_KEYS | alert_config.CONDITION_KEYS),
        ("`config/alerts.yaml`", {kind.value for kind in AlertKind}),
    ],
)
def test_every_accepted_key_is_documented(section: str, keys: set[str]) -> None:
    assert set(keys) - documented(section) == set()


def test_read_keys_are_documented() -> None:
    for key in config.READ_KEYS:
        assert f"`{key}`" in DOC

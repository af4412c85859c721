"""A minimal pipelines config and its parse, for tests of the config and of what reads it."""

from __future__ import annotations

from pathlib import Path

import yaml

from spotlake import config

BASE = {
    "sources": {"shop": {"secret_id": "spotlake/mysql/shop"}},
    "pipelines": [
        {
            "name": "orders",
            "source": "shop",
            "database": "shop",
            "table": "orders",
            "primary_key": "order_id",
            "cursor": "updated_at",
        }
    ],
}


def parse(raw: dict) -> config.PipelinesConfig:
    return config.parse(raw, Path("config/pipelines.yaml"))


def with_pipeline(**changes: object) -> dict:
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    raw["pipelines"][0].update(changes)
    return raw

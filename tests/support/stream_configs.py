"""A minimal streams config and its parse, for tests of the streaming config and of what reads it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from spotlake import streaming

PATH = Path("config/streaming.yaml")


BASE: dict[str, Any] = {
    "defaults": {"pool": "large", "trigger_interval": "5s"},
    "streams": {
        "clicks": {
            "topics": ["clicks"],
            "sink": {"secret_id": "spotlake/postgres/clicks", "schema": "clickstream"},
            "checkpoint": "s3a://checkpoints/streams/clicks",
            "lake": {"namespace": "clicks"},
        }
    },
}


def parse(**changes: Any) -> streaming.StreamsConfig:
    raw = copy.deepcopy(BASE)
    raw["streams"]["clicks"].update(changes)
    return streaming.parse(raw, PATH)

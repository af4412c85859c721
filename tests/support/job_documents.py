"""The reference extraction job document (the contract's example) and variations of it."""

from __future__ import annotations

import copy
from typing import Any

from spark_jobs.common.job_documents import ExtractJob

BASE_JOB: dict[str, Any] = {
    "job_key": "shop_orders#20261127T140000Z",
    "attempt": 1,
    "run_id": "0123456789abcdef0123456789abcdef",
    "pipeline": "shop_orders",
    "source": {"secret_id": "spotlake/mysql/shop"},
    "database": "shop",
    "table": "orders",
    "primary_key": ["order_id"],
    "cursor": "updated_at",
    "soft_delete": "deleted_at",
    "window": {
        "start": "2026-11-27T14:00:00+00:00",
        "end": "2026-11-27T14:05:00+00:00",
        "read_from": "2026-11-27T13:55:00+00:00",
    },
    "transforms": [],
    "lake": {
        "catalog": "lake",
        "type": "jdbc",
        "warehouse": "s3://spotlake-lake/warehouse",
        "namespace": "shop",
        "current": "shop_orders",
        "changes": "shop_orders_changes",
        "secret_id": "spotlake/postgres/catalog",
    },
    "registry": {"prefix": "spotlake", "region": "eu-west-1"},
    "read": {"fetch_size": 10000, "partition_rows": 250000, "max_partitions": 2},
}


def job_with(**changes: Any) -> ExtractJob:
    document = copy.deepcopy(BASE_JOB)
    document.update(changes)
    return ExtractJob.from_dict(document)

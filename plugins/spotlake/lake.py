"""Reading the lake outside Spark: its Iceberg tables through pyiceberg (and DuckDB).

The tables are plain Apache Iceberg tables, so any engine reads them: Spark SQL and
Athena in AWS (the Glue Data Catalog), and here pyiceberg, which reads what Spark
wrote, merge-on-read deletes included. :func:`load` opens a pipeline's current-state
(or changes) table from the catalog configured in ``config/pipelines.yaml``::

    python -m spotlake.lake shop_orders --limit 5           # the current-state table
    python -m spotlake.lake shop_orders --changes --sql "SELECT _op, count(*) FROM t GROUP BY 1"

The JDBC catalog's credentials come from its Secrets Manager secret, as on the cluster.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any
from urllib.parse import quote, urlparse

import pyarrow as pa

from spark_jobs.common.database_secret import parse_database_secret
from spotlake import config, stack
from spotlake.errors import SpotlakeError


def split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme not in ("s3", "s3a"):
        raise ValueError(f"{uri} is not an s3:// or s3a:// URI")
    return parsed.netloc, parsed.path.lstrip("/")


def s3_properties() -> dict[str, str]:
    """pyiceberg's S3 settings: the endpoint of ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` if set
    (path-style, as for the Spark jobs), the region; keys from the usual AWS environment."""
    props: dict[str, str] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        props.update({"s3.endpoint": endpoint, "s3.path-style-access": "true"})
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        props["s3.region"] = region
    return props


def catalog(lake: config.Lake, secrets: Any = None) -> Any:
    """The lake's catalog as pyiceberg sees it (same name as Spark's, as pyiceberg requires)."""
    if lake.type == "glue":
        from pyiceberg.catalog.glue import GlueCatalog

        return GlueCatalog(lake.catalog, warehouse=lake.warehouse, **s3_properties(), **lake.properties)
    from pyiceberg.catalog.sql import SqlCatalog

    if secrets is None:
        import boto3

        secrets = boto3.client("secretsmanager")
    secret = parse_database_secret(
        secrets.get_secret_value(SecretId=lake.secret_id).get("SecretString"),
        f"lake catalog secret '{lake.secret_id}'",
        SpotlakeError,
        database_required=True,
        endpoint=lake.endpoint,
    )
    uri = (
        f"postgresql+psycopg2://{quote(secret.username, safe='')}:{quote(secret.password, safe='')}"
        f"@{secret.host}:{secret.port}/{secret.database}"
    )
    return SqlCatalog(lake.catalog, uri=uri, warehouse=lake.warehouse, **s3_properties(), **lake.properties)


def load(pipelines: config.PipelinesConfig, pipeline: str, changes: bool = False, secrets: Any = None) -> Any:
    """A pipeline's current-state table (or its changes table) as a pyiceberg ``Table``."""
    p = pipelines.get(pipeline)
    name = p.changes_table if changes else p.current_table
    return catalog(pipelines.lake, secrets).load_table(f"{pipelines.lake.namespace}.{name}")


def read(
    pipelines: config.PipelinesConfig, pipeline: str, changes: bool = False, include_deleted: bool = True, secrets: Any = None
) -> pa.Table:
    """A pipeline's table as Arrow; soft-deleted rows left out of the current state on request."""
    table = load(pipelines, pipeline, changes, secrets)
    p = pipelines.get(pipeline)
    row_filter = f"{p.soft_delete} IS NULL" if (p.soft_delete and not include_deleted and not changes) else None
    scan = table.scan(row_filter=row_filter) if row_filter else table.scan()
    return scan.to_arrow()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spotlake.lake", description=__doc__.splitlines()[0])
    parser.add_argument("pipeline")
    parser.add_argument("--changes", action="store_true", help="the changes table (every row version read)")
    parser.add_argument("--sql", default="SELECT * FROM t", help="DuckDB SQL over the table, named t")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--local", action="store_true", help="the local stack's services (`make up`)")
    args = parser.parse_args(argv)
    if args.local:
        from spotlake.stack import StackLayout

        os.environ.update(stack.aws_env(StackLayout.default()))
    import duckdb

    try:
        t = read(config.load(), args.pipeline, changes=args.changes)  # noqa: F841 - DuckDB reads it by name
    except SpotlakeError as exc:
        print(f"spotlake lake: {exc}", file=sys.stderr)
        return 2
    print(duckdb.sql(f"{args.sql} LIMIT {int(args.limit)}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

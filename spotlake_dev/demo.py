"""The demo: a small shop database in MariaDB, a workload that keeps changing it,
and the lake, secrets, registry and local clusters the demo pipelines need.

    python -m spotlake_dev.demo setup      # idempotent; `make up` runs it
    python -m spotlake_dev.demo workload   # inserts, updates and soft-deletes at a modest rate
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import UTC, datetime
from typing import Any

import boto3
import pymysql

from spotlake import stack
from spotlake.stack import StackLayout
from spotlake_dev.localstack import services

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS customers (
        customer_id BIGINT PRIMARY KEY AUTO_INCREMENT,
        email VARCHAR(120) NOT NULL,
        full_name VARCHAR(120) NOT NULL,
        phone VARCHAR(32),
        country CHAR(2) NOT NULL,
        created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
        updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
        deleted_at DATETIME(3) NULL,
        KEY ix_customers_updated_at (updated_at)
    )""",
    """CREATE TABLE IF NOT EXISTS orders (
        order_id BIGINT PRIMARY KEY AUTO_INCREMENT,
        customer_id BIGINT NOT NULL,
        status VARCHAR(16) NOT NULL,
        total DECIMAL(12,2) NOT NULL,
        currency CHAR(3) NOT NULL,
        created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
        updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
        deleted_at DATETIME(3) NULL,
        KEY ix_orders_updated_at (updated_at),
        KEY ix_orders_customer (customer_id)
    )""",
    """CREATE TABLE IF NOT EXISTS order_items (
        order_item_id BIGINT PRIMARY KEY AUTO_INCREMENT,
        order_id BIGINT NOT NULL,
        sku VARCHAR(32) NOT NULL,
        quantity INT NOT NULL,
        unit_price DECIMAL(10,2) NOT NULL,
        updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
        deleted_at DATETIME(3) NULL,
        KEY ix_order_items_updated_at (updated_at),
        KEY ix_order_items_order (order_id)
    )""",
]

FIRST = ["Ada", "Grace", "Linus", "Margaret", "Alan", "Barbara", "Ken", "Frances", "Dennis", "Radia"]
LAST = ["Lovelace", "Hopper", "Torvalds", "Hamilton", "Turing", "Liskov", "Thompson", "Allen", "Ritchie"]
COUNTRIES = ["ZA", "GB", "US", "DE", "NG", "KE", "IN", "BR", "FR", "NL"]
STATUSES = ["placed", "paid", "shipped", "delivered", "cancelled"]
SKUS = [f"SKU-{i:04d}" for i in range(1, 201)]

LAKE_BUCKET = "spotlake-lake"
SECRET_ID = "spotlake/mysql/shop"
SINK_SECRET_ID = "spotlake/postgres/clicks"
CATALOG_SECRET_ID = "spotlake/postgres/lake-catalog"  # lake.secret_id of config/pipelines.yaml
CLICKS_TOPIC = "clicks"


def connect(layout: StackLayout, database: str | None = None) -> pymysql.Connection:
    cfg = stack.mysql_settings(layout)
    return pymysql.connect(
        host=cfg["host"],
        port=int(cfg["port"]),
        user=cfg["user"],
        password=cfg["password"],
        database=database or cfg["database"],
        autocommit=True,
    )


def _customer(rng: random.Random) -> tuple[Any, ...]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    email = f" {first}.{last}{rng.randint(1, 99999)}@Example.COM ".replace("..", ".")
    phone = f"+27 {rng.randint(60, 89)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}"
    return (email, f"{first} {last}", phone, rng.choice(COUNTRIES))


def seed(layout: StackLayout, customers: int = 2000, orders: int = 5000, seed_value: int = 7) -> dict[str, int]:
    """Create the shop schema and, if it is empty, fill it (idempotent)."""
    rng = random.Random(seed_value)
    conn = connect(layout)
    with conn.cursor() as cur:
        for ddl in SCHEMA:
            cur.execute(ddl)
        cur.execute("SELECT COUNT(*) FROM customers")
        if cur.fetchone()[0] == 0:
            cur.executemany(
                "INSERT INTO customers (email, full_name, phone, country) VALUES (%s, %s, %s, %s)",
                [_customer(rng) for _ in range(customers)],
            )
            cur.executemany(
                "INSERT INTO orders (customer_id, status, total, currency) VALUES (%s, %s, %s, 'ZAR')",
                [(rng.randint(1, customers), rng.choice(STATUSES), round(rng.uniform(5, 900), 2)) for _ in range(orders)],
            )
            cur.executemany(
                "INSERT INTO order_items (order_id, sku, quantity, unit_price) VALUES (%s, %s, %s, %s)",
                [
                    (rng.randint(1, orders), rng.choice(SKUS), rng.randint(1, 5), round(rng.uniform(1, 300), 2))
                    for _ in range(orders * 2)
                ],
            )
        counts = {}
        for table in ("customers", "orders", "order_items"):
            cur.execute(f"SELECT COUNT(*) FROM {table}")
            counts[table] = cur.fetchone()[0]
    conn.close()
    return counts


def workload_step(cur: Any, rng: random.Random) -> str:
    """One change to the shop: a new order, a status update, or a soft delete."""
    roll = rng.random()
    if roll < 0.45:
        cur.execute("SELECT MAX(customer_id) FROM customers")
        customers = cur.fetchone()[0] or 1
        cur.execute(
            "INSERT INTO orders (customer_id, status, total, currency) VALUES (%s, 'placed', %s, 'ZAR')",
            (rng.randint(1, customers), round(rng.uniform(5, 900), 2)),
        )
        order_id = cur.lastrowid
        cur.executemany(
            "INSERT INTO order_items (order_id, sku, quantity, unit_price) VALUES (%s, %s, %s, %s)",
            [(order_id, rng.choice(SKUS), rng.randint(1, 5), round(rng.uniform(1, 300), 2)) for _ in range(rng.randint(1, 4))],
        )
        return "insert order"
    if roll < 0.80:
        cur.execute("SELECT MAX(order_id) FROM orders")
        top = cur.fetchone()[0] or 1
        cur.execute(
            "UPDATE orders SET status = %s WHERE order_id = %s AND deleted_at IS NULL",
            (rng.choice(STATUSES), rng.randint(max(1, top - 500), top)),
        )
        return "update order"
    if roll < 0.90:
        cur.execute("INSERT INTO customers (email, full_name, phone, country) VALUES (%s, %s, %s, %s)", _customer(rng))
        return "insert customer"
    if roll < 0.97:
        cur.execute("SELECT MAX(customer_id) FROM customers")
        top = cur.fetchone()[0] or 1
        cur.execute(
            "UPDATE customers SET phone = %s WHERE customer_id = %s",
            (f"+27 82 {rng.randint(100, 999)} {rng.randint(1000, 9999)}", rng.randint(1, top)),
        )
        return "update customer"
    cur.execute("SELECT MAX(order_id) FROM orders")
    top = cur.fetchone()[0] or 1
    cur.execute(
        "UPDATE orders SET deleted_at = CURRENT_TIMESTAMP(3) WHERE order_id = %s AND deleted_at IS NULL", (rng.randint(1, top),)
    )
    return "soft delete order"


def workload(layout: StackLayout, rate: float, duration: float | None, seed_value: int | None) -> None:
    rng = random.Random(seed_value)
    conn = connect(layout)
    interval = 1.0 / rate
    started = time.monotonic()
    done = 0
    with conn.cursor() as cur:
        while duration is None or time.monotonic() - started < duration:
            workload_step(cur, rng)
            done += 1
            next_at = started + done * interval
            time.sleep(max(0.0, next_at - time.monotonic()))
            if done % 600 == 0:
                print(f"{datetime.now(UTC).isoformat(timespec='seconds')} workload: {done} changes", flush=True)


def _put_secret(sm: Any, secret_id: str, value: dict[str, Any]) -> None:
    try:
        sm.create_secret(Name=secret_id, SecretString=json.dumps(value))
    except sm.exceptions.ResourceExistsException:
        sm.put_secret_value(SecretId=secret_id, SecretString=json.dumps(value))


def aws_resources(layout: StackLayout) -> None:
    """The lake bucket (local S3 server), the source, sink and lake-catalog secrets and the
    registry tables (moto server), idempotently."""
    from spotlake.registry import Registry

    endpoint = stack.moto_endpoint(layout)
    env = stack.aws_env(layout)
    session = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    s3 = session.client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"])
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if LAKE_BUCKET not in existing:
        s3.create_bucket(Bucket=LAKE_BUCKET)
    cfg = stack.mysql_settings(layout)
    sm = session.client("secretsmanager", endpoint_url=endpoint)
    _put_secret(
        sm,
        SECRET_ID,
        {
            "host": cfg["host"],
            "port": int(cfg["port"]),
            "database": cfg["database"],
            "username": cfg["user"],
            "password": cfg["password"],
        },
    )
    Registry(session.client("dynamodb", endpoint_url=endpoint)).create_tables()
    # The click stream: its sink secret and checkpoint bucket (see config/streaming.yaml).
    if "spotlake-checkpoints" not in existing:
        s3.create_bucket(Bucket="spotlake-checkpoints")
    pg = services.postgres_settings(layout)
    database = {"host": pg["host"], "port": int(pg["port"]), "username": pg["user"], "password": pg["password"]}
    _put_secret(sm, SINK_SECRET_ID, {**database, "database": pg["database"]})
    _put_secret(sm, CATALOG_SECRET_ID, {**database, "database": pg["catalog_database"]})


def clicks_topic(layout: StackLayout, partitions: int = 3) -> str:
    """Create the demo's click topic if it is missing (the broker does not auto-create)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{layout.port('kafka')}"})
    if CLICKS_TOPIC not in admin.list_topics(timeout=10).topics:
        future = admin.create_topics([NewTopic(CLICKS_TOPIC, num_partitions=partitions, replication_factor=1)])
        future[CLICKS_TOPIC].result(timeout=30)
    return CLICKS_TOPIC


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spotlake_dev.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup")
    work = sub.add_parser("workload")
    work.add_argument("--rate", type=float, default=2.0, help="changes per second (default 2)")
    work.add_argument("--duration", type=float, default=None, help="seconds (default: until stopped)")
    work.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    layout = StackLayout.default()
    if args.command == "setup":
        counts = seed(layout)
        aws_resources(layout)
        print("demo shop: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        print(
            f"click stream: topic '{clicks_topic(layout)}', sink secret '{SINK_SECRET_ID}' "
            "(the stream_clicks DAG starts paused: unpause it, then send events with "
            "`python -m spotlake_dev.clickgen --rate 100`)"
        )
        from spotlake_dev.localstack.fleet_local import ensure_local_pools

        for line in ensure_local_pools(layout):
            print(line)
        start_workload(layout)
    else:
        workload(layout, args.rate, args.duration, args.seed)
    return 0


def start_workload(layout: StackLayout) -> None:
    from spotlake_dev.localstack.process import ServiceSpec, Supervisor

    Supervisor(layout).start(
        ServiceSpec(
            name="workload",
            argv=[layout.python, "-m", "spotlake_dev.demo", "workload"],
            ports=[],
            ready=lambda: True,
            env={"PYTHONPATH": str(layout.project / "plugins")},
        )
    )
    print(f"demo workload: running (python -m spotlake_dev.demo workload), log {layout.log_dir}/workload.log")


if __name__ == "__main__":
    sys.exit(main())

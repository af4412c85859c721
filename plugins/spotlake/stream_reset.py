"""``python -m spotlake.stream_reset``: say where a stream's new checkpoint starts.

A stream's progress in its sink belongs to one checkpoint (``stream_progress.checkpoint_id``,
Spark's id of it). When the checkpoint is deleted, lost or replaced, the job refuses to start
on a new one: Spark would number its batches from 0 again and start from the configured
offsets, which counts events twice or skips them. This command records the explicit decision
(``stream_checkpoint_resets``); the next run with a new checkpoint consumes it, logs it, and
starts there::

    python -m spotlake.stream_reset clicks --from committed      # where the sink stopped: exactly once
    python -m spotlake.stream_reset clicks --from earliest       # re-read the topics (counts again)
    python -m spotlake.stream_reset clicks --from latest         # skip to the end (events are lost)
    python -m spotlake.stream_reset clicks --from '{"clicks": {"0": 1200, "1": 1180}}'
    python -m spotlake.stream_reset clicks --from committed --local   # on the local stack

``committed`` takes the offsets the sink committed with its last micro-batch; partitions
it never read start at their earliest offset. The sink is reached through the stream's
Secrets Manager secret, as the job reaches it; Kafka (for the partitions) through
``--bootstrap-servers`` (``--local``: the local stack's).
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import os
import socket
import sys
from collections.abc import Mapping
from typing import Any

from spark_jobs.clickstream.sink import resolve_target
from spark_jobs.common.errors import SpotlakeJobError
from spotlake import sink_schema, stack, streaming
from spotlake.errors import SpotlakeError

EARLIEST = -2  # Spark's startingOffsets JSON: -2 earliest, -1 latest


def starting_offsets(starting_from: str, committed: dict[str, dict[str, int]], partitions: dict[str, int], stream: str) -> str:
    """Spark's ``startingOffsets`` for a reset ``--from starting_from`` (committed, earliest, latest
    or a JSON object of offsets); ``partitions``: each topic's partition count."""
    if starting_from in ("earliest", "latest"):
        return starting_from
    if starting_from == "committed":
        if not committed:
            raise SpotlakeError(
                f"stream {stream}: the sink has committed no offsets yet; reset --from earliest "
                "(nothing was counted) or --from latest"
            )
        # Topics the stream no longer reads (a topics change is what needs a new checkpoint) are left out.
        given: Mapping[str, Mapping[str, Any]] = {topic: parts for topic, parts in committed.items() if topic in partitions}
    else:
        try:
            parsed: Any = json.loads(starting_from)
        except json.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
            raise SpotlakeError(
                f"stream {stream}: --from {starting_from!r} is not committed, earliest, latest or a JSON object of "
                'offsets per topic and partition such as \'{"clicks": {"0": 1200}}\''
            )
        given = parsed
    unknown = sorted(set(given) - set(partitions))
    if unknown:
        raise SpotlakeError(
            f"stream {stream}: offsets name topic(s) {', '.join(unknown)}, which the stream does "
            f"not read ({', '.join(partitions)})"
        )
    # Spark needs every partition of every topic; the ones not named start at their earliest offset.
    return json.dumps(
        {
            topic: {str(p): int(given.get(topic, {}).get(str(p), EARLIEST)) for p in range(count)}
            for topic, count in partitions.items()
        },
        separators=(",", ":"),
    )


def request_reset(
    connection: Any, schema: str, query_name: str, starting_from: str, partitions: dict[str, int], requested_by: str
) -> dict[str, Any]:
    """Record the reset (replacing one not yet consumed); returns what it recorded."""
    quoted = sink_schema.quote_schema(schema)
    with connection.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (f"{quoted}.stream_checkpoint_resets",))
        if cur.fetchone()[0] is None:
            raise SpotlakeError(
                f"stream {query_name}: the sink schema {schema} has no stream_checkpoint_resets table: "
                "its migrations are older than this command — let the stream's supervisor DAG run "
                "once (it applies them), then try again"
            )
        cur.execute(
            f"SELECT offsets, checkpoint_id, last_batch_id FROM {quoted}.stream_progress WHERE query_name = %s FOR UPDATE",
            (query_name,),
        )
        row = cur.fetchone()
        committed = (row[0] if isinstance(row[0], dict) else json.loads(row[0] or "{}")) if row else {}
        offsets = starting_offsets(starting_from, committed, partitions, query_name)
        cur.execute(f"DELETE FROM {quoted}.stream_checkpoint_resets WHERE query_name = %s AND consumed_at IS NULL", (query_name,))
        kind = starting_from if starting_from in ("committed", "earliest", "latest") else "offsets"
        cur.execute(
            f"INSERT INTO {quoted}.stream_checkpoint_resets (query_name, starting_from, starting_offsets, "
            "requested_by, previous_checkpoint_id, previous_last_batch_id) VALUES (%s, %s, %s, %s, %s, %s) "
            "RETURNING reset_id",
            (query_name, kind, offsets, requested_by, row[1] if row else None, row[2] if row else None),
        )
        reset_id = cur.fetchone()[0]
    connection.commit()
    return {
        "reset_id": reset_id,
        "stream": query_name,
        "from": kind,
        "starting_offsets": offsets,
        "previous_checkpoint_id": row[1] if row else None,
        "previous_last_batch_id": row[2] if row else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spotlake.stream_reset", description=__doc__.splitlines()[0])
    parser.add_argument("stream", help="the stream's name in config/streaming.yaml")
    parser.add_argument(
        "--from",
        dest="starting_from",
        required=True,
        help="committed (the sink's offsets), earliest, latest, or a JSON object of offsets",
    )
    parser.add_argument("--bootstrap-servers", help="Kafka's brokers (host:port,...), to list the partitions")
    parser.add_argument("--local", action="store_true", help="the local stack's Secrets Manager and Kafka")
    parser.add_argument(
        "--ca-file",
        help="the sink's CA bundle (PEM) on this machine, in place of sink.tls.ca_file (a path on the cluster nodes)",
    )
    args = parser.parse_args(argv)
    try:
        stream = streaming.load().get(args.stream)
        bootstrap = args.bootstrap_servers
        if args.local:
            from spotlake.stack import StackLayout

            layout = StackLayout.default()
            os.environ.update(stack.aws_env(layout))
            bootstrap = bootstrap or stack.kafka_bootstrap(layout)
        if not bootstrap:
            raise SpotlakeError("name Kafka's brokers with --bootstrap-servers host:port (or --local on the local stack)")
        from spotlake.stream_supervisor import KafkaTopics

        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        partitions = KafkaTopics(bootstrap, security=stream.kafka_security, region=region).check_topics(
            stream.name, stream.topics
        )
        tls = dataclasses.replace(stream.sink_tls, ca_file=args.ca_file) if args.ca_file else stream.sink_tls
        target = resolve_target(stream.sink_secret_id, stream.name, region, stream.sink_endpoint, tls)
        import psycopg2

        connection = psycopg2.connect(
            host=target.host,
            port=target.port,
            dbname=target.database,
            user=target.username,
            password=target.password,
            connect_timeout=10,
            **target.ssl_params(stream.name),
        )
        try:
            recorded = request_reset(
                connection,
                stream.sink_schema,
                stream.query_name,
                args.starting_from,
                partitions,
                f"{getpass.getuser()}@{socket.gethostname()}",
            )
        finally:
            connection.close()
    except (SpotlakeError, SpotlakeJobError) as exc:
        print(f"spotlake stream_reset: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(recorded, indent=2))
    print(
        f"The next run of stream {stream.name} with a new checkpoint starts there ('committed': at the sink's "
        f"offsets when it starts). If the stream still runs on an old checkpoint: pause its DAG, delete its "
        f"batch and {stream.checkpoint}, then unpause it."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

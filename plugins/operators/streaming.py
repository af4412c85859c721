"""Supervise a click stream: one step of :class:`spotlake.stream_supervisor.StreamSupervisor`.

The operator reads its stream's configuration, builds the supervisor's
collaborators from Airflow connections (the registry and S3 through ``aws_conn_id``,
Kafka through the stream's ``kafka_conn_id``, the sink's owner through its
``postgres_conn_id``), runs one step, logs the step's report (state, batch, last
committed micro-batch, lag) and returns it as its XCom. It fails the task, with the
reason, when a topic is missing, Kafka does not answer, or the restart budget is
spent (the alert). It never waits for the stream: the stream outlives the task.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from hooks import aws
from hooks.livy import EndpointLivyHook, LivyBatchControl
from spotlake import artifacts, streaming
from spotlake.errors import SpotlakeError
from spotlake.registry import Registry
from spotlake.stream_status import StreamStatusStore
from spotlake.stream_supervisor import (
    KafkaTopics,
    SinkDatabase,
    StreamSupervisor,
    SupervisionReport,
)


def bootstrap_servers(conn_id: str) -> str:
    """``bootstrap.servers`` of an Airflow connection: its extra, else host:port."""
    from airflow.sdk import BaseHook

    connection = BaseHook.get_connection(conn_id)
    servers = (connection.extra_dejson or {}).get("bootstrap.servers")
    if not servers and connection.host:
        servers = f"{connection.host}:{connection.port or 9092}"
    if not servers:
        raise AirflowException(
            f'Airflow connection \'{conn_id}\' names no Kafka brokers; set its extra to {{"bootstrap.servers": "host:port,..."}}'
        )
    return str(servers)


class StreamSupervisorOperator(BaseOperator):
    """Keep stream ``stream_name`` of ``config/streaming.yaml`` running on its pool."""

    template_fields = ("stream_name",)
    ui_color = "#f3e3d6"

    def __init__(self, *, stream_name: str, aws_conn_id: str | None = "aws_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stream_name = stream_name
        self.aws_conn_id = aws_conn_id

    @cached_property
    def stream(self) -> streaming.StreamConfig:
        return streaming.load().get(self.stream_name)

    @cached_property
    def registry(self) -> Registry:
        return aws.registry(self.aws_conn_id)

    @cached_property
    def s3(self) -> Any:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.aws_conn_id).get_conn()

    def postgres(self) -> Any:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        return PostgresHook(postgres_conn_id=self.stream.postgres_conn_id).get_conn()

    def supervisor(self) -> StreamSupervisor:
        stream = self.stream
        return StreamSupervisor(
            stream=stream,
            registry=self.registry,
            statuses=StreamStatusStore(self.registry.client, self.registry.prefix),
            kafka=KafkaTopics(
                bootstrap_servers(stream.kafka_conn_id),
                stream.kafka_conn_id,
                security=stream.kafka_security,
                region=self.registry.client.meta.region_name,
            ),
            sink=SinkDatabase(self.postgres, stream.sink_schema),
            client_for=EndpointLivyHook,
            control_for=LivyBatchControl,
            publish=lambda: artifacts.publish("clickstream", s3=self.s3),
        )

    def execute(self, context: Any) -> dict[str, Any]:
        try:
            report: SupervisionReport = self.supervisor().supervise()
        except SpotlakeError as exc:
            raise AirflowException(str(exc)) from None
        for line in report.lines():
            self.log.info("%s", line)
        return report.to_dict()

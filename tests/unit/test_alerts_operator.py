"""The alerts task: raise, clear and send through Airflow's notifiers; a failed notifier is owed the event (moto, fakes)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier
from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import BaseNotifier
from airflow.sdk.exceptions import AirflowException
from moto import mock_aws
from structlog.testing import capture_logs

from operators.alerts import AlertLogNotifier, AlertsOperator, notifier_factory
from spark_jobs.common.lake_state import LakeState
from spotlake import alert_config
from spotlake.alert_config import NotifierConfig, NotifierType
from spotlake.alert_store import AlertRecord, AlertState, AlertStore, Delivery
from spotlake.alerts import Event, Transition
from spotlake.registry import Cluster, Registry

SETTINGS = {
    "notifiers": {"log": {"type": "log"}, "oncall": {"type": "email", "to": "oncall@example.com"}},
    "conditions": {"no_ready": {"after": "0s", "notify": ["log"]}},
}


class Recording(BaseNotifier):
    """A notifier that keeps what it was called with, or fails while ``down`` says so."""

    def __init__(self, sent: list[dict[str, Any]], down: list[bool]) -> None:
        super().__init__()
        self.sent, self.down = sent, down

    def notify(self, context: Any) -> None:
        if self.down[0]:
            raise ConnectionRefusedError("smtp.example.com:587 refused the connection")
        self.sent.append(context["alert"])


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    monkeypatch.setenv("SPOTLAKE_PROVIDER", "local")
    with mock_aws():
        reg = Registry(boto3.client("dynamodb", region_name="us-east-1"), "al")
        reg.create_tables()
        yield reg


def operator(registry: Registry, notifiers: dict[str, Any]) -> AlertsOperator:
    op = AlertsOperator(task_id="alerts")
    op.__dict__["registry"] = registry  # the cached property, without an Airflow connection
    op.__dict__["settings"] = alert_config.parse(SETTINGS, Path("config/alerts.yaml"))
    op.__dict__["notifiers"] = notifiers
    return op


def ready(registry: Registry, pool: str) -> None:
    cluster = Cluster(pool=pool, cluster_id=f"{pool}-0001", provider="local", state="", generation=1)
    registry.put_launching(cluster)
    registry.mark_ready(cluster, "http://127.0.0.1:18998")


def test_a_failed_notifier_fails_the_task_and_is_retried_next_run_while_the_others_were_sent(registry: Registry) -> None:
    ready(registry, "small")  # pool large has none
    state = LakeState(registry.client, registry.prefix)
    state.ensure("shop_orders", False, datetime(2026, 1, 1, tzinfo=UTC))
    state.record_failure("shop_orders", "shop_orders#20260101T0005Z", "source secret 'spotlake/mysql/shop' cannot be read")
    logged: list[dict[str, Any]] = []
    mailed: list[dict[str, Any]] = []
    smtp_down = [True]
    op = operator(registry, {"log": lambda: Recording(logged, [False]), "oncall": lambda: Recording(mailed, smtp_down)})

    with pytest.raises(AirflowException) as failed:
        op.execute({})
    assert "1 notification(s) failed, retried at the next run: notifier 'oncall' (pipeline:shop_orders:stale raised)" in str(
        failed.value
    )
    assert "ConnectionRefusedError: smtp.example.com:587 refused the connection" in str(failed.value)
    # the log got both raises (the pool's goes to the log only), the email none
    assert sorted((a["key"], a["event"]) for a in logged) == [
        ("pipeline:shop_orders:stale", "raised"),
        ("pool:large:no_ready", "raised"),
    ]
    pipeline = next(a for a in logged if a["key"] == "pipeline:shop_orders:stale")
    assert "shop_orders#20260101T0005Z failed at" in pipeline["message"] and "DAG extract_shop_orders" in pipeline["message"]
    assert mailed == []
    record = AlertStore(registry.client, registry.prefix).get("pipeline:shop_orders:stale")
    assert record is not None and (record.state, record.delivery, record.retry) == (AlertState.FIRING, Delivery.RETRY, ["oncall"])

    smtp_down[0] = False
    result = op.execute({})
    assert result["raised"] == [] and result["retried"] == ["pipeline:shop_orders:stale"]
    assert [(a["key"], a["event"]) for a in mailed] == [("pipeline:shop_orders:stale", "raised")]
    assert len(logged) == 2  # not sent twice

    result = op.execute({})
    assert (result["raised"], result["cleared"], result["retried"]) == ([], [], [])
    assert set(result["firing"]) == {"pipeline:shop_orders:stale", "pool:large:no_ready"}

    ready(registry, "large")
    result = op.execute({})
    assert result["cleared"] == ["pool:large:no_ready"]
    assert [(a["key"], a["event"]) for a in logged][-1] == ("pool:large:no_ready", "cleared")
    assert len(mailed) == 1  # the pool's alerts go to the log only


def test_a_kind_disabled_raises_nothing_and_leaves_its_alerts_as_they_are(registry: Registry) -> None:
    logged: list[dict[str, Any]] = []
    op = operator(registry, {"log": lambda: Recording(logged, [False]), "oncall": lambda: Recording([], [False])})
    assert set(op.execute({})["raised"]) == {"pool:small:no_ready", "pool:large:no_ready"}
    op.__dict__["settings"] = alert_config.parse(
        {**SETTINGS, "conditions": {"no_ready": {"enabled": False}}}, Path("config/alerts.yaml")
    )
    ready(registry, "small")
    assert op.execute({}) == {"firing": [], "raised": [], "cleared": [], "retried": []}
    record = AlertStore(registry.client, registry.prefix).get("pool:small:no_ready")
    assert record is not None and record.state == AlertState.FIRING


# ------------------------------------------------------------------ Airflow's notifiers

TRANSITION = Transition(
    Event.RAISED,
    AlertRecord(
        "pipeline:orders:stale",
        "stale",
        "orders",
        AlertState.FIRING,
        severity="critical",
        title="pipeline orders is failing",
        message="column 'a<b>' {{ 7 * 7 }} & more",
        raised_at="2026-12-05T12:00:00+00:00",
    ),
)


def test_the_email_notifier_is_airflows_smtp_notifier_and_renders_the_alert_as_text() -> None:
    spec = NotifierConfig("oncall", NotifierType.EMAIL, to=("oncall@example.com",), smtp_conn_id="smtp_ops")
    notifier = notifier_factory(spec)()
    assert isinstance(notifier, SmtpNotifier) and notifier.smtp_conn_id == "smtp_ops"
    sent: dict[str, Any] = {}

    class Smtp:
        from_email = "spotlake@example.com"
        subject_template = html_content_template = None

        def __enter__(self) -> Smtp:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def send_email_smtp(self, **kwargs: Any) -> None:
            sent.update(kwargs)

    notifier.__dict__["hook"] = Smtp()
    notifier({"alert": TRANSITION.to_context()})
    assert sent["to"] == ["oncall@example.com"] and sent["from_email"] == "spotlake@example.com"
    assert sent["subject"] == "[spotlake] CRITICAL: pipeline orders is failing"
    # the alert's text is data, not a template, and HTML-escaped
    assert "column &#39;a&lt;b&gt;&#39; {{ 7 * 7 }} &amp; more" in sent["html_content"]
    assert "<code>pipeline:orders:stale</code>, raised at 2026-12-05T12:00:00+00:00" in sent["html_content"]


def test_the_slack_notifier_is_the_providers_webhook_notifier_and_escapes_slack_markup() -> None:
    spec = NotifierConfig("team", NotifierType.SLACK_WEBHOOK, slack_webhook_conn_id="slack_team")
    notifier = notifier_factory(spec)()
    assert isinstance(notifier, SlackWebhookNotifier) and notifier.slack_webhook_conn_id == "slack_team"
    sent: dict[str, Any] = {}

    def send(**kwargs: Any) -> Any:
        sent.update(kwargs)
        return SimpleNamespace(status_code=200, api_url="https://hooks.slack.com/services/x")

    notifier.__dict__["hook"] = SimpleNamespace(send=send)
    notifier({"alert": TRANSITION.to_context()})
    assert sent["text"] == (
        "CRITICAL: pipeline orders is failing\ncolumn 'a&lt;b&gt;' {{ 7 * 7 }} &amp; more\n"
        "(alert pipeline:orders:stale, raised at 2026-12-05T12:00:00+00:00)"
    )


def test_the_log_notifier_warns_of_a_raise_and_informs_of_a_clear() -> None:
    assert notifier_factory(NotifierConfig("log", NotifierType.LOG)) is AlertLogNotifier
    cleared = replace(TRANSITION.record, state=AlertState.CLEARED, cleared_at="2026-12-05T12:30:00+00:00")
    with capture_logs() as logs:
        AlertLogNotifier()({"alert": TRANSITION.to_context()})
        AlertLogNotifier()({"alert": Transition(Event.CLEARED, cleared).to_context()})
    assert [(entry["log_level"], entry["event"].splitlines()[0]) for entry in logs] == [
        ("warning", "alert raised: CRITICAL: pipeline orders is failing"),
        ("info", "alert cleared: resolved: pipeline orders is failing"),
    ]
    assert "cleared at 2026-12-05T12:30:00+00:00 after 30m" in logs[1]["event"]


def test_a_pool_over_its_budget_is_raised_and_not_cleared_while_the_ledger_cannot_be_read(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from spotlake import pools
    from spotlake.providers.base import InstanceUsage, encode_instances

    raw = yaml.safe_load(pools.DEFAULT_POOLS.read_text())
    raw["pools"]["small"]["budget_per_day"] = 0.001
    (tmp_path / "pools.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("SPOTLAKE_POOLS", str(tmp_path / "pools.yaml"))
    ready(registry, "small")
    cluster = registry.get_cluster("small", "small-0001")
    started = datetime.now(UTC).replace(second=0, microsecond=0, minute=0)  # this hour: today whatever the time
    registry.update_cluster(
        cluster, instances=encode_instances([InstanceUsage("m5.xlarge", "ON_DEMAND", "MASTER", started.isoformat())])
    )
    logged: list[dict[str, Any]] = []
    op = operator(registry, {"log": lambda: Recording(logged, [False]), "oncall": lambda: Recording([], [False])})
    op.__dict__["settings"] = alert_config.parse(
        {**SETTINGS, "conditions": {"no_ready": {"after": "0s", "notify": ["log"]}, "budget": {"notify": ["log"]}}},
        Path("config/alerts.yaml"),
    )
    assert "pool:small:budget" in op.execute({})["raised"]
    budget = next(a for a in logged if a["key"] == "pool:small:budget")
    assert "over its budget_per_day of 0.0010 USD" in budget["message"]

    monkeypatch.setenv("SPOTLAKE_PRICES", str(tmp_path / "missing.yaml"))  # no figures: nothing is cleared
    result = op.execute({})
    assert "pool:small:budget" not in result["cleared"]
    record = AlertStore(registry.client, registry.prefix).get("pool:small:budget")
    assert record is not None and record.state == AlertState.FIRING

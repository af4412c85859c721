"""config/alerts.yaml: validation into dataclasses, with errors that name the file, the entry and the fix."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from spotlake import alert_config
from spotlake.alert_config import NotifierType
from spotlake.alerts import AlertKind
from spotlake.errors import ConfigError

PATH = Path("config/alerts.yaml")
FULL = {
    "schedule": "* * * * *",
    "notifiers": {
        "log": {"type": "log"},
        "oncall": {"type": "email", "to": ["a@example.com", "b@example.com"], "cc": "c@example.com", "smtp_conn_id": "smtp_ops"},
        "team": {"type": "slack_webhook", "slack_webhook_conn_id": "slack_team"},
    },
    "conditions": {
        "stale": {"notify": ["log", "team"]},
        "no_ready": {"after": "20m"},
        "restart_budget": {"enabled": False},
    },
}


def parse(raw: Any) -> alert_config.AlertsConfig:
    return alert_config.parse(raw, PATH)


def test_the_shipped_file_logs_every_kind_and_delays_the_pools() -> None:
    settings = alert_config.load()
    assert settings.schedule == "*/5 * * * *"
    assert [(n.name, n.type) for n in settings.notifiers] == [("log", NotifierType.LOG)]
    assert settings.enabled_kinds() == tuple(AlertKind)
    assert settings.condition(AlertKind.NO_READY).after == timedelta(minutes=15)
    assert settings.condition(AlertKind.STALE).after == timedelta(0)
    assert all(settings.condition(kind).notify == ("log",) for kind in AlertKind)


def test_the_path_comes_from_spotlake_alerts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text("schedule: '* * * * *'\n")
    monkeypatch.setenv("SPOTLAKE_ALERTS", str(path))
    assert alert_config.load().schedule == "* * * * *"
    monkeypatch.setenv("SPOTLAKE_ALERTS", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match=r"missing.yaml: file not found; create it"):
        alert_config.load()


def test_an_empty_file_is_every_kind_to_the_log() -> None:
    settings = parse(None)
    assert [n.name for n in settings.notifiers] == ["log"]
    assert [s.name for s in settings.routes(AlertKind.RESTART_BUDGET)] == ["log"]


def test_notifiers_and_routes() -> None:
    settings = parse(FULL)
    oncall = next(n for n in settings.notifiers if n.name == "oncall")
    assert (oncall.to, oncall.cc, oncall.from_email, oncall.smtp_conn_id) == (
        ("a@example.com", "b@example.com"),
        ("c@example.com",),
        None,
        "smtp_ops",
    )
    team = next(n for n in settings.notifiers if n.name == "team")
    assert team.slack_webhook_conn_id == "slack_team"
    assert [n.name for n in settings.routes(AlertKind.STALE)] == ["log", "team"]
    # a condition without notify goes to every notifier
    assert [n.name for n in settings.routes(AlertKind.NO_READY)] == ["log", "oncall", "team"]
    assert settings.condition(AlertKind.NO_READY).after == timedelta(minutes=20)
    assert settings.enabled_kinds() == (AlertKind.STALE, AlertKind.NO_READY, AlertKind.BUDGET)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schedule": "every minute"}, r"config/alerts.yaml: schedule: 'every minute' is not a cron expression; e.g."),
        (
            {"timezone": "UTC"},
            r"config/alerts.yaml: unknown key\(s\) timezone; allowed keys are conditions, notifiers, owner, schedule",
        ),
        ({"notifiers": {}}, r"config/alerts.yaml: notifiers: expected a mapping .* with at least one; e.g. log: \{type: log\}"),
        (
            {"notifiers": {"pager": {"type": "pagerduty"}}},
            r"notifiers.pager.type: 'pagerduty' is not a notifier type; use one of log",
        ),
        ({"notifiers": {"Ops": {"type": "log"}}}, r"notifiers.Ops: notifier names are lower-case letters"),
        ({"notifiers": {"ops": {"type": "email"}}}, r"notifiers.ops: an email notifier needs 'to'"),
        ({"notifiers": {"ops": {"type": "email", "to": []}}}, r"notifiers.ops.to: expected an email address or a list"),
        ({"notifiers": {"ops": {"type": "email", "to": "oncall"}}}, r"notifiers.ops.to: 'oncall' is not an email address"),
        ({"notifiers": {"ops": {"type": "email", "to": "a@b.c", "from_email": "me"}}}, r"ops.from_email: 'me' is not a sender"),
        (
            {"notifiers": {"ops": {"type": "log", "to": "a@b.c"}}},
            r"notifiers.ops: to do\(es\) not apply to type log; its keys are none besides type",
        ),
        (
            {"notifiers": {"ops": {"type": "slack_webhook", "smtp_conn_id": "x"}}},
            r"smtp_conn_id do\(es\) not apply to type slack_webhook; its keys are slack_webhook_conn_id",
        ),
        (
            {"notifiers": {"ops": {"type": "slack_webhook", "slack_webhook_conn_id": "a b"}}},
            r"ops.slack_webhook_conn_id: 'a b' is not an Airflow connection id",
        ),
        ({"conditions": {"lag": {}}}, r"conditions.lag: not a kind of condition; the kinds are stale, no_ready, restart_budget"),
        ({"conditions": {"stale": {"enabled": "no"}}}, r"conditions.stale.enabled: expected true or false, got 'no'"),
        ({"conditions": {"stale": {"after": "soon"}}}, r"conditions.stale.after: 'soon' is not a duration"),
        (
            {"conditions": {"stale": {"notify": []}}},
            r"conditions.stale.notify: expected a list .*; to raise nothing .* enabled: false",
        ),
        (
            {"conditions": {"stale": {"notify": ["pager"]}}},
            r"conditions.stale.notify: pager is not defined under 'notifiers' \(defined: log\); define it or fix the name",
        ),
        ({"conditions": {"stale": {"notify": ["log", "log"]}}}, r"conditions.stale.notify: names a notifier twice"),
        (
            {"conditions": {"stale": {"route": "log"}}},
            r"conditions.stale: unknown key\(s\) route; allowed keys are after, enabled, notify",
        ),
    ],
)
def test_errors_name_the_file_the_entry_and_the_fix(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        parse(change)
    assert str(raised.value).startswith("config/alerts.yaml")


def test_the_alerts_dag_has_the_owner_of_its_config() -> None:
    from dag_factories.alerts import build_dag

    settings = alert_config.parse({**FULL, "owner": "lake-oncall"}, PATH)
    dag = build_dag(settings)
    assert settings.owner == "lake-oncall" and {t.owner for t in dag.tasks} == {"lake-oncall"}
    assert alert_config.parse(FULL, PATH).owner == "data-platform"
    with pytest.raises(ConfigError, match=r"config/alerts.yaml: owner: .* is not an owner"):
        alert_config.parse({**FULL, "owner": "a, b"}, PATH)

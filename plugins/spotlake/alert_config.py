"""Alert configuration: ``config/alerts.yaml`` validated into dataclasses.

How often the ``spotlake_alerts`` DAG looks (``schedule``), where alerts go (``notifiers``: the
task log, email through Airflow's SMTP notifier, Slack through the Slack provider's incoming
webhook notifier; credentials in Airflow connections, never here) and, per kind of condition
(``conditions``: ``stale``, ``no_ready``, ``restart_budget``; :mod:`spotlake.alerts`), whether it
is raised, after how long, and to which notifiers. Every error names the file, the entry and the
fix. Another path can be given with ``SPOTLAKE_ALERTS``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from croniter import croniter

from spotlake.alerts import AlertKind
from spotlake.config import DEFAULT_OWNER, NAME, _mapping, _unknown_keys, owner, parse_duration, read_yaml
from spotlake.errors import ConfigError

DEFAULT_ALERTS = Path(__file__).resolve().parents[2] / "config" / "alerts.yaml"
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
CONN_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
TOP_KEYS = {"schedule", "notifiers", "conditions", "owner"}
CONDITION_KEYS = {"enabled", "after", "notify"}
NOTIFIER_KEYS = {"type", "to", "cc", "from_email", "smtp_conn_id", "slack_webhook_conn_id"}
DEFAULT_SCHEDULE = "*/5 * * * *"
# A pool without a READY cluster for a while is normal: a spot cluster lost is replaced by the
# fleet without help (EMR boots one in about ten minutes); longer than that needs a look.
DEFAULT_AFTER = {AlertKind.NO_READY: timedelta(minutes=15)}


class NotifierType(StrEnum):
    LOG = "log"  # the alerts task's log: WARNING for a raise, INFO for a clear
    EMAIL = "email"  # airflow.providers.smtp's SmtpNotifier
    SLACK_WEBHOOK = "slack_webhook"  # airflow.providers.slack's SlackWebhookNotifier


# The keys each type takes besides ``type``.
TYPE_KEYS = {
    NotifierType.LOG: set(),
    NotifierType.EMAIL: {"to", "cc", "from_email", "smtp_conn_id"},
    NotifierType.SLACK_WEBHOOK: {"slack_webhook_conn_id"},
}


def alerts_path() -> Path:
    return Path(os.environ.get("SPOTLAKE_ALERTS", DEFAULT_ALERTS))


@dataclass(frozen=True)
class NotifierConfig:
    name: str
    type: NotifierType
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    from_email: str | None = None  # None: the SMTP connection's from_email
    smtp_conn_id: str = "smtp_default"
    slack_webhook_conn_id: str = "slack_default"


@dataclass(frozen=True)
class ConditionConfig:
    """One kind of condition: raised or not, after how long it has held, to which notifiers."""

    kind: AlertKind
    enabled: bool = True
    after: timedelta = timedelta(0)
    notify: tuple[str, ...] = ()  # notifier names


@dataclass(frozen=True)
class AlertsConfig:
    path: Path
    schedule: str = DEFAULT_SCHEDULE
    owner: str = DEFAULT_OWNER  # the spotlake_alerts DAG's owner
    notifiers: tuple[NotifierConfig, ...] = (NotifierConfig("log", NotifierType.LOG),)
    conditions: dict[AlertKind, ConditionConfig] = field(default_factory=dict)

    def condition(self, kind: AlertKind) -> ConditionConfig:
        return self.conditions.get(kind) or ConditionConfig(
            kind, after=DEFAULT_AFTER.get(kind, timedelta(0)), notify=tuple(n.name for n in self.notifiers)
        )

    def enabled_kinds(self) -> tuple[AlertKind, ...]:
        return tuple(kind for kind in AlertKind if self.condition(kind).enabled)

    def routes(self, kind: AlertKind) -> tuple[NotifierConfig, ...]:
        """The notifiers an alert of ``kind`` goes to."""
        names = set(self.condition(kind).notify)
        return tuple(n for n in self.notifiers if n.name in names)


def load(path: Path | None = None) -> AlertsConfig:
    path = path or alerts_path()
    return parse(read_yaml(path, "create it (see docs/configuration.md, config/alerts.yaml)"), path)


def parse(raw: Any, path: Path) -> AlertsConfig:
    where = str(path)
    raw = _mapping(raw or {}, where)
    _unknown_keys(raw, TOP_KEYS, where)
    schedule = str(raw.get("schedule", DEFAULT_SCHEDULE))
    if not croniter.is_valid(schedule):
        raise ConfigError(f"{where}: schedule: '{schedule}' is not a cron expression; e.g. '*/5 * * * *' (every 5 minutes)")
    notifiers = _notifiers(raw.get("notifiers", {"log": {"type": "log"}}), f"{where}: notifiers")
    names = tuple(n.name for n in notifiers)
    entries = _mapping(raw.get("conditions") or {}, f"{where}: conditions")
    kinds = {k.value: k for k in AlertKind}
    conditions = {}
    for name, entry in entries.items():
        if name not in kinds:
            raise ConfigError(
                f"{where}: conditions.{name}: not a kind of condition; the kinds are {', '.join(kinds)} "
                "(a pipeline stale or failing, a pool without a READY cluster, a stream over its restart budget, "
                "a pool over its daily budget)"
            )
        conditions[kinds[name]] = _condition(kinds[name], entry, f"{where}: conditions.{name}", names)
    for kind in AlertKind:
        conditions.setdefault(kind, ConditionConfig(kind, after=DEFAULT_AFTER.get(kind, timedelta(0)), notify=names))
    return AlertsConfig(
        path=path,
        schedule=schedule,
        owner=owner(raw.get("owner", DEFAULT_OWNER), f"{where}: owner"),
        notifiers=notifiers,
        conditions=conditions,
    )


def _notifiers(raw: Any, where: str) -> tuple[NotifierConfig, ...]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(
            f"{where}: expected a mapping of notifier name to settings, with at least one; e.g. log: {{type: log}} "
            "(the alerts task's log)"
        )
    return tuple(_notifier(name, entry, f"{where}.{name}") for name, entry in raw.items())


def _notifier(name: Any, entry: Any, where: str) -> NotifierConfig:
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"{where}: notifier names are lower-case letters, digits and _ (got {name!r}); rename it")
    entry = _mapping(entry or {}, where)
    _unknown_keys(entry, NOTIFIER_KEYS, where)
    types = {t.value: t for t in NotifierType}
    kind = entry.get("type")
    if kind not in types:
        raise ConfigError(f"{where}.type: {kind!r} is not a notifier type; use one of {', '.join(types)}")
    kind = types[kind]
    extra = sorted(set(entry) - {"type"} - TYPE_KEYS[kind])
    if extra:
        raise ConfigError(
            f"{where}: {', '.join(extra)} do(es) not apply to type {kind.value}; its keys are "
            f"{', '.join(sorted(TYPE_KEYS[kind])) or 'none besides type'}"
        )
    if kind == NotifierType.EMAIL:
        if "to" not in entry:
            raise ConfigError(f"{where}: an email notifier needs 'to': the addresses to send to, e.g. [data-oncall@example.com]")
        from_email = entry.get("from_email")
        if from_email is not None and (not isinstance(from_email, str) or "@" not in from_email):
            raise ConfigError(
                f"{where}.from_email: {from_email!r} is not a sender address, e.g. spotlake@example.com or "
                "'Spotlake <spotlake@example.com>'; leave it out to use the SMTP connection's"
            )
        return NotifierConfig(
            name,
            kind,
            to=_addresses(entry["to"], f"{where}.to", required=True),
            cc=_addresses(entry.get("cc", []), f"{where}.cc", required=False),
            from_email=from_email.strip() if from_email is not None else None,
            smtp_conn_id=_conn_id(entry.get("smtp_conn_id", "smtp_default"), f"{where}.smtp_conn_id"),
        )
    if kind == NotifierType.SLACK_WEBHOOK:
        return NotifierConfig(
            name,
            kind,
            slack_webhook_conn_id=_conn_id(entry.get("slack_webhook_conn_id", "slack_default"), f"{where}.slack_webhook_conn_id"),
        )
    return NotifierConfig(name, kind)


def _addresses(value: Any, where: str, required: bool) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or (required and not values):
        raise ConfigError(f"{where}: expected an email address or a list of them, e.g. [data-oncall@example.com]")
    for address in values:
        if not isinstance(address, str) or not EMAIL.match(address.strip()):
            raise ConfigError(f"{where}: {address!r} is not an email address (name@domain); fix it")
    return tuple(a.strip() for a in values)


def _conn_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not CONN_ID.match(value):
        raise ConfigError(f"{where}: {value!r} is not an Airflow connection id (letters, digits, _ . -)")
    return value


def _condition(kind: AlertKind, entry: Any, where: str, notifiers: tuple[str, ...]) -> ConditionConfig:
    entry = _mapping(entry or {}, where)
    _unknown_keys(entry, CONDITION_KEYS, where)
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}.enabled: expected true or false, got {enabled!r}")
    after = parse_duration(entry["after"], f"{where}.after") if "after" in entry else DEFAULT_AFTER.get(kind, timedelta(0))
    notify = entry.get("notify", list(notifiers))
    if isinstance(notify, str):
        notify = [notify]
    if not isinstance(notify, list) or not notify:
        raise ConfigError(
            f"{where}.notify: expected a list of notifier names from 'notifiers' ({', '.join(notifiers)}); to raise "
            "nothing of this kind, set enabled: false"
        )
    unknown = [n for n in notify if n not in notifiers]
    if unknown:
        raise ConfigError(
            f"{where}.notify: {', '.join(map(str, unknown))} is not defined under 'notifiers' (defined: "
            f"{', '.join(notifiers)}); define it or fix the name"
        )
    if len(set(notify)) != len(notify):
        raise ConfigError(f"{where}.notify: names a notifier twice: {notify}")
    return ConditionConfig(kind, enabled=enabled, after=after, notify=tuple(notify))

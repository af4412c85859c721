"""Raise and clear the alerts: one pass of :mod:`spotlake.alerts`, sent through Airflow's notifiers.

The operator reads the status snapshot (:func:`spotlake.status.collect`, the registry through
``aws_conn_id``), evaluates the conditions, reconciles them with the alerts' record (the
transitions it wins) and claims the deliveries still owed from earlier runs; it sends each
transition to the notifiers of its kind (``config/alerts.yaml``) and records the outcome. Every
notifier is tried; a failed one is recorded with its error and retried by the next run (for that
transition and that notifier only), and the task fails at the end naming it.

Notifiers are Airflow's: the ``log`` type is :class:`AlertLogNotifier` here, ``email`` the SMTP
provider's ``SmtpNotifier``, ``slack_webhook`` the Slack provider's ``SlackWebhookNotifier``. Each
is called like a callback, with the task's context plus ``alert`` (the transition:
:meth:`spotlake.alerts.Transition.to_context`), which their templated fields render from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from airflow.sdk import BaseNotifier, BaseOperator
from airflow.sdk.exceptions import AirflowException

from hooks import aws
from spotlake import alert_config, config, pools, status
from spotlake.alert_config import AlertsConfig, NotifierConfig, NotifierType
from spotlake.alert_store import AlertStore
from spotlake.alerts import AlertKind, Event, Transition, claim_undelivered, evaluate, reconcile_alerts, record_delivery
from spotlake.registry import Registry

# The templates of the email and Slack notifiers: rendered by the notifier from its context's
# ``alert``, so the alert's own text is never read as a template.
EMAIL_SUBJECT = "[spotlake] {{ alert.headline }}"
EMAIL_HTML = (
    "<p><b>{{ alert.headline | e }}</b></p>"
    "<p>{{ alert.message | e }}</p>"
    "<p>alert <code>{{ alert.key | e }}</code>, {{ alert.event }} at {{ alert.at }}</p>"
)
# Slack's mrkdwn reads &, < and > as markup: they are escaped as Slack asks.
SLACK_TEXT = "{{ alert.text | replace('&', '&amp;') | replace('<', '&lt;') | replace('>', '&gt;') }}"

NotifierFactory = Callable[[], BaseNotifier]


class AlertLogNotifier(BaseNotifier):
    """Writes the alert to the log: WARNING for a raise, INFO for a clear."""

    def notify(self, context: Any) -> None:
        alert = context["alert"]
        level = logging.WARNING if alert["event"] == Event.RAISED else logging.INFO
        self.log.log(level, "alert %s: %s", alert["event"], alert["text"])


def notifier_factory(spec: NotifierConfig) -> NotifierFactory:
    """A new notifier of ``spec`` per call: a notifier renders its templated fields in place, once."""
    if spec.type == NotifierType.EMAIL:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        return lambda: SmtpNotifier(
            to=list(spec.to),
            cc=list(spec.cc) or None,
            from_email=spec.from_email,
            smtp_conn_id=spec.smtp_conn_id,
            subject=EMAIL_SUBJECT,
            html_content=EMAIL_HTML,
        )
    if spec.type == NotifierType.SLACK_WEBHOOK:
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        return lambda: SlackWebhookNotifier(slack_webhook_conn_id=spec.slack_webhook_conn_id, text=SLACK_TEXT)
    return AlertLogNotifier


def deliver(transition: Transition, notifiers: Mapping[str, NotifierFactory], context: Mapping[str, Any]) -> dict[str, str]:
    """Send ``transition`` to each of ``notifiers``, every one of them whatever the others do; the
    failures: notifier name -> error."""
    failures = {}
    for name, make in notifiers.items():
        try:
            make()({**context, "alert": transition.to_context()})
        except Exception as exc:  # noqa: BLE001 - every notifier is tried; a failure is recorded, retried and reported
            failures[name] = f"{type(exc).__name__}: {exc}"
    return failures


class AlertsOperator(BaseOperator):
    """Raise, clear and send the alerts of ``config/alerts.yaml``: see the module's docstring."""

    ui_color = "#f6d5d5"

    def __init__(self, *, aws_conn_id: str | None = "aws_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id

    @cached_property
    def registry(self) -> Registry:
        return aws.registry(self.aws_conn_id)

    @cached_property
    def settings(self) -> AlertsConfig:
        return alert_config.load()

    @cached_property
    def store(self) -> AlertStore:
        return AlertStore(self.registry.client, self.registry.prefix)

    @cached_property
    def notifiers(self) -> dict[str, NotifierFactory]:
        return {spec.name: notifier_factory(spec) for spec in self.settings.notifiers}

    def execute(self, context: Any) -> dict[str, Any]:
        now = datetime.now(UTC)
        snapshot = status.collect(self.registry, pools.load(), config.load(), now)
        for warning in snapshot.warnings:
            self.log.warning("configuration: %s", warning)
        firing = evaluate(snapshot, self.settings.conditions)
        kinds = self.settings.enabled_kinds()
        if snapshot.costs_unknown:  # no figures this time: a budget alert stays as it is, never cleared
            kinds = tuple(k for k in kinds if k != AlertKind.BUDGET)
        raised, cleared = reconcile_alerts(self.store, firing, now, kinds=kinds)
        owed = claim_undelivered(self.store, now)
        self.log.info(
            "%d condition(s) hold: %s; raised %d, cleared %d, %d delivery(ies) owed from earlier runs",
            len(firing),
            ", ".join(c.key for c in firing) or "none",
            len(raised),
            len(cleared),
            len(owed),
        )
        failed = []
        for transition in [*raised, *cleared, *owed]:
            failures = self.send(transition, context, now)
            failed += [
                f"notifier '{name}' ({transition.record.alert} {transition.event.value}): {error}"
                for name, error in failures.items()
            ]
        if failed:
            raise AirflowException(f"{len(failed)} notification(s) failed, retried at the next run: " + "; ".join(failed))
        return {
            "firing": [c.key for c in firing],
            "raised": [t.record.alert for t in raised],
            "cleared": [t.record.alert for t in cleared],
            "retried": [t.record.alert for t in owed],
        }

    def send(self, transition: Transition, context: Any, now: datetime) -> dict[str, str]:
        """Send ``transition`` to its notifiers and record the outcome; the failures."""
        record = transition.record
        routed = [spec.name for spec in self.settings.routes(AlertKind(record.kind))]
        wanted = routed if transition.notifiers is None else [n for n in transition.notifiers if n in routed]
        gone = sorted(set(transition.notifiers or ()) - set(routed))
        if gone:
            self.log.warning(
                "%s: notifier(s) %s no longer configured for %s alerts in %s: not retried",
                record.alert,
                ", ".join(gone),
                record.kind,
                self.settings.path,
            )
        failures = deliver(transition, {name: self.notifiers[name] for name in wanted}, context)
        for name in wanted:
            if name in failures:
                self.log.error("%s %s: notifier '%s' failed: %s", record.alert, transition.event.value, name, failures[name])
            else:
                self.log.info("%s %s: sent to '%s'", record.alert, transition.event.value, name)
        if not record_delivery(self.store, transition, failures, now):
            self.log.info("%s changed meanwhile (a newer transition): its delivery supersedes this one", record.alert)
        return failures

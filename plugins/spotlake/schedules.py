"""Cron schedules in words, for the DAGs' one-line descriptions.

The words are cron-descriptor's, as Airflow's UI gives them beside a cron timetable (24-hour
times, UTC as every spotlake schedule is): ``*/5 * * * *`` is "every 5 minutes", ``30 * * * *``
"at 30 minutes past the hour", ``0 3 * * *`` "at 03:00".
"""

from __future__ import annotations

from cron_descriptor import CasingTypeEnum, ExpressionDescriptor, FormatException, MissingFieldException


def in_words(cron: str) -> str:
    """``cron`` in words, or the expression itself where cron-descriptor has none (``@hourly``)."""
    try:
        words = ExpressionDescriptor(cron, casing_type=CasingTypeEnum.LowerCase, use_24hour_time_format=True).get_description()
    except (FormatException, MissingFieldException):
        return cron
    return str(words)


def described(cron: str) -> str:
    """The schedule as a description says it: its words, then the expression (``every 5 minutes (*/5 * * * *)``)."""
    words = in_words(cron)
    return cron if words == cron else f"{words} ({cron})"

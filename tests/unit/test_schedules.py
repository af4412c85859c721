"""Schedules in words, as the DAGs' descriptions give them."""

from __future__ import annotations

import pytest

from spotlake.schedules import described


@pytest.mark.parametrize(
    ("cron", "words"),
    [
        ("*/5 * * * *", "every 5 minutes (*/5 * * * *)"),
        ("* * * * *", "every minute (* * * * *)"),
        ("30 * * * *", "at 30 minutes past the hour (30 * * * *)"),
        ("0 3 * * *", "at 03:00 (0 3 * * *)"),
        ("@hourly", "@hourly"),  # no words for it: the expression alone
    ],
)
def test_a_schedule_is_described_in_words_then_its_expression(cron: str, words: str) -> None:
    assert described(cron) == words

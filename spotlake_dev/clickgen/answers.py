"""What the click stream's sink must hold for a set of generated records: the answers that tests
and the chaos soak compare PostgreSQL's ``click_aggregates`` with."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from spotlake_dev.clickgen.events import VALID, classify

Record = tuple[bytes, str]
AggregateKey = tuple[int, str, str]  # window start (epoch ms), page, event type


def valid_events(records: Iterable[Record]) -> list[dict[str, Any]]:
    """The valid events among ``records`` (the malformed ones go to the dead letters)."""
    return [json.loads(value) for _, value in records if classify(value) == VALID]


def expected_aggregates(events: Iterable[dict[str, Any]], window_s: int = 60) -> dict[AggregateKey, tuple[int, int, int]]:
    """Per tumbling window, page and event type: (events, distinct users, distinct sessions)."""
    counts: Counter[AggregateKey] = Counter()
    users: dict[AggregateKey, set[str]] = defaultdict(set)
    sessions: dict[AggregateKey, set[str]] = defaultdict(set)
    for e in events:
        key = (e["event_time"] - e["event_time"] % (window_s * 1000), e["page"], e["event_type"])
        counts[key] += 1
        users[key].add(e["user_id"])
        sessions[key].add(e["session_id"])
    return {key: (n, len(users[key]), len(sessions[key])) for key, n in counts.items()}

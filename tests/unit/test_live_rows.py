"""The live row count a commit reports (its window's ``current_rows``), from the snapshot's summary."""

from __future__ import annotations

from typing import Any

from spark_jobs.common.lake_catalog import live_rows


class Snapshot:
    def __init__(self, **summary: str) -> None:
        self._summary = summary

    def summary(self) -> dict[str, Any]:
        return self._summary


def test_records_less_position_deletes() -> None:
    assert live_rows(Snapshot(**{"total-records": "5000", "total-position-deletes": "604"})) == 4396
    assert live_rows(Snapshot(**{"total-records": "5000"})) == 5000


def test_no_count_rather_than_a_negative_one_when_deletes_dangle() -> None:
    # delete files still counted after compaction rewrote the rows they pointed at
    assert live_rows(Snapshot(**{"total-records": "5000", "total-position-deletes": "6843"})) is None
    assert live_rows(Snapshot()) is None and live_rows(None) is None

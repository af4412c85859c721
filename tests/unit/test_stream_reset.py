"""Where a new checkpoint starts: the starting offsets a reset records (no services)."""

from __future__ import annotations

import json

import pytest

from spotlake.errors import SpotlakeError
from spotlake.stream_reset import starting_offsets


def test_committed_names_every_partition_and_starts_unread_ones_at_their_earliest() -> None:
    committed = {"clicks": {"0": 120, "2": 95}}
    offsets = json.loads(starting_offsets("committed", committed, {"clicks": 3, "views": 1}, "clicks"))
    assert offsets == {"clicks": {"0": 120, "1": -2, "2": 95}, "views": {"0": -2}}


def test_earliest_and_latest_pass_through() -> None:
    assert starting_offsets("earliest", {}, {"clicks": 3}, "clicks") == "earliest"
    assert starting_offsets("latest", {"clicks": {"0": 5}}, {"clicks": 3}, "clicks") == "latest"


def test_given_offsets_are_completed_and_checked() -> None:
    given = '{"clicks": {"1": 40}}'
    assert json.loads(starting_offsets(given, {}, {"clicks": 2}, "clicks")) == {"clicks": {"0": -2, "1": 40}}
    with pytest.raises(SpotlakeError, match="topic\\(s\\) other, which the stream does not read \\(clicks\\)"):
        starting_offsets('{"other": {"0": 1}}', {}, {"clicks": 2}, "clicks")
    with pytest.raises(SpotlakeError, match="is not committed, earliest, latest or a JSON object"):
        starting_offsets("beginning", {}, {"clicks": 2}, "clicks")


def test_committed_needs_something_committed() -> None:
    with pytest.raises(SpotlakeError, match="has committed no offsets yet; reset --from earliest"):
        starting_offsets("committed", {}, {"clicks": 2}, "clicks")


def test_a_committed_reset_takes_the_sinks_offsets_when_it_is_consumed() -> None:
    from spark_jobs.clickstream.sink import committed_offsets

    requested = starting_offsets("committed", {"clicks": {"0": 120}}, {"clicks": 2}, "clicks")
    # The old checkpoint went on committing after the reset was asked for: its batches are not read again.
    assert json.loads(committed_offsets(requested, {"clicks": {"0": 180, "1": 7}})) == {"clicks": {"0": 180, "1": 7}}
    assert json.loads(committed_offsets(requested, "{}")) == {"clicks": {"0": 120, "1": -2}}


def test_committed_leaves_out_topics_the_stream_no_longer_reads() -> None:
    offsets = json.loads(starting_offsets("committed", {"old": {"0": 5}, "clicks": {"0": 9}}, {"clicks": 1}, "c"))
    assert offsets == {"clicks": {"0": 9}}

"""The Airflow–Spark contract (spark_jobs/common/contract.py): what one side writes, the other reads."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from spark_jobs.clickstream.job import StreamJob
from spark_jobs.common import contract
from spark_jobs.common.errors import ExtractionError, StreamingError
from spark_jobs.common.job_documents import ExtractJob


def test_a_job_document_survives_its_argument_both_ways() -> None:
    document = {"job_key": "p#20261205T220000Z", "text": 'é ✓ "quoted"', "n": [1, 2.5, None]}
    encoded = contract.encode_job(document)
    assert "=" not in encoded.rstrip("=") and "+" not in encoded and "/" not in encoded
    assert contract.decode_job(encoded, ValueError) == document
    assert contract.decode_job(encoded.rstrip("="), ValueError) == document  # padding is optional
    assert contract.decode_job(contract.encode_job('{"a":1}'), ValueError) == {"a": 1}  # JSON text as it is


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("not base64 ✓", "job: --job is not base64url-encoded; pass base64.urlsafe_b64encode(json).decode()"),
        (contract.encode_job("{not json"), "job: the job document is not valid JSON"),
    ],
)
@pytest.mark.parametrize("error", [ExtractionError, StreamingError])
def test_a_bad_job_argument_is_refused_with_each_jobs_own_error(argument: str, message: str, error: type) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        contract.decode_job(argument, error)
    parse = ExtractJob.from_base64url if error is ExtractionError else StreamJob.from_base64url
    with pytest.raises(error, match="job: "):
        parse(argument)


def test_window_labels_and_marked_lines() -> None:
    moment = datetime(2026, 12, 5, 23, 30, tzinfo=timezone(timedelta(hours=1)))
    assert contract.window_label(moment) == "20261205T223000Z"
    lines = ["x SPOTLAKE_ERROR: first", "noise", f"y {contract.ERROR_MARK}second: detail"]
    assert contract.last_marked(lines, contract.ERROR_MARK) == "second: detail"
    assert contract.last_marked(lines, contract.RESULT_MARK) is None
    assert contract.IDENTIFIER.match("order_id$2") and not contract.IDENTIFIER.match("2fast")

"""The job writes its outcome where the batch says, so the operator finds it in any deploy mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from spark_jobs.common import entry
from spark_jobs.common.errors import DataError
from spark_jobs.common.job_documents import ExtractJob
from spark_jobs.common.report import write_report
from spotlake import artifacts
from tests.support.job_documents import BASE_JOB


class Session:
    """Stands in for the active SparkSession (run_main then neither builds nor stops one)."""


@pytest.fixture
def active_session(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(entry.SparkSession, "getActiveSession", staticmethod(lambda: Session()))
    monkeypatch.setattr(entry, "use_job_packages", lambda: None)


def job_file(tmp_path: Path) -> str:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(BASE_JOB))
    return str(path)


def run(tmp_path: Path, runner: str) -> tuple[int, dict[str, Any]]:
    report = tmp_path / "reports" / "r.json"
    code = entry.run_main(
        ["--job-file", job_file(tmp_path), "--report", str(report)], "extract.py", "d", ExtractJob, runner, "extraction"
    )
    return code, json.loads(report.read_text())


def succeed(spark: Any, job: Any) -> dict[str, Any]:
    return {"rows": 3, "pipeline": job.pipeline}


def fail_on_data(spark: Any, job: Any) -> dict[str, Any]:
    raise DataError("column 'amount': [CAST_OVERFLOW]")


def crash(spark: Any, job: Any) -> dict[str, Any]:
    raise RuntimeError("boom")


def test_success_failure_and_data_errors_are_reported(tmp_path: Path, active_session: None) -> None:
    me = "tests.unit.test_job_report"
    code, report = run(tmp_path, f"{me}:succeed")
    assert code == 0 and report["status"] == "succeeded" and report["result"]["rows"] == 3
    code, report = run(tmp_path, f"{me}:fail_on_data")
    assert code == 2 and report == {
        "run_id": BASE_JOB["run_id"],
        "status": "failed",
        "error": "column 'amount': [CAST_OVERFLOW]",
        "data_error": True,
    }
    with pytest.raises(RuntimeError):
        run(tmp_path, f"{me}:crash")
    report = json.loads((tmp_path / "reports" / "r.json").read_text())
    assert report["status"] == "failed" and "RuntimeError: boom" in report["error"] and not report["data_error"]


@mock_aws
def test_reports_on_s3_round_trip() -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="artifacts")
    write_report("s3://artifacts/spotlake/reports/run-1.json", {"status": "succeeded", "result": {}}, "us-east-1")
    assert artifacts.read_report("s3://artifacts/spotlake/reports/run-1.json", s3) == {"status": "succeeded", "result": {}}
    assert artifacts.read_report("s3://artifacts/spotlake/reports/none.json", s3) is None
    write_report("s3://artifacts/spotlake/reports/run-2.json", {"run_id": "run-1", "status": "succeeded"})
    # a report of another attempt is never taken for this one's
    assert artifacts.read_report("s3://artifacts/spotlake/reports/run-2.json", s3, run_id="run-2") is None
    assert artifacts.read_report("s3://artifacts/spotlake/reports/run-2.json", s3, run_id="run-1") is not None


def test_a_report_that_cannot_be_written_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    write_report(str(tmp_path / "file" / "below" / "r.json"), {"status": "succeeded"})  # logs, never raises

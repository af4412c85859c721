from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from spotlake.jobs import BatchRequest, NoReadyCluster, SubmitFailed, submit_or_reconnect
from spotlake.registry import Cluster, JobState, Registry


class FakeLivy:
    """A Livy endpoint: numbered batches with settable states."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: dict[int, str] = {}
        self.bodies: list[dict[str, Any]] = []
        self.fail = fail

    def post_batch(self, **body: Any) -> int:
        if self.fail:
            raise RuntimeError("Could not submit batch. Status code: 500")
        self.bodies.append(body)
        batch_id = len(self.batches)
        self.batches[batch_id] = "running"
        return batch_id

    def get_batch_state(self, session_id: int | str, retry_args: Any = None) -> str:
        if int(session_id) not in self.batches:
            raise RuntimeError("404")
        return self.batches[int(session_id)]


@pytest.fixture
def registry() -> Iterator[Registry]:
    with mock_aws():
        reg = Registry(boto3.client("dynamodb", region_name="us-east-1"), prefix="t")
        reg.create_tables()
        cluster = Cluster(pool="small", cluster_id="a", provider="local", state="")
        reg.put_launching(cluster)
        reg.mark_ready(cluster, "http://a")
        yield reg


REQUEST = BatchRequest(job_key="orders#w1", pool="small", file="/jobs/extract.py", py_files=["/jobs/z.zip"])


def test_second_submit_of_a_live_job_reconnects(registry: Registry) -> None:
    livy = FakeLivy()
    first = submit_or_reconnect(registry, REQUEST, lambda ep: livy, build_args=lambda r: ["--run", r])
    second = submit_or_reconnect(registry, REQUEST, lambda ep: livy, build_args=lambda r: ["--run", r])
    assert not first.reconnected and second.reconnected
    assert second.job.batch_id == first.job.batch_id == 0
    assert len(livy.bodies) == 1
    assert livy.bodies[0]["args"] == ["--run", first.job.run_id]
    assert livy.bodies[0]["py_files"] == ["/jobs/z.zip"]


def test_finished_or_dead_batch_gets_a_new_attempt(registry: Registry) -> None:
    livy = FakeLivy()
    first = submit_or_reconnect(registry, REQUEST, lambda ep: livy)
    livy.batches[first.job.batch_id] = "dead"
    second = submit_or_reconnect(registry, REQUEST, lambda ep: livy)
    assert not second.reconnected
    assert (second.job.attempt, second.job.batch_id) == (2, 1)
    assert second.job.run_id != first.job.run_id


def test_unknown_batch_on_a_restarted_server_is_resubmitted(registry: Registry) -> None:
    livy = FakeLivy()
    first = submit_or_reconnect(registry, REQUEST, lambda ep: livy)
    del livy.batches[first.job.batch_id]
    second = submit_or_reconnect(registry, REQUEST, lambda ep: livy)
    assert not second.reconnected and second.job.attempt == 2


def test_no_ready_cluster_is_a_clear_error(registry: Registry) -> None:
    with pytest.raises(NoReadyCluster, match="pool 'large' has no READY cluster to run orders#w1"):
        submit_or_reconnect(registry, BatchRequest("orders#w1", "large", "/f"), lambda ep: FakeLivy())


def test_refused_submit_fails_the_job_and_names_the_cluster(registry: Registry) -> None:
    with pytest.raises(SubmitFailed, match=r"Livy at http://a \(cluster a, pool small\) refused"):
        submit_or_reconnect(registry, REQUEST, lambda ep: FakeLivy(fail=True))
    assert registry.get_job(REQUEST.job_key).state == JobState.FAILED

"""The staging sensor's run lookups stay a few queries per tick, however many batches are claimed (issue 15:
1,000 claims cost ~5 ms a query each on SQLite, beyond the 10 s a tick may take)."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa
import pytest
from dagster._core.utils import make_new_run_id
from dagster_aws.s3 import S3Resource

from datalake_pipelines import DatalakeClient
from datalake_pipelines.core.lake.protocol import Claim
from datalake_pipelines.defs.ingest import sensors
from datalake_pipelines.lib.after_ingest import INGEST_JOB
from datalake_pipelines.lib.claims import RUN_KEY_TAG, ClaimRuns, dagster_run_state
from datalake_pipelines.lib.resources import LakeResource

BATCHES = 12
META = {"lang": "ko", "src": "real"}


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def add_run(instance, run_key: str, status=dg.DagsterRunStatus.NOT_STARTED) -> dg.DagsterRun:
    run = dg.DagsterRun(job_name=INGEST_JOB, run_id=make_new_run_id(), tags={RUN_KEY_TAG: run_key}, status=status)
    return instance.add_run(run)


class Counting:
    """Counts the run-storage and partition lookups the sensor makes through the instance."""

    def __init__(self, instance, monkeypatch):
        self.calls: dict[str, int] = {}
        for name in ("get_runs", "get_run_by_id", "has_dynamic_partition", "get_dynamic_partitions"):
            monkeypatch.setattr(instance, name, self.wrap(name, getattr(instance, name)))

    def wrap(self, name, fn):
        def counted(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            return fn(*args, **kwargs)

        return counted


def test_a_tick_with_many_claims_makes_a_few_run_queries(instance, tmp_path, monkeypatch):
    client = DatalakeClient(tmp_path / "lake", progress=False)
    for i in range(BATCHES):
        client.upload_task_data(pa.table({"text": [f"row {i}"]}), "aihub", "many", "ocr", f"v{i}", META)
    resources = {"lake": LakeResource(base_path=str(client.base_path)), "s3": S3Resource()}
    counting = Counting(instance, monkeypatch)

    def tick(cursor=None) -> dg.SensorResult:
        return sensors.staging_sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources))

    first = tick()
    assert len(first.run_requests) == BATCHES
    assert len(first.dynamic_partitions_requests[0].partition_keys) == BATCHES
    assert counting.calls.get("has_dynamic_partition", 0) == 0 and counting.calls["get_dynamic_partitions"] == 1
    assert counting.calls["get_runs"] <= 2, counting.calls  # one batched lookup by run key, not one per claim

    for request in first.run_requests:  # the daemon queued them; some started
        add_run(instance, request.run_key)
    counting.calls.clear()
    monkeypatch.setattr(sensors, "RECOVERY_AGE_SECONDS", 0.0)  # every claim is old enough to be checked
    second = tick(first.cursor)
    assert not second.run_requests  # each claim's run exists: nothing re-issued
    assert counting.calls.get("get_runs", 0) <= 2 and counting.calls.get("get_run_by_id", 0) == 0, counting.calls


def test_claim_runs_answers_the_newest_run_of_a_key_and_looks_up_what_it_did_not_fetch(instance):
    add_run(instance, "job-a", dg.DagsterRunStatus.FAILURE)
    newest = add_run(instance, "job-a", dg.DagsterRunStatus.STARTED)
    other = add_run(instance, "job-late")
    claims = [
        Claim.from_json({"job_id": "job-a", "run_key": "job-a"}),
        Claim.from_json({"job_id": "b", "run_key": "b"}),
    ]
    runs = ClaimRuns(instance, claims)
    assert runs.for_key("job-a").run_id == newest.run_id
    assert runs.for_key("b") is None
    assert runs.for_key("job-late").run_id == other.run_id  # a claim made after the fetch
    assert runs.for_id(newest.run_id).run_id == newest.run_id
    state = dagster_run_state(instance, runs)
    assert state(claims[0]) == ("running", newest.run_id)
    assert state(claims[1]) == ("queued", None)

"""One contract for every lake backend: the same cases on a local folder and on S3 (moto's HTTP server).

Each test drives the real staging sensor, the real ``ingest_job`` and the ``Lake`` API through
``open_lake``; only the lake's base differs. Like DVC's ``dvc/testing/workspace_tests.py``, a case written
here holds for every backend, so a backend-specific behaviour must live in that backend's own test module.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datalake_pipelines import DatalakeClient
from datalake_pipelines.core.catalog.query import DuckDBClient
from datalake_pipelines.core.lake import batches, keys
from datalake_pipelines.core.lake.layout import PartitionRef
from datalake_pipelines.core.lake.locks import exclusive_lock
from datalake_pipelines.core.lake.open import duckdb_file_of, open_lake
from datalake_pipelines.core.lake.protocol import ClaimOptions, Lake
from datalake_pipelines.definitions import defs
from datalake_pipelines.defs.ingest import sensors
from datalake_pipelines_tests.support.s3_pipeline import resources
from datalake_pipelines_tests.support.s3_pipeline import tick as sensor_tick

RAW = PartitionRef("aihub", "receipts", "raw", "image")


@dataclass
class Backend:
    """A lake under test: its base (folder or ``s3://``), a client, the ``Lake`` and a Dagster instance."""

    kind: str
    base: str
    client: DatalakeClient
    lake: Lake
    instance: dg.DagsterInstance

    def tick(self, cursor=None) -> dg.SensorResult:
        return sensor_tick(self.instance, self.base, cursor)

    def run(self, request: dg.RunRequest, result: dg.SensorResult | None = None, tags=None):
        for req in result.dynamic_partitions_requests if result is not None else []:
            self.instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        return defs.resolve_job_def("ingest_job").execute_in_process(
            instance=self.instance,
            partition_key=request.partition_key,
            tags=request.tags if tags is None else tags,
            resources=resources(self.base),
            raise_on_error=False,
        )

    def keys(self, prefix: str) -> list[str]:
        return sorted(o.key for o in self.lake.storage.list(prefix))

    def read_json(self, key: str) -> dict:
        return json.loads(self.lake.storage.read_bytes(key))

    def drop(self, job_id: str, files: dict[str, bytes]) -> None:
        """Write files into ``staging/pending/<job>/`` by hand, in order (like ``cp`` or ``aws s3 sync``)."""
        for name, data in files.items():
            self.lake.storage.write_bytes(f"{keys.pending_batch(job_id)}/{name}", data)

    def died(self, run_key: str) -> None:
        """A launched run (Dagster's run key tag) whose worker vanished before it could clean up."""
        run = self.instance.create_run_for_job(
            job_def=defs.resolve_job_def("ingest_job"),
            tags={"dagster/run_key": run_key},
            status=dg.DagsterRunStatus.STARTED,
        )
        self.instance.report_run_failed(run, "worker killed")


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path) -> Backend:
    base = request.getfixturevalue("s3_lake") if request.param == "s3" else str(tmp_path / "lake")
    with dg.instance_for_test() as instance:
        client = DatalakeClient(base, num_proc=2, batch_size=4, progress=False)
        yield Backend(request.param, base, client, open_lake(base), instance)


def jpegs(make_jpeg, folder: Path, n: int, colors=None) -> Path:
    for i in range(n):
        make_jpeg(folder / f"im{i}.jpg", color=None if colors is None else colors[i])
    return folder


def job_ids_of(result: dg.SensorResult) -> list[str]:
    return [j for r in result.run_requests for j in r.tags["datalake/job_ids"].split(",")]


def test_batch_is_claimed_once_with_partition_tags_and_processed(backend, make_jpeg, tmp_path):
    images = [str(p) for p in sorted(jpegs(make_jpeg, tmp_path / "src", 3).iterdir())]
    df = pd.DataFrame({"image": images, "text": ["a", "b", "c"]})
    staged, job = backend.client.upload_task_data(df, "aihub", "docs", "ocr", "v1", meta={"lang": "ko", "src": "real"})
    assert staged.endswith(keys.pending_batch(job)) and backend.lake.pending() == [job]
    result = backend.tick()
    assert [r.run_key for r in result.run_requests] == [job]
    request = result.run_requests[0]
    assert request.partition_key == "aihub/docs/ocr/v1"
    assert request.tags["datalake/provider"] == "aihub" and request.tags["datalake/variant"] == "v1"
    assert request.tags["datalake/job_ids"] == job
    assert list(result.dynamic_partitions_requests[0].partition_keys) == ["aihub/docs/ocr/v1"]
    claim = backend.lake.read_claim(job)
    assert claim.run_key == job and claim.partition == "aihub/docs/ocr/v1" and claim.attempt == 1
    assert backend.lake.status(job)["state"] == "queued"
    outcome = backend.run(request, result)
    assert outcome.success
    mat = outcome.asset_materializations_for_node("catalog_partition")[0].metadata
    assert mat["rows_added"].value == 3 and mat["dagster/row_count"].value == 3
    assert mat["catalog_path"].value.endswith(keys.partition(PartitionRef("aihub", "docs", "ocr", "v1")))
    checks = {c.check_name: c.passed for c in outcome.get_asset_check_evaluations()}
    assert checks == {
        "no_rejected_files": True,
        "asset_files_match_hashes": True,
        "no_duplicate_rows": True,
        "required_meta_present": True,
    }
    assert not backend.tick(result.cursor).run_requests
    assert backend.lake.claims() == [] and backend.lake.pending() == []
    status = backend.lake.status(job)
    assert status["state"] == "done" and status["rows_added"] == 3
    assert [k for k in backend.keys("catalog") if k.endswith(".parquet")] == [
        keys.part_file(PartitionRef("aihub", "docs", "ocr", "v1"), job)
    ]
    assert len(backend.keys("assets")) == 3


def test_the_same_images_again_store_nothing_new(backend, make_jpeg, tmp_path):
    colors = [(200, 10, 10), (10, 200, 10)]
    _, first = backend.client.upload_raw_data(jpegs(make_jpeg, tmp_path / "a", 2, colors), "aihub", "receipts")
    result = backend.tick()
    assert backend.run(result.run_requests[0], result).success
    _, second = backend.client.upload_raw_data(jpegs(make_jpeg, tmp_path / "b", 2, colors), "aihub", "receipts")
    again = backend.tick(result.cursor)
    assert [r.run_key for r in again.run_requests] == [second]
    mat = backend.run(again.run_requests[0], again).asset_materializations_for_node("catalog_partition")[0].metadata
    assert mat["images_new"].value == 0 and mat["images_deduplicated"].value == 2
    assert mat["rows_added"].value == 0 and mat["rows_duplicate"].value == 2
    assert len(backend.keys("assets")) == 2
    metadata = backend.read_json(keys.partition_metadata(RAW))  # a batch that added no row is recorded too
    assert [(b["job_id"], b["rows"]) for b in metadata["batches"]] == [(first, 2), (second, 0)]
    assert metadata["row_count"] == 2 and backend.lake.status(second)["path"] is None


def test_the_ingest_step_run_again_leaves_its_done_batches_done(backend, make_jpeg, tmp_path):
    # The production profile re-delivers a step whose Celery worker died to another worker, even when the step had
    # already published its batches: the second run of the step finds nothing left to process, and fails nothing.
    _, job = backend.client.upload_raw_data(jpegs(make_jpeg, tmp_path / "src", 2), "aihub", "receipts")
    result = backend.tick()
    assert backend.run(result.run_requests[0], result).success
    again = backend.run(result.run_requests[0])
    assert again.success
    status = backend.lake.status(job)
    assert status["state"] == "done" and status["rows_added"] == 2
    assert backend.keys(keys.FAILED) == [] and backend.lake.claims() == []
    assert read_partition_rows(backend) == 2


def read_partition_rows(backend: Backend) -> int:
    return backend.read_json(keys.partition_metadata(RAW))["row_count"]


def test_two_claimers_race_and_one_wins(backend, make_jpeg, tmp_path):
    _, job = backend.client.upload_raw_data(jpegs(make_jpeg, tmp_path / "src", 1), "aihub", "receipts")
    lakes = [open_lake(backend.base) for _ in range(4)]  # four daemons, each with its own Lake object
    barrier = threading.Barrier(len(lakes))
    won: list[bool] = []

    def claim(lake: Lake) -> None:
        barrier.wait()
        won.append(lake.claim(job, job, RAW))

    threads = [threading.Thread(target=claim, args=(lake,)) for lake in lakes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == [False, False, False, True]
    assert backend.lake.claim(job, job, RAW) is False
    assert [c.job_id for c in backend.lake.claims()] == [job]


def test_concurrent_ticks_claim_each_batch_once(backend, make_jpeg, tmp_path):
    jobs = {
        backend.client.upload_raw_data(jpegs(make_jpeg, tmp_path / f"s{i}", 2), "aihub", f"d{i % 3}")[1]
        for i in range(6)
    }
    results: list[dg.SensorResult] = []
    errors: list[str] = []
    barrier = threading.Barrier(4)

    def worker():
        barrier.wait()
        try:
            results.append(backend.tick())
        except BaseException:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert backend.keys(keys.FAILED) == [], "a concurrent tick must not fail a batch"
    claimed = [j for r in results for j in job_ids_of(r)]
    assert sorted(claimed) == sorted(jobs), "every batch claimed exactly once across concurrent ticks"


def test_crash_between_claim_and_launch_is_recovered(backend, make_jpeg, tmp_path, monkeypatch):
    monkeypatch.setattr(sensors, "RECOVERY_AGE_SECONDS", 0.0)
    _, job = backend.client.upload_raw_data(jpegs(make_jpeg, tmp_path / "src", 2), "aihub", "receipts")
    # A tick that claimed the batch and died before returning its run request:
    assert backend.lake.claim(job, job, RAW)
    result = backend.tick()
    assert [(r.run_key, r.tags["datalake/job_ids"]) for r in result.run_requests] == [(job, job)]
    outcome = backend.run(result.run_requests[0], result, tags={**result.run_requests[0].tags, "dagster/run_key": job})
    assert outcome.success
    assert backend.lake.status(job)["state"] == "done"
    assert backend.tick(result.cursor).run_requests == []  # launched: nothing is issued for it again


@pytest.mark.parametrize(
    "doc, reason",
    [
        ({"provider": "nobody", "dataset": "x"}, "unknown provider"),
        ({"provider": "aihub", "dataset": "bad...name"}, "invalid dataset name"),
        ({"provider": "aihub", "dataset": "ok", "variant": "a/b"}, "invalid variant name"),
        ({"provider": "aihub", "dataset": "ok", "task": "ocr", "meta": {"lang": "xx"}}, "meta for task"),
    ],
)
def test_invalid_batch_goes_to_failed_without_a_run(backend, make_jpeg, tmp_path, monkeypatch, doc, reason):
    monkeypatch.setattr(sensors, "QUIET_SECONDS", 0.0)  # the hand-written batch below is complete
    image = make_jpeg(tmp_path / "a.jpg").read_bytes()
    backend.drop("bad", {"a.jpg": image, "_metadata.json": json.dumps(doc).encode()})
    result = backend.tick()
    assert not result.run_requests and not result.dynamic_partitions_requests
    error = backend.read_json(f"{keys.failed_batch('bad')}/error.json")
    assert reason in error["error"] and error["job_id"] == "bad"
    assert backend.lake.storage.read_bytes(f"{keys.failed_batch('bad')}/a.jpg") == image, "the original is kept"
    assert backend.keys(keys.pending_batch("bad")) == [] and backend.lake.claims() == []
    assert backend.lake.status("bad")["state"] == "failed"


def test_failed_run_keeps_the_batch_in_failed(backend, corpus_dir, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    for src in sorted((corpus_dir / "invalid").iterdir())[:3]:
        shutil.copy(src, folder / src.name)
    _, job = backend.client.upload_raw_data(folder, "aihub", "receipts")
    result = backend.tick()
    outcome = backend.run(result.run_requests[0], result)
    assert not outcome.success
    error = backend.read_json(f"{keys.failed_batch(job)}/error.json")
    assert "rejected" in error["error"] and error["run_id"] == outcome.run_id
    assert error["step"] == "catalog_partition"
    kept = backend.keys(keys.failed_batch(job))
    assert len([k for k in kept if "/files/" in k]) == 3 and keys.failed_batch(job) + "/_metadata.json" in kept
    assert {r["source"].split("/")[-1] for r in error["rejected"]} == {p.name for p in folder.iterdir()}
    assert backend.keys("assets") == [] and backend.keys("catalog") == []  # nothing half-published
    assert backend.keys(keys.PENDING) == [] and backend.lake.claims() == []
    assert backend.lake.status(job)["state"] == "failed"


def test_a_batch_failed_by_its_reject_ratio_leaves_no_partition(backend, corpus_dir, make_jpeg, tmp_path):
    """One good image and two broken ones: the batch fails as a whole, and its new partition is not created (a
    local lake left an empty partition folder, which catalog.duckdb and verify counted as a partition)."""
    folder = tmp_path / "mixed"
    make_jpeg(folder / "good.jpg")
    for src in sorted((corpus_dir / "invalid").iterdir())[:2]:
        shutil.copy(src, folder / src.name)
    _, job = backend.client.upload_raw_data(folder, "aihub", "ratio")
    result = backend.tick()
    assert not backend.run(result.run_requests[0], result).success
    assert "max_reject_ratio" in backend.read_json(f"{keys.failed_batch(job)}/error.json")["error"]
    assert backend.lake.partitions() == [] and backend.keys("catalog") == []
    backend.lake.refresh_warehouse()
    with DuckDBClient(base_path=backend.base) as duck:
        assert duck.retrieve_partitions().empty


def test_malformed_batch_fails_with_its_run_id(backend, make_jpeg, tmp_path):
    _, job = backend.client.upload_raw_data(jpegs(make_jpeg, tmp_path / "src", 2), "aihub", "broken")
    target = f"{keys.pending_batch(job)}/data.parquet"
    if backend.kind == "local":  # the staged batch is a folder: change the file in place
        (Path(backend.base) / target).write_bytes(b"PAR1 this is not parquet")
    else:
        backend.lake.storage.write_bytes(target, b"PAR1 this is not parquet")
    result = backend.tick()
    outcome = backend.run(result.run_requests[0], result)
    assert not outcome.success
    error = backend.read_json(f"{keys.failed_batch(job)}/error.json")
    assert error["run_id"] == outcome.run_id and "malformed Parquet" in error["error"]
    assert len([k for k in backend.keys(keys.failed_batch(job)) if "/files/" in k]) == 2
    assert backend.keys("catalog") == []


def test_a_run_that_died_is_requeued_once_then_failed(backend, make_jpeg, tmp_path):
    _, job = backend.client.upload_raw_data(jpegs(make_jpeg, tmp_path / "src", 1), "aihub", "receipts")
    first = backend.tick()
    assert [r.run_key for r in first.run_requests] == [job]
    backend.died(job)
    requeued = backend.tick(first.cursor)
    assert requeued.run_requests == []  # the next attempt is issued on the next tick
    retry = backend.tick(requeued.cursor)
    assert [r.run_key for r in retry.run_requests] == [f"{job}.attempt2"]
    claim = backend.lake.read_claim(job)
    assert claim.run_key == f"{job}.attempt2"
    backend.died(claim.run_key)
    backend.tick(retry.cursor)
    error = backend.read_json(f"{keys.failed_batch(job)}/error.json")
    assert error["attempts"] == 2 and "ended (FAILURE)" in error["error"]
    assert backend.keys(keys.PENDING) == [] and backend.lake.read_claim(job) is None
    assert backend.lake.status(job)["state"] == "failed"


@pytest.mark.parametrize("executor", ["in_process", "celery"])
def test_a_dead_step_process_fails_the_run_unless_celery_redelivers_it(
    backend, make_jpeg, tmp_path, monkeypatch, executor
):
    monkeypatch.setenv("DATALAKE_EXECUTOR", executor)
    _, job = backend.client.upload_raw_data(jpegs(make_jpeg, tmp_path / "src", 1), "aihub", "receipts")
    first = backend.tick()
    run = backend.instance.create_run_for_job(
        job_def=defs.resolve_job_def("ingest_job"), tags={"dagster/run_key": job}, status=dg.DagsterRunStatus.STARTED
    )
    backend.lake.mark_running(job, run.run_id, _exited_pid())  # the step's process on this host is gone
    second = backend.tick(first.cursor)
    backend.tick(second.cursor)  # a requeued batch is claimed again on the next tick
    status = backend.instance.get_run_by_id(run.run_id).status
    if executor == "celery":  # the step comes back on another worker: the run and its claim stay
        assert status == dg.DagsterRunStatus.STARTED and backend.lake.read_claim(job).run_key == job
    else:
        assert status == dg.DagsterRunStatus.FAILURE and backend.lake.read_claim(job).run_key == f"{job}.attempt2"


def _exited_pid() -> int:
    """A pid of this host that no longer runs."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_hand_drop_waits_until_quiet(backend, make_jpeg, tmp_path, monkeypatch):
    # 4 s: a tick on a loaded 2-core machine can take over 2 s, which made a 2 s quiet period claim a drop early
    monkeypatch.setattr(sensors, "QUIET_SECONDS", 4.0)
    doc = {"provider": "aihub", "dataset": "receipts"}
    backend.drop("drop1", {"_metadata.json": json.dumps(doc).encode()})  # `aws s3 sync` may send it first
    cursor = None
    for i in range(3):  # a slow copy: one file per tick
        backend.drop("drop1", {f"im{i}.jpg": make_jpeg(tmp_path / f"im{i}.jpg").read_bytes()})
        waiting = backend.tick(cursor)
        cursor = waiting.cursor
        assert waiting.run_requests == [] and backend.lake.read_claim("drop1") is None
        time.sleep(0.5)
    time.sleep(4.2)
    ready = backend.tick(cursor)
    assert [r.run_key for r in ready.run_requests] == ["drop1"]
    assert [r.partition_key for r in ready.run_requests] == ["aihub/receipts/raw/image"]
    assert backend.run(ready.run_requests[0], ready).success
    assert len(backend.keys("assets")) == 3


def test_rebuild_compacts_a_partition(backend, make_jpeg, tmp_path):
    cursor = None
    for n in range(2):
        backend.client.upload_raw_data(jpegs(make_jpeg, tmp_path / f"src{n}", 2), "aihub", "receipts")
        result = backend.tick(cursor)
        cursor = result.cursor
        assert backend.run(result.run_requests[0], result).success
    prefix = keys.partition(RAW)
    assert len([k for k in backend.keys(prefix) if k.endswith(".parquet")]) == 2
    for _ in range(2):  # idempotent
        rebuild = defs.resolve_job_def("ingest_job").execute_in_process(
            instance=backend.instance, partition_key=RAW.key, resources=resources(backend.base)
        )
        meta = rebuild.asset_materializations_for_node("catalog_partition")[0].metadata
        assert meta["mode"].value == "rebuild" and meta["dagster/row_count"].value == 4
        assert [k for k in backend.keys(prefix) if k.endswith(".parquet")] == [keys.compacted_file(RAW)]
    assert meta["files_compacted"].value == 1
    result = backend.lake.rebuild_partition(RAW, 1000)
    assert result.rows == 4 and result.duplicates_dropped == 0


def test_the_warehouse_is_built_where_the_duckdb_resource_points(backend, make_jpeg, tmp_path):
    backend.client.upload_raw_data(jpegs(make_jpeg, tmp_path / "src", 3), "aihub", "receipts")
    result = backend.tick()
    assert backend.run(result.run_requests[0], result).success
    database = backend.lake.duckdb_file
    assert database == duckdb_file_of(backend.base) and not database.exists()
    with exclusive_lock(backend.lake.warehouse_lock):
        summary = backend.lake.refresh_warehouse()
    assert summary["partitions"] == 1 and summary["rows"] == 3 and summary["assets"] == 3
    with duckdb.connect(str(database), read_only=True) as con:
        assert con.execute("SELECT rows FROM partitions").fetchall() == [(3,)]
        assert con.execute("SELECT count(*) FROM hash_index").fetchall() == [(3,)]
    assert backend.lake.storage.exists(keys.DUCKDB)  # on S3 the upload of the local file
    with DuckDBClient(base_path=backend.base) as duck:
        assert duck.db_path == database and duck.retrieve_partitions()["rows"].tolist() == [3]


def test_status_and_claims_listing(backend, make_jpeg, tmp_path, monkeypatch):
    monkeypatch.setattr(sensors, "QUIET_SECONDS", 0.0)
    _, done = backend.client.upload_raw_data(jpegs(make_jpeg, tmp_path / "a", 1), "aihub", "one")
    result = backend.tick()
    assert backend.run(result.run_requests[0], result).success
    _, claimed = backend.client.upload_raw_data(jpegs(make_jpeg, tmp_path / "b", 1), "aihub", "two")
    assert backend.tick(result.cursor).run_requests
    backend.lake.mark_running(claimed, "run-123", 1)
    _, pending = backend.client.upload_raw_data(jpegs(make_jpeg, tmp_path / "c", 1), "aihub", "three")
    backend.drop("bad", {"_metadata.json": b'{"provider": "nobody", "dataset": "x"}'})
    backend.lake.reject("bad", "unusable")
    entries = {e["job_id"]: e for e in backend.lake.list_batches()}
    assert {j: e["state"] for j, e in entries.items()} == {pending: "pending", claimed: "running", done: "done",
                                                           "bad": "failed"}  # fmt: skip
    # the same fields on both backends; paths name where the batch is in the lake
    assert entries[pending] == {**dict.fromkeys(batches.ENTRY_KEYS), "job_id": pending, "state": "pending",
                                "partition": "aihub/three/raw/image", "rows": 1,
                                "path": f"{backend.base}/{keys.pending_batch(pending)}"}  # fmt: skip
    assert entries[claimed]["run_id"] == "run-123" and entries[claimed]["rows"] == 1
    assert all(list(e) == list(batches.ENTRY_KEYS) for e in entries.values())  # one record shape
    finished, run_id = entries[done].pop("finished_at"), entries[done].pop("run_id")
    assert finished and run_id and entries[done] == {
        "job_id": done, "state": "done", "partition": "aihub/one/raw/image", "rows": 1, "rows_added": 1,
        "rows_duplicate": 0, "rows_rejected": 0, "error": None,
        "path": f"{backend.base}/{keys.part_file(PartitionRef('aihub', 'one', 'raw', 'image'), done)}",
    }  # fmt: skip
    assert "unusable" in entries["bad"]["error"] and entries["bad"]["partition"] == "nobody/x/raw/image"
    assert entries["bad"]["path"] == f"{backend.base}/{keys.failed_batch('bad')}"
    [claim] = backend.lake.claims()
    assert (claim.job_id, claim.run_id, claim.pid, claim.partition) == (claimed, "run-123", 1, "aihub/two/raw/image")
    assert backend.lake.status(claimed, lambda c: ("queued", None))["state"] == "queued"
    assert backend.lake.status("nope") is None


def test_cli_process_and_config_commands(backend, make_jpeg, tmp_path, capsys):
    from datalake_pipelines.cli.main import main

    def cli(*args: str) -> int:
        return main(["--base-path", backend.base, *args])

    assert cli("config", "provider", "create", "--name", "scanner_co") == 0
    assert (
        cli(
            "config",
            "task",
            "create",
            "--name",
            "caption",
            "--required-fields",
            "lang",
            "--allowed-values",
            "lang=ko,en",
        )
        == 0
    )
    assert b"scanner_co" in backend.lake.storage.read_bytes(keys.SCHEMA)  # saved in the lake itself
    capsys.readouterr()
    assert cli("config", "task", "list", "--json") == 0
    assert json.loads(capsys.readouterr().out)["caption"]["required_fields"] == ["lang"]
    assert cli("config", "provider", "list", "--json") == 0
    assert "scanner_co" in json.loads(capsys.readouterr().out)
    src = jpegs(make_jpeg, tmp_path / "src", 2)
    assert (
        cli(
            "upload",
            "--type",
            "raw",
            "--data",
            str(src),
            "--provider",
            "scanner_co",
            "--dataset",
            "scans",
            "--job-id",
            "scan1",
        )
        == 0
    )
    capsys.readouterr()
    assert cli("process", "list", "--json") == 0
    assert [(e["job_id"], e["state"]) for e in json.loads(capsys.readouterr().out)] == [("scan1", "pending")]
    assert cli("process", "start") == 0
    assert "scan1: done" in capsys.readouterr().out
    assert cli("process", "status", "scan1", "--json") == 0
    assert json.loads(capsys.readouterr().out)["rows_added"] == 2
    assert cli("process", "list", "--json") == 0
    assert [(e["job_id"], e["state"]) for e in json.loads(capsys.readouterr().out)] == [("scan1", "done")]


def test_a_used_job_id_is_refused_and_the_done_batch_keeps_its_rows(backend, make_jpeg, tmp_path, capsys):
    from datalake_pipelines.cli.main import main
    from datalake_pipelines.core.errors import ValidationError

    used = "job id 'jobA' is already used in this lake; pick another"
    first = jpegs(make_jpeg, tmp_path / "a", 2, [(200, 10, 10), (10, 200, 10)])
    second = jpegs(make_jpeg, tmp_path / "b", 3, [(1, 1, 250), (250, 250, 1), (9, 99, 199)])
    backend.client.upload_raw_data(first, "aihub", "receipts", job_id="jobA")
    with pytest.raises(ValidationError, match=used):  # while it is pending
        backend.client.upload_raw_data(second, "aihub", "receipts", job_id="jobA")
    result = backend.tick()
    assert backend.run(result.run_requests[0], result).success
    part = keys.part_file(RAW, "jobA")
    before = backend.lake.storage.read_bytes(part)
    with pytest.raises(ValidationError, match=used):  # done: its job record holds the id
        backend.client.upload_raw_data(second, "aihub", "receipts", job_id="jobA")
    capsys.readouterr()
    args = ["--base-path", backend.base, "upload", "--type", "raw", "--data", str(second)]
    assert main([*args, "--provider", "aihub", "--dataset", "receipts", "--job-id", "jobA"]) == 1
    assert f"error: {used}" in capsys.readouterr().err
    backend.drop("bad", {"_metadata.json": b'{"provider": "nobody", "dataset": "x"}'})
    backend.lake.reject("bad", "unusable")
    with pytest.raises(ValidationError, match="job id 'bad' is already used in this lake"):  # failed/ holds it
        backend.client.upload_raw_data(second, "aihub", "receipts", job_id="bad")
    assert backend.lake.pending() == [] and backend.lake.storage.read_bytes(part) == before
    assert backend.lake.status("jobA")["rows_added"] == 2


def test_a_hand_drop_named_like_a_done_batch_is_refused(backend, make_jpeg, tmp_path, monkeypatch):
    monkeypatch.setattr(sensors, "QUIET_SECONDS", 0.0)
    backend.client.upload_raw_data(jpegs(make_jpeg, tmp_path / "a", 2), "aihub", "receipts", job_id="scans")
    result = backend.tick()
    assert backend.run(result.run_requests[0], result).success
    part = backend.lake.storage.read_bytes(keys.part_file(RAW, "scans"))
    image = make_jpeg(tmp_path / "new.jpg", color=(3, 140, 250)).read_bytes()
    backend.drop("scans", {"new.jpg": image, "_metadata.json": b'{"provider": "aihub", "dataset": "receipts"}'})
    again = backend.tick(result.cursor)
    assert again.run_requests == [] and backend.keys(keys.PENDING) == []
    error = backend.read_json(f"{keys.failed_batch('scans')}/error.json")
    assert "job id 'scans' is already used in this lake" in error["error"] and "rename the folder" in error["error"]
    assert backend.lake.storage.read_bytes(f"{keys.failed_batch('scans')}/new.jpg") == image
    assert backend.lake.storage.read_bytes(keys.part_file(RAW, "scans")) == part, "the done batch's rows stay"
    status = backend.lake.status("scans")
    assert status["state"] == "done" and status["path"].endswith(".parquet")
    # the refused drop is named by the status, with where it is kept and why
    assert "a later hand drop under this id was refused" in status["error"] and "already used" in status["error"]
    assert f"{keys.failed_batch('scans')}" in status["error"]


def test_files_a_done_hand_drop_did_not_use_are_listed_as_quarantined(backend, make_jpeg, tmp_path, monkeypatch):
    """``process list`` showed the kept leftovers of a successful hand drop as a failed job."""
    monkeypatch.setattr(sensors, "QUIET_SECONDS", 0.0)
    image = make_jpeg(tmp_path / "a.jpg").read_bytes()
    other = make_jpeg(tmp_path / "b.jpg", color=(9, 9, 9)).read_bytes()
    data = io.BytesIO()
    pq.write_table(pa.table({"image": ["a.jpg"]}), data)  # the rows name a.jpg only: b.jpg is kept aside
    manifest = b'{"provider": "aihub", "dataset": "receipts"}'
    backend.drop("drop1", {"a.jpg": image, "b.jpg": other, "data.parquet": data.getvalue(), "_metadata.json": manifest})
    result = backend.tick()
    assert backend.run(result.run_requests[0], result).success
    states = {e["job_id"]: e["state"] for e in backend.lake.list_batches()}
    assert states == {"drop1": "done", "drop1-unreferenced": "quarantined"}
    assert backend.lake.status("drop1-unreferenced")["state"] == "quarantined"
    assert backend.lake.queue_snapshot(ClaimOptions()).counts()["quarantined"] == 1  # the staging_queue view agrees


@pytest.mark.parametrize("manifest", [None, b"{oops"])
def test_a_drop_without_a_usable_manifest_waits_then_fails(backend, make_jpeg, tmp_path, monkeypatch, manifest):
    from datalake_pipelines.services.runner import start_pending

    monkeypatch.setattr(sensors, "QUIET_SECONDS", 0.0)
    monkeypatch.setattr(sensors, "GRACE_SECONDS", 6.0)  # long enough for a tick and a start on a loaded machine
    image = make_jpeg(tmp_path / "x.jpg").read_bytes()
    backend.drop("nomani", {"x.jpg": image, **({"_metadata.json": manifest} if manifest else {})})
    dropped = time.time()
    waiting = backend.tick()  # the sensor waits
    assert waiting.run_requests == [] and backend.keys(keys.FAILED) == []
    assert start_pending(backend.base, backend.instance, quiet_seconds=0.0, echo=lambda _m: None) == []
    assert backend.lake.pending() == ["nomani"] and backend.keys(keys.FAILED) == []
    [entry] = backend.lake.list_batches()
    assert (entry["job_id"], entry["state"], entry["partition"], entry["rows"]) == ("nomani", "pending", None, None)
    assert backend.lake.status("nomani")["state"] == "pending"
    time.sleep(max(0.0, dropped + 7.2 - time.time()))  # S3 lists LastModified to the second: one more second
    assert start_pending(backend.base, backend.instance, quiet_seconds=0.0, echo=lambda _m: None) == []
    error = backend.read_json(f"{keys.failed_batch('nomani')}/error.json")  # `process start` applies the grace too
    assert "_metadata.json" in error["error"] and "gave up after 6 s" in error["error"]
    assert backend.lake.storage.read_bytes(f"{keys.failed_batch('nomani')}/x.jpg") == image, "the original is kept"
    assert backend.keys(keys.PENDING) == [] and backend.lake.claims() == []
    assert backend.lake.status("nomani")["state"] == "failed"


def test_status_entries_have_one_shape_on_every_backend(backend, make_jpeg, tmp_path, monkeypatch, capsys):
    from datalake_pipelines.cli.main import main
    from datalake_pipelines.core.lake.batches import ENTRY_KEYS

    ref = PartitionRef("aihub", "one", "raw", "image")
    _, done = backend.client.upload_raw_data(jpegs(make_jpeg, tmp_path / "a", 2), "aihub", "one")
    result = backend.tick()
    assert backend.run(result.run_requests[0], result).success
    _, claimed = backend.client.upload_raw_data(jpegs(make_jpeg, tmp_path / "b", 1), "aihub", "two")
    assert backend.tick(result.cursor).run_requests
    _, pending = backend.client.upload_raw_data(jpegs(make_jpeg, tmp_path / "c", 3), "aihub", "three")
    _, failed = backend.client.upload_raw_data(jpegs(make_jpeg, tmp_path / "d", 1), "aihub", "four")
    backend.lake.reject(failed, "unusable")
    entries = {e["job_id"]: e for e in backend.lake.list_batches()}
    assert all(tuple(e) == ENTRY_KEYS for e in entries.values())
    assert {j: (e["state"], e["partition"], e["rows"]) for j, e in entries.items()} == {
        pending: ("pending", "aihub/three/raw/image", 3),
        claimed: ("queued", "aihub/two/raw/image", 1),
        done: ("done", ref.key, 2),
        failed: ("failed", "aihub/four/raw/image", 1),
    }
    assert entries[pending]["path"].endswith(keys.pending_batch(pending))
    assert entries[failed]["path"].endswith(keys.failed_batch(failed)) and entries[failed]["error"] == "unusable"
    assert entries[failed]["finished_at"]
    assert entries[done]["path"].endswith(keys.part_file(ref, done)) and entries[done]["finished_at"]
    assert (entries[done]["rows_added"], entries[done]["rows_duplicate"], entries[done]["rows_rejected"]) == (2, 0, 0)
    assert all(backend.lake.status(j) == e for j, e in entries.items())
    capsys.readouterr()
    assert main(["--base-path", backend.base, "process", "status", done, "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)) == list(ENTRY_KEYS)

"""The production profile end to end: Postgres instance storage, a Redis broker and two Celery workers on one lake.

The instance is ``deploy/dagster.yaml`` in a temporary ``DAGSTER_HOME`` with ``DAGSTER_POSTGRES_URL`` pointing at
a throwaway PostgreSQL server; the workers are ``celery -A datalake_pipelines.lib.celery_worker worker``
processes, each with its own ``DAGSTER_HOME`` and ``DATALAKE_CACHE_DIR`` as if on separate hosts, sharing one lake
folder. The runs are launched the two ways the profile has, each from processes of their own (as on a host of its
own: the code location is imported there with the profile's settings): ``dagster-daemon`` (sensor, run queue, run
launcher) and ``datalake process start``; the runs' ingest steps are executed by the workers, never by those.
One big batch is stored by its chunk steps on both workers; a worker killed in the middle of a chunk (or of the
commit) loses nothing: its step is delivered again to the other worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from datalake_pipelines import DatalakeClient
from datalake_pipelines.core.catalog.verify import verify_lake
from datalake_pipelines.core.ingest.chunks import record_key
from datalake_pipelines.core.lake import keys
from datalake_pipelines.core.lake.open import open_lake
from datalake_pipelines.core.lifecycle.gc import collect_garbage
from datalake_pipelines.lib.after_ingest import INGEST_JOB
from datalake_pipelines.lib.partitions import JOB_IDS_TAG
from datalake_pipelines_tests.support.services import postgres_server, redis_server

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
WORKER_APP = "datalake_pipelines.lib.celery_worker"
COMMIT_STEP = "catalog_partition.commit"  # the ingest step that processes the batches (after plan_chunks)


@pytest.fixture(scope="session")
def postgres():
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis():
    with redis_server() as server:
        yield server


class Profile:
    """One production-profile deployment on this machine: its environment, lake and Celery workers."""

    def __init__(self, root: Path, postgres_url: str, broker: str, extra: dict[str, str]):
        self.root = root
        self.base = str(root / "lake")
        self.env = {
            "DAGSTER_HOME": str(self.home("orchestrator")),
            "DAGSTER_POSTGRES_URL": postgres_url,
            "DATALAKE_BASE_PATH": self.base,
            "DATALAKE_EXECUTOR": "celery",
            "DATALAKE_CELERY_BROKER": broker,
            "DATALAKE_NUM_PROC": "1",
            "DATALAKE_PHASH": "0",
            **extra,
        }
        self.workers: dict[str, subprocess.Popen] = {}

    def home(self, host: str) -> Path:
        """A DAGSTER_HOME of its own for ``host``, holding deploy/dagster.yaml (every host has the same file)."""
        home = self.root / host / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
        return home

    def log(self, name: str) -> Path:
        return self.root / name / "worker.log"

    def start_worker(self, name: str) -> None:
        env = {
            **os.environ,
            **self.env,
            "DAGSTER_HOME": str(self.home(name)),
            "DATALAKE_CACHE_DIR": str(self.root / name / "cache"),
            "PYTHONPATH": str(ROOT),
        }
        args = [sys.executable, "-m", "celery", "-A", WORKER_APP, "worker", "-c", "1", "-n", f"{name}@%h"]
        args += ["--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        with self.log(name).open("wb") as out:  # its own session: a SIGKILL of the group is a dead host
            proc = subprocess.Popen(
                args, env=env, cwd=self.root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.workers[name] = proc

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        for name, proc in self.workers.items():
            while b" ready." not in self.log(name).read_bytes():
                assert proc.poll() is None, f"worker {name} exited:\n{self.log(name).read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"worker {name} not ready:\n{self.log(name).read_text()[-3000:]}"
                time.sleep(0.2)

    def kill(self, name: str) -> None:
        """SIGKILL the worker and its pool process: the host is gone, nothing acknowledges its task."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.workers[name].pid, signal.SIGKILL)
        self.workers[name].wait(timeout=10)

    def process_start(self) -> list[dict]:
        """``datalake process start --json`` on the "orchestrator host": one status entry per batch it ran."""
        code = "import sys; from datalake_pipelines.cli.main import main; sys.exit(main(sys.argv[1:]))"
        env = {**os.environ, **self.env, "PYTHONPATH": str(ROOT)}
        args = [sys.executable, "-c", code, "process", "start", "--json"]
        done = subprocess.run(args, env=env, cwd=self.root, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    @contextlib.contextmanager
    def daemon(self) -> Iterator[None]:
        """``dagster-daemon run`` on the "orchestrator host" (workspace.yaml's code location, the profile's env)."""
        args = [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")]
        env = {**os.environ, **self.env, "PYTHONPATH": str(ROOT)}
        with (self.root / "daemon.log").open("wb") as out:
            proc = subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            yield
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def wait_runs(self, instance: dg.DagsterInstance, job: str, count: int, timeout: float = 180) -> list:
        deadline = time.monotonic() + timeout
        while True:
            runs = instance.get_runs(dg.RunsFilter(job_name=job))
            if len(runs) >= count and all(r.is_finished for r in runs):
                return runs
            log = (self.root / "daemon.log").read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, f"{[r.status for r in runs]}\n{log}"
            time.sleep(1)

    def stop(self) -> None:
        for name in self.workers:
            self.kill(name)


@contextlib.contextmanager
def profile(tmp_path, postgres, redis, monkeypatch, database: str, db: int, **extra: str) -> Iterator[Profile]:
    broker = redis.url.rsplit("/", 1)[0] + f"/{db}"  # a Redis database per test: no task of another test
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the scale extra installs psycopg2
    url = postgres.create_database(database).replace("postgresql://", "postgresql+psycopg2://", 1)
    deployment = Profile(tmp_path, url, broker, extra)
    for name, value in deployment.env.items():
        monkeypatch.setenv(name, value)
    for name in ("worker_a", "worker_b"):
        deployment.start_worker(name)
    try:
        deployment.wait_ready()
        yield deployment
    finally:
        deployment.stop()


def upload(client: DatalakeClient, tmp_path: Path, make_jpeg, provider: str, dataset: str, n: int, rows: int):
    """``n`` batches of ``rows`` distinct images each into one partition; their job ids."""
    job_ids = []
    for b in range(n):
        paths = [str(make_jpeg(tmp_path / "src" / provider / dataset / f"b{b}_{i}.jpg")) for i in range(rows)]
        job_ids.append(client.upload_raw_data(pd.DataFrame({"image": paths}), provider, dataset, "scale test")[1])
    return job_ids


def catalog_rows(base: str) -> list[tuple]:
    """(dataset, batch id, image) of every catalog row, read with DuckDB over the part files."""
    parts = f"{base}/catalog/**/*.parquet"
    sql = (
        f"SELECT dataset, batch_id, image FROM read_parquet('{parts}', hive_partitioning = true, union_by_name = true)"
    )
    return duckdb.sql(sql).fetchall()


def step_workers(instance: dg.DagsterInstance, run_ids: set[str]) -> list[tuple[str, str]]:
    """(step key, Celery worker name) of every step a worker started, from the runs' event logs."""
    seen = []
    for run_id in run_ids:
        for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            event = record.dagster_event
            data = event.engine_event_data if event is not None else None
            worker = data.metadata.get("Celery worker") if data is not None else None
            if worker is not None:
                seen.append((event.step_key, worker.value.split("@")[0]))
    return seen


def assert_exactly_once(base: str, outcomes: list[dict], job_ids: list[str], rows_per_batch: int) -> None:
    assert sorted(o["job_id"] for o in outcomes) == sorted(job_ids)  # each batch in one run, once
    assert {o["state"] for o in outcomes} == {"done"}, outcomes
    lake = open_lake(base)
    assert all(lake.status(j)["state"] == "done" for j in job_ids)
    rows = [r for r in catalog_rows(base) if r[1] in set(job_ids)]
    assert len(rows) == len(job_ids) * rows_per_batch
    assert len({r[2] for r in rows}) == len(rows)  # every image once
    report = verify_lake(base, hashes=True)
    assert report["ok"], report
    assert report["index"]["ok"] and report["index"]["references"] >= len(rows)


def test_two_celery_workers_share_one_lake(tmp_path, postgres, redis, monkeypatch, make_jpeg):
    # The daemon's path: the staging sensor claims, the run queue (deploy/dagster.yaml's limits) starts the runs, each
    # run submits its steps to the workers.
    fast = {"DATALAKE_SENSOR_INTERVAL": "1", "DATALAKE_QUIET_SECONDS": "1"}
    with profile(tmp_path, postgres, redis, monkeypatch, "two_workers", 1, **fast) as deployment:
        client = DatalakeClient(deployment.base, progress=False)
        job_ids = []
        for p in range(5):  # 20 batches over 5 partitions, all pending before the daemon starts
            job_ids += upload(client, tmp_path, make_jpeg, "inhouse", f"set{p}", n=4, rows=3)
        instance = dg.DagsterInstance.get()
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        with deployment.daemon():
            runs = deployment.wait_runs(instance, INGEST_JOB, count=5)

        assert all(r.is_success for r in runs), [r.status for r in runs]
        lake = open_lake(deployment.base)
        outcomes = [
            {"job_id": job_id, "state": lake.status(job_id)["state"], "run_id": r.run_id}
            for r in runs
            for job_id in r.tags[JOB_IDS_TAG].split(",")
        ]
        assert_exactly_once(deployment.base, outcomes, job_ids, rows_per_batch=3)
        workers = step_workers(instance, {r.run_id for r in runs})
        # every ingest step ran on a worker (the run processes ran none), and both workers took steps
        assert sorted(step for step, _ in workers).count(COMMIT_STEP) == 5
        assert {name for _, name in workers} == {"worker_a", "worker_b"}, workers


def test_a_worker_killed_mid_step_loses_nothing(tmp_path, postgres, redis, monkeypatch, make_jpeg):
    # The commit step waits 2 s after marking each batch running (DATALAKE_STEP_PAUSE): the worker running it is
    # killed there, with its pool process, holding the first batch. Redis hands the unacknowledged task to the other
    # worker after the visibility timeout, and that worker processes both batches.
    timeout = 20  # longer than the step takes on the other worker (2 x 2 s of pause + the rest), or it runs twice
    settings = {"DATALAKE_STEP_PAUSE": "2", "DATALAKE_CELERY_VISIBILITY_TIMEOUT": str(timeout)}
    with profile(tmp_path, postgres, redis, monkeypatch, "dead_worker", 2, **settings) as deployment:
        client = DatalakeClient(deployment.base, progress=False)
        job_ids = upload(client, tmp_path, make_jpeg, "inhouse", "dead", n=2, rows=3)
        killed: list[str] = []

        def kill_inside_the_step() -> None:
            """Once the commit step has started on a worker (its events in Postgres), SIGKILL that worker."""
            with dg.DagsterInstance.get() as watcher:  # a connection of this thread's own
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    runs = watcher.get_runs(dg.RunsFilter(job_name=INGEST_JOB), limit=1)
                    run_id = runs[0].run_id if runs else None
                    taken = step_workers(watcher, {run_id}) if run_id else []
                    started = watcher.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START) if taken else []
                    if any(e.step_key == COMMIT_STEP for e in started):
                        time.sleep(0.7)  # inside the first batch's pause
                        deployment.kill(taken[0][1])
                        killed.append(taken[0][1])
                        return
                    time.sleep(0.2)

        instance = dg.DagsterInstance.get()  # first: it creates the schema, which the watcher's would race
        killer = threading.Thread(target=kill_inside_the_step, daemon=True)
        killer.start()
        started = time.monotonic()
        outcomes = deployment.process_start()
        killer.join(timeout=5)

        assert killed, "no worker took a step"
        assert deployment.workers[killed[0]].returncode == -signal.SIGKILL
        assert time.monotonic() - started >= timeout  # the step waited for the re-delivery
        assert_exactly_once(deployment.base, outcomes, job_ids, rows_per_batch=3)
        [run_id] = {o["run_id"] for o in outcomes}
        assert instance.get_run_by_id(run_id).is_success
        taken = [name for step, name in step_workers(instance, {run_id}) if step == COMMIT_STEP]
        [survivor] = set(deployment.workers) - set(killed)
        assert sorted(taken) == sorted([killed[0], survivor]), taken  # started on the dead worker, run once more


def chunk_steps(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, str]]:
    """(store_chunk step key, worker) of every chunk step a worker started, in the order of the event log."""
    return [(step, name) for step, name in step_workers(instance, {run_id}) if ".store_chunk[" in step]


def assert_chunks_consumed(base: str, instance: dg.DagsterInstance, run_id: str, files: int, chunks: int) -> None:
    """The commit reused ``chunks`` chunk steps and stored every file once, each counted new; no chunk record is left
    and no asset is orphaned."""
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    [meta] = [
        e.asset_materialization.metadata
        for e in events
        if e.dagster_event.asset_key == dg.AssetKey("catalog_partition")
    ]
    assert meta["chunks"].value == chunks and meta["rows_added"].value == files
    assert (meta["images_new"].value, meta["images_deduplicated"].value) == (files, 0)
    lake = open_lake(base)
    assert list(lake.storage.list(keys.CHUNKS)) == []  # the records went with the batch
    garbage = collect_garbage(lake, dry_run=True, grace_seconds=0)
    assert garbage["assets"] == garbage["referenced"] == files and garbage["collected"] == 0, garbage


def test_one_big_batch_is_stored_in_chunk_steps_on_both_workers(tmp_path, postgres, redis, monkeypatch, make_jpeg):
    # 36 files, 5 per chunk: 8 store_chunk steps, spread over the two workers, then one commit
    with profile(tmp_path, postgres, redis, monkeypatch, "big_batch", 3, DATALAKE_CHUNK_FILES="5") as deployment:
        client = DatalakeClient(deployment.base, progress=False)
        job_ids = upload(client, tmp_path, make_jpeg, "inhouse", "big", n=1, rows=36)
        outcomes = deployment.process_start()

        assert_exactly_once(deployment.base, outcomes, job_ids, rows_per_batch=36)
        instance = dg.DagsterInstance.get()
        [run_id] = {o["run_id"] for o in outcomes}
        assert instance.get_run_by_id(run_id).is_success
        taken = chunk_steps(instance, run_id)
        assert len(taken) == len({step for step, _ in taken}) == 8, taken  # each chunk once
        assert {name for _, name in taken} == {"worker_a", "worker_b"}, taken
        assert_chunks_consumed(deployment.base, instance, run_id, files=36, chunks=8)


def test_a_worker_killed_mid_chunk_loses_nothing(tmp_path, postgres, redis, monkeypatch, make_jpeg):
    # 20 files, 5 per chunk; each chunk step waits 3 s with half its files published (DATALAKE_CHUNK_PAUSE): the
    # worker of the first chunk step is killed there, with its pool process. The other worker runs the other chunks;
    # the dead one's is re-delivered after the visibility timeout and stored again over the assets it left.
    timeout = 20  # longer than a chunk step takes (3 s of pause + the rest), or one would run twice
    settings = {
        "DATALAKE_CHUNK_FILES": "5",
        "DATALAKE_CHUNK_PAUSE": "3",
        "DATALAKE_CELERY_VISIBILITY_TIMEOUT": str(timeout),
    }
    with profile(tmp_path, postgres, redis, monkeypatch, "dead_chunk", 4, **settings) as deployment:
        client = DatalakeClient(deployment.base, progress=False)
        [job_id] = upload(client, tmp_path, make_jpeg, "inhouse", "dead", n=1, rows=20)
        killed: list[tuple[str, str, bool]] = []  # (step, worker, its chunk record written when killed)

        def kill_inside_a_chunk() -> None:
            """1.5 s after a chunk step started on a worker (inside its pause), SIGKILL that worker."""
            with dg.DagsterInstance.get() as watcher:  # a connection of this thread's own
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    runs = watcher.get_runs(dg.RunsFilter(job_name=INGEST_JOB), limit=1)
                    taken = chunk_steps(watcher, runs[0].run_id) if runs else []
                    if taken:
                        time.sleep(1.5)
                        step, name = taken[0]
                        deployment.kill(name)
                        n = int(step.rstrip("]").rsplit("_", 1)[1])
                        killed.append((step, name, open_lake(deployment.base).storage.exists(record_key(job_id, n))))
                        return
                    time.sleep(0.2)

        instance = dg.DagsterInstance.get()  # first: it creates the schema, which the watcher's would race
        killer = threading.Thread(target=kill_inside_a_chunk, daemon=True)
        killer.start()
        started = time.monotonic()
        outcomes = deployment.process_start()
        killer.join(timeout=5)

        assert killed, "no worker took a chunk step"
        [(step, dead, recorded)] = killed
        assert not recorded  # killed mid-chunk: before its record
        assert deployment.workers[dead].returncode == -signal.SIGKILL
        assert time.monotonic() - started >= timeout  # the run waited for the re-delivery
        assert_exactly_once(deployment.base, outcomes, [job_id], rows_per_batch=20)
        [run_id] = {o["run_id"] for o in outcomes}
        assert instance.get_run_by_id(run_id).is_success
        taken = chunk_steps(instance, run_id)
        [survivor] = set(deployment.workers) - {dead}
        assert sorted(name for s, name in taken if s == step) == sorted([dead, survivor]), taken  # run once more
        assert len({s for s, _ in taken}) == 4 and len(taken) == 5, taken  # no other chunk ran twice
        # the 2 files the dead worker linked before its pause are new content all the same (were counted deduplicated)
        assert_chunks_consumed(deployment.base, instance, run_id, files=20, chunks=4)

"""End to end with the real Dagster daemon: drop -> sensor -> run -> catalog; killed runs and daemon restarts."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.dataset as ds
import pytest
from PIL import Image

from datalake_pipelines import DatalakeClient
from datalake_pipelines.core.lake.queue import read_claim
from datalake_pipelines.services.runner import INSTANCE_CONFIG, batch_status
from datalake_pipelines_tests.support.webserver import init_storage

PROJECT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(300)


def make_images(folder: Path, count: int, size=(48, 32)) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        img = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
        path = folder / f"img_{i:05d}.png"
        img.save(path)
        paths.append(str(path))
    return paths


class Daemon:
    """``dagster-daemon run`` in its own process group (SIGTERM to a background group is honoured)."""

    def __init__(self, env: dict[str, str], log: Path):
        self.env, self.log, self.proc = env, log, None

    def start(self) -> None:
        exe = Path(sys.executable).with_name("dagster-daemon")
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                [str(exe), "run", "-w", str(PROJECT / "workspace.yaml")],
                cwd=PROJECT,
                env=self.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(30)


def default_profile_env(tmp_path: Path, monkeypatch, **extra: str) -> tuple[Path, Path, dict[str, str]]:
    """A ``DAGSTER_HOME`` holding the shipped ``config/dagster.yaml`` (its storage created once, before the daemon
    and its code server race to create it), a lake folder, and the daemon's environment (a 1 s sensor interval,
    one worker, plus ``extra``); this process points at the same home and lake. Returns (home, lake, env)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(INSTANCE_CONFIG, home / "dagster.yaml")
    init_storage(home)
    lake = tmp_path / "lake"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DATALAKE_BASE_PATH": str(lake),
        "DATALAKE_SENSOR_INTERVAL": "1",
        "DATALAKE_NUM_PROC": "1",
        **extra,
    }
    for key in ("DAGSTER_HOME", "DATALAKE_BASE_PATH"):
        monkeypatch.setenv(key, env[key])
    return home, lake, env


@pytest.fixture
def daemon_env(tmp_path, monkeypatch):
    home, lake, env = default_profile_env(tmp_path, monkeypatch, DATALAKE_BATCH_SIZE="200")
    daemons: list[Daemon] = []

    def start() -> Daemon:
        d = Daemon(env, tmp_path / "daemon.log")
        d.start()
        daemons.append(d)
        return d

    yield {"lake": lake, "home": home, "start": start, "log": tmp_path / "daemon.log"}
    for d in daemons:
        d.kill(signal.SIGTERM)


def wait_for(predicate, timeout: float, what: str, log: Path, interval: float = 0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n--- daemon log tail ---\n{tail}")


def catalog_rows(lake: Path) -> int:
    return ds.dataset(lake / "catalog", partitioning="hive").count_rows()


def test_drop_is_claimed_and_ingested_by_the_daemon(daemon_env, tmp_path):
    daemon_env["start"]()
    client = DatalakeClient(daemon_env["lake"], progress=False)
    paths = make_images(tmp_path / "src", 12)
    _, job_id = client.upload_task_data(
        pd.DataFrame({"image": paths, "ocr_result": ['{"words": [{"text": "invoice"}]}'] * 12}),
        "aihub",
        "receipts",
        "ocr",
        "base",
        meta={"lang": "ko", "src": "real"},
    )
    instance = dg.DagsterInstance.get()
    wait_for(lambda: batch_status(client.layout, instance, job_id)["state"] == "done", 150, "ingest", daemon_env["log"])
    assert catalog_rows(daemon_env["lake"]) == 12
    by_partition = dg.RunsFilter(tags={"datalake/partition": "aihub/receipts/ocr/base"})
    wait_for(lambda: instance.get_runs(filters=by_partition)[0].is_finished, 60, "run end", daemon_env["log"])
    runs = instance.get_runs(filters=by_partition)
    assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS
    tags = runs[0].tags
    assert (tags["datalake/provider"], tags["datalake/dataset"], tags["datalake/task"], tags["datalake/variant"]) == (
        "aihub",
        "receipts",
        "ocr",
        "base",
    )
    assert tags["dagster/run_key"] == job_id
    key = dg.AssetKey("catalog_partition")
    event = instance.get_latest_materialization_event(key)
    metadata = event.asset_materialization.metadata
    assert metadata["rows_added"].value == 12 and metadata["images_new"].value == 12
    assert event.asset_materialization.partition == "aihub/receipts/ocr/base"
    checks = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(key, "asset_files_match_hashes"), limit=1
    )
    assert checks and checks[0].status.value == "SUCCEEDED"


def _drop_and_wait_running(daemon_env, tmp_path):
    daemon = daemon_env["start"]()
    client = DatalakeClient(daemon_env["lake"], progress=False)
    paths = make_images(tmp_path / "src", 3000, size=(64, 64))
    _, job_id = client.upload_raw_data(pd.DataFrame({"image": paths}), "inhouse", "big")
    pid = wait_for(
        lambda: (read_claim(client.layout, job_id) or {}).get("pid"), 150, "the run to start", daemon_env["log"], 0.02
    )
    return daemon, client, job_id, len(paths), pid


def test_run_killed_with_sigkill_is_requeued_and_finishes_once(daemon_env, tmp_path):
    _daemon, client, job_id, n, pid = _drop_and_wait_running(daemon_env, tmp_path)
    os.kill(pid, signal.SIGKILL)
    instance = dg.DagsterInstance.get()
    wait_for(lambda: batch_status(client.layout, instance, job_id)["state"] == "done", 200, "retry", daemon_env["log"])
    assert catalog_rows(daemon_env["lake"]) == n
    by_partition = dg.RunsFilter(tags={"datalake/partition": "inhouse/big/raw/mixed"})
    finished = lambda: all(r.is_finished for r in instance.get_runs(filters=by_partition))  # noqa: E731
    wait_for(finished, 60, "runs to end", daemon_env["log"])
    runs = instance.get_runs(filters=by_partition)
    statuses = sorted(r.status.value for r in runs)
    assert statuses == ["FAILURE", "SUCCESS"], statuses


def test_daemon_restarted_mid_run_leaves_nothing_stranded(daemon_env, tmp_path):
    daemon, client, job_id, n, _pid = _drop_and_wait_running(daemon_env, tmp_path)
    daemon.kill(signal.SIGKILL)  # the daemon's whole process group: daemon, code server, run worker
    daemon_env["start"]()
    instance = dg.DagsterInstance.get()
    log = daemon_env["log"]
    wait_for(lambda: batch_status(client.layout, instance, job_id)["state"] == "done", 200, "recovery", log)
    assert catalog_rows(daemon_env["lake"]) == n
    stranded = [p.name for p in client.layout.processing.iterdir() if not p.name.startswith(".")]
    assert not stranded, stranded  # hidden .done-* folders are processed batches being deleted

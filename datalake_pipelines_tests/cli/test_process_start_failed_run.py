"""``datalake process start`` when its run fails before it processed a batch (an index, broker or mount problem,
not the data): the batch must not stay claimed with no daemon to hand it back, and the command must say so."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from datalake_pipelines.cli.main import main


@pytest.fixture
def dagster_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def test_a_run_that_fails_before_its_batch_hands_the_batch_back_and_exits_1(
    client, make_jpeg, tmp_path, monkeypatch, capsys, dagster_home
):
    base = str(client.lake.base)
    image = make_jpeg(tmp_path / "a.jpg")
    _, job = client.upload_raw_data(pd.DataFrame({"image": [str(image)]}), "inhouse", "alpha")
    # the lake's folder on a network file system: processing refuses to open its SQLite index (mounts.py)
    mounts = tmp_path / "mounts"
    mounts.write_text(f"server:/export {Path(base).resolve()} nfs4 rw,relatime 0 0\n")
    monkeypatch.setenv("DATALAKE_MOUNT_TABLE", str(mounts))

    assert main(["--base-path", base, "--json", "process", "start"]) == 1
    [entry] = json.loads(capsys.readouterr().out)
    assert entry["job_id"] == job and entry["run_failed"] is True
    assert entry["state"] == "pending" and "its run failed before processing it" in entry["error"]
    assert "DATALAKE_INDEX_URL" in entry["error"]  # the reason of the run's failure, in one line

    monkeypatch.delenv("DATALAKE_MOUNT_TABLE")  # the problem fixed: the next start processes the batch
    assert main(["--base-path", base, "--json", "process", "start"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert entry["job_id"] == job and entry["state"] == "done" and entry["rows_added"] == 1


def test_celery_with_another_lake_is_refused_before_anything_is_claimed(
    client, make_jpeg, tmp_path, monkeypatch, capsys, dagster_home
):
    base = str(client.lake.base)
    _, job = client.upload_raw_data(pd.DataFrame({"image": [str(make_jpeg(tmp_path / "a.jpg"))]}), "inhouse", "alpha")
    monkeypatch.setenv("DATALAKE_EXECUTOR", "celery")
    monkeypatch.setenv("DATALAKE_BASE_PATH", str(tmp_path / "another"))
    assert main(["--base-path", base, "process", "start"]) == 1
    assert "set DATALAKE_BASE_PATH instead of --base-path" in capsys.readouterr().err
    assert client.lake.status(job)["state"] == "pending"  # not claimed: the next start can still take it


def _wait_for_state(lake, job: str, state: str, process) -> None:
    import time

    deadline = time.monotonic() + 120
    while (lake.status(job) or {}).get("state") != state:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{job} never became {state}: {lake.status(job)}"
        time.sleep(0.2)


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_a_start_killed_midway_leaves_nothing_claimed_for_the_next_start(
    backend, request, make_jpeg, tmp_path, monkeypatch, capsys, dagster_home
):
    """Found by review: with no daemon, batches claimed by a `process start` killed with SIGKILL stayed claimed
    for good (no start took them; gc and deletes of their partition were refused). A second review: on S3 a
    recovered batch waited for a run no start made, and the next start failed it."""
    import os
    import signal
    import subprocess
    import sys

    from datalake_pipelines.client import DatalakeClient

    base = (
        str(request.getfixturevalue("client").lake.base) if backend == "local" else request.getfixturevalue("s3_lake")
    )
    client = DatalakeClient(base, progress=False)
    jobs = [  # two partitions: the start runs one, the other's claims wait for a run it never creates
        client.upload_raw_data(pd.DataFrame({"image": [str(make_jpeg(tmp_path / f"{i}.jpg"))]}), "inhouse", dataset)[1]
        for i, dataset in enumerate(["alpha", "alpha", "beta"])
    ]
    env = {**os.environ, "DATALAKE_STEP_PAUSE": "60", "DAGSTER_HOME": str(dagster_home)}
    code = "import sys; from datalake_pipelines.cli.main import main; sys.exit(main(sys.argv[1:]))"
    process = subprocess.Popen([sys.executable, "-c", code, "--base-path", base, "process", "start"], env=env)
    try:
        _wait_for_any_running(client.lake, jobs, process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    assert main(["--base-path", base, "--json", "process", "start"]) == 0  # right away: no grace to wait out
    entries = json.loads(capsys.readouterr().out)
    assert sorted(e["job_id"] for e in entries) == sorted(jobs)
    assert all(e["state"] == "done" and e["rows_added"] == 1 for e in entries), entries
    assert main(["--base-path", base, "--json", "catalog", "verify"]) == 0
    capsys.readouterr()
    with dg.DagsterInstance.get() as instance:  # the killed run is not left STARTED for good
        assert dg.DagsterRunStatus.STARTED not in {run.status for run in instance.get_runs()}


def _wait_for_any_running(lake, jobs: list[str], process) -> None:
    import time

    deadline = time.monotonic() + 120
    while not any((lake.status(job) or {}).get("state") == "running" for job in jobs):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, [lake.status(job) for job in jobs]
        time.sleep(0.2)


def test_two_starts_right_after_a_kill_hand_each_batch_back_once(client, make_jpeg, tmp_path, dagster_home):
    """Third review: two starts recovering one killed start at once both handed its batches back, so one failed
    them after a single kill (attempts 2). One start of a host at a time recovers and claims."""
    import os
    import signal
    import subprocess
    import sys

    base = str(client.lake.base)
    jobs = [
        client.upload_raw_data(pd.DataFrame({"image": [str(make_jpeg(tmp_path / f"{i}.jpg"))]}), "inhouse", "alpha")[1]
        for i in range(3)
    ]
    code = "import sys; from datalake_pipelines.cli.main import main; sys.exit(main(sys.argv[1:]))"
    start = [sys.executable, "-c", code, "--base-path", base, "--json", "process", "start"]
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    process = subprocess.Popen(start, env={**env, "DATALAKE_STEP_PAUSE": "60"})
    try:
        _wait_for_any_running(client.lake, jobs, process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    restarts = [subprocess.Popen(start, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [r.communicate(timeout=300)[0] for r in restarts]
    assert [r.returncode for r in restarts] == [0, 0], outputs
    entries = [e for out in outputs for e in json.loads(out)]
    assert sorted(e["job_id"] for e in entries) == sorted(jobs)  # each batch taken by one restart
    assert {client.lake.status(job)["state"] for job in jobs} == {"done"}


def test_a_batch_killed_on_its_last_attempt_goes_to_failed_and_the_start_says_so(
    client, make_jpeg, tmp_path, capsys, dagster_home
):
    """Second review: the start said "recovered" and exited 0 while the batch went to failed/."""
    import os
    import signal
    import subprocess
    import sys

    from datalake_pipelines.core.lake import queue

    base = str(client.lake.base)
    _, job = client.upload_raw_data(pd.DataFrame({"image": [str(make_jpeg(tmp_path / "a.jpg"))]}), "inhouse", "alpha")
    env = {**os.environ, "DATALAKE_STEP_PAUSE": "60", "DAGSTER_HOME": str(dagster_home)}
    code = "import sys; from datalake_pipelines.cli.main import main; sys.exit(main(sys.argv[1:]))"
    process = subprocess.Popen([sys.executable, "-c", code, "--base-path", base, "process", "start"], env=env)
    try:
        _wait_for_state(client.lake, job, "running", process)
        (client.lake.layout.processing_batch(job) / queue.ATTEMPT_FILE).write_text(str(queue.MAX_ATTEMPTS))
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    assert main(["--base-path", base, "--json", "process", "start"]) == 1
    [entry] = json.loads(capsys.readouterr().out)
    assert entry["job_id"] == job and entry["state"] == "failed"


def test_another_starts_claims_are_never_taken(client, make_jpeg, tmp_path, monkeypatch, capsys, dagster_home):
    """Found by a second review: a start took the batches of a start still at work (claimed, its run not created
    yet, or running with only its first batch marked) and that start then crashed. Only a run that ended or whose
    process is gone is reaped."""
    from datalake_pipelines.core.lake.layout import PartitionRef
    from datalake_pipelines.defs.ingest import sensors

    base = str(client.lake.base)
    jobs = [
        client.upload_raw_data(pd.DataFrame({"image": [str(make_jpeg(tmp_path / f"{i}.jpg"))]}), "inhouse", "alpha")[1]
        for i in range(2)
    ]
    ref = PartitionRef("inhouse", "alpha", "raw", "mixed")
    for job in jobs:  # claimed by a start whose run is not created yet, for longer than the sensor's grace
        assert client.lake.claim(job, "run-key-of-a-start-at-work", ref)
    monkeypatch.setattr(sensors, "RECOVERY_AGE_SECONDS", 0.0)
    assert main(["--base-path", base, "--json", "process", "start"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert [client.lake.status(job)["state"] for job in jobs] == ["queued", "queued"]


def test_a_failed_refresh_after_a_good_ingest_is_said_in_one_warning(
    client, make_jpeg, tmp_path, monkeypatch, capsys, dagster_home
):
    """Found by review: when catalog.duckdb could not be refreshed the command said nothing."""
    from datalake_pipelines.core.lake.changes import record_write
    from datalake_pipelines.core.lake.layout import PartitionRef

    base = str(client.lake.base)
    broken = PartitionRef("inhouse", "other", "raw", "mixed")  # a writer left a file no reader can open
    client.lake.layout.partition_dir(broken).mkdir(parents=True)
    (client.lake.layout.partition_dir(broken) / "part-junk.parquet").write_bytes(b"not parquet")
    record_write(client.lake.layout, [broken])
    _, job = client.upload_raw_data(pd.DataFrame({"image": [str(make_jpeg(tmp_path / "a.jpg"))]}), "inhouse", "alpha")
    assert main(["--base-path", base, "--json", "process", "start"]) == 0  # the ingest itself is done
    out, err = capsys.readouterr()
    [entry] = json.loads(out)
    assert entry["job_id"] == job and entry["state"] == "done"
    assert "warning: the catalog.duckdb refresh failed; the ingest is not affected" in err


def test_a_start_killed_as_its_run_was_starting_leaves_nothing_stuck(client, make_jpeg, tmp_path, capsys, dagster_home):
    """Fourth review: killed in the ~0.2 s after creating its run and before marking a batch with it, a start left
    the claims (its pid, no run id) and a run that never ended: no later start took them."""
    import os
    import subprocess
    import sys

    from dagster._core.utils import make_new_run_id

    from datalake_pipelines.core.lake.layout import PartitionRef
    from datalake_pipelines.lib.after_ingest import INGEST_JOB
    from datalake_pipelines.lib.claims import RUN_KEY_TAG
    from datalake_pipelines.services.runner import get_instance

    base = str(client.lake.base)
    _, job = client.upload_raw_data(pd.DataFrame({"image": [str(make_jpeg(tmp_path / "a.jpg"))]}), "inhouse", "alpha")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert client.lake.claim(job, "key-of-a-killed-start", PartitionRef("inhouse", "alpha", "raw", "mixed"))
    claim = client.lake.read_claim(job)
    claim.pid, claim.host = int(gone.stdout), os.uname().nodename  # as the start named itself, then died
    client.lake.write_claim(claim)
    run_id = make_new_run_id()
    with get_instance() as instance:  # the instance the CLI makes in $DAGSTER_HOME
        instance.add_run(
            dg.DagsterRun(
                job_name=INGEST_JOB,
                run_id=run_id,
                tags={RUN_KEY_TAG: "key-of-a-killed-start"},
                status=dg.DagsterRunStatus.STARTED,
            )  # fmt: skip
        )
    assert main(["--base-path", base, "--json", "process", "start"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert entry["job_id"] == job and entry["state"] == "done"
    with get_instance() as instance:
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE


def test_a_start_waiting_for_another_says_so(client, make_jpeg, tmp_path, capsys, caplog, dagster_home):
    """Fourth review: a start waiting for another start of its host sat silent."""
    import threading
    from pathlib import Path

    from datalake_pipelines.core.lake.locks import exclusive_lock

    base = str(client.lake.base)
    _, job = client.upload_raw_data(pd.DataFrame({"image": [str(make_jpeg(tmp_path / "a.jpg"))]}), "inhouse", "alpha")
    held, release = threading.Event(), threading.Event()

    def other_start() -> None:
        with exclusive_lock(Path(client.lake.warehouse_lock).parent / "process-start.lock"):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=other_start)
    thread.start()
    held.wait(30)
    threading.Timer(1.0, release.set).start()
    assert main(["--base-path", base, "--json", "process", "start"]) == 0
    thread.join(30)
    assert "waiting for another `process start` of this host" in caplog.text + capsys.readouterr().err
    assert client.lake.status(job)["state"] == "done"

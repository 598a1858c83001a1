"""GC killed with SIGKILL in the middle of its sweep (a real ``datalake gc`` process), then run again: the second
run finishes, ``datalake catalog verify`` is clean, and no index entry names a collected asset. Both backends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from datalake_pipelines.cli.main import main
from datalake_pipelines.core.lake import keys
from datalake_pipelines.settings import GC_SWEEP_PAUSE_ENV

N_IMAGES = 24


def test_gc_killed_mid_sweep_then_a_second_run_completes(client, base, make_jpeg, tmp_path, monkeypatch, capsys):
    lake = client.lake
    for i in range(N_IMAGES):
        make_jpeg(tmp_path / "imgs" / f"im{i}.jpg", size=(8, 8))  # random pixels: distinct content
    client.upload_raw_data(tmp_path / "imgs", "inhouse", "doomed")
    client.upload_raw_data(pd.DataFrame({"text": ["kept"]}), "inhouse", "kept")
    assert {r.status for r in client.process_pending()} == {"done"}
    client.delete(dataset="inhouse/doomed")
    assert len(list(lake.storage.list(keys.ASSETS))) == N_IMAGES

    env = {**os.environ, GC_SWEEP_PAUSE_ENV: "0.4", "PYTHONPATH": str(Path(__file__).parents[3])}
    entry = "import sys; from datalake_pipelines.cli.main import main; sys.exit(main(sys.argv[1:]))"
    argv = [sys.executable, "-c", entry, "--base-path", base]
    gc = subprocess.Popen([*argv, "gc", "--grace", "0", "--retention", "0", "--batch-size", "2"], env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # kill it once part of the sweep is done
            left = len(list(lake.storage.list(keys.ASSETS)))
            if 0 < left <= N_IMAGES - 4:
                break
            assert gc.poll() is None, "gc finished before it could be killed"
            time.sleep(0.05)
        os.kill(gc.pid, signal.SIGKILL)
    finally:
        gc.wait(30)
    assert gc.returncode == -signal.SIGKILL
    left = len(list(lake.storage.list(keys.ASSETS)))
    assert 0 < left < N_IMAGES
    with lake.hash_index() as index:  # the index entries went before any asset did
        assert index is None or index.count() == 0

    assert main(["--base-path", base, "--json", "gc", "--grace", "0", "--retention", "0"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["collected"] == left and second["stopped"] is None
    assert list(lake.storage.list(keys.ASSETS)) == []
    assert main(["--base-path", base, "catalog", "verify"]) == 0
    assert [p.key for p in lake.partitions()] == ["inhouse/kept/raw/mixed"]

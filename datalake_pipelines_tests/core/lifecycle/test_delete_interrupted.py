"""A delete killed after its rows were removed and before its end (a real ``datalake delete`` process that exits
hard at that point), then another delete or GC: the deletion is finished, its record is complete and
``catalog.duckdb`` (on S3 the uploaded copy) no longer shows the rows. Both backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from datalake_pipelines.cli.main import main
from datalake_pipelines.core.lake import keys

# the process dies right after the partitions were changed: no job record marked, no refresh, no final record
KILLED = (
    "import os, sys; from datalake_pipelines.core.lifecycle import delete as d; "
    "d._mark_deleted = lambda *a: os._exit(9); "
    "from datalake_pipelines.cli.main import main; sys.exit(main(sys.argv[1:]))"
)


def warehouse_rows(client, tmp_path: Path) -> int:
    """The row count ``catalog.duckdb`` (on S3 the uploaded copy) gives the lake's partitions."""
    path = tmp_path / "wh.duckdb"
    path.write_bytes(client.lake.storage.read_bytes(keys.DUCKDB))
    with duckdb.connect(str(path), read_only=True) as con:
        return int(con.execute("select coalesce(sum(rows), 0) from partitions").fetchone()[0])


@pytest.mark.parametrize("then", ["delete", "gc"])
def test_a_delete_killed_midway_is_finished_by_the_next_delete_or_gc(client, base, tmp_path, capsys, then):
    lake = client.lake
    _, doomed = client.upload_raw_data(pd.DataFrame({"text": ["doomed"]}), "inhouse", "alpha")
    client.upload_raw_data(pd.DataFrame({"text": ["kept"]}), "inhouse", "alpha")
    assert {r.status for r in client.process_pending()} == {"done"}
    lake.refresh_warehouse()
    assert warehouse_rows(client, tmp_path) == 2

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])}
    argv = [sys.executable, "-c", KILLED, "--base-path", base, "delete", "--batch", doomed]
    assert subprocess.run(argv, env=env, timeout=120).returncode == 9
    records = [o.key for o in lake.storage.list(keys.LIFECYCLE)]
    assert len(records) == 1, records
    started = json.loads(lake.storage.read_bytes(records[0]))
    assert started["state"] == "started" and started["selection"] == {"batch": doomed} and started["who"]
    assert warehouse_rows(client, tmp_path) == 2  # the warehouse still shows the deleted row

    if then == "delete":
        assert main(["--base-path", base, "delete", "--batch", doomed]) == 1
        assert f"batch {doomed} was already deleted by deletion {started['deletion_id']}" in capsys.readouterr().err
    else:
        assert main(["--base-path", base, "gc", "--grace", "0", "--retention", "0"]) == 0
    done = json.loads(lake.storage.read_bytes(records[0]))
    assert done["state"] == "done" and done["recovered_at"] and done["who"] == started["who"]
    assert done["batches_deleted"] == [doomed] and done["warehouse"] is not None
    assert list(lake.storage.list(keys.DELETIONS_OPEN)) == []
    assert warehouse_rows(client, tmp_path) == 1
    assert lake.status(doomed)["state"] == "deleted"

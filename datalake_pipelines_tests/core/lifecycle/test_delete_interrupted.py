"""A delete killed after its rows were removed and before its end (a real ``datalake delete`` process that exits
hard at that point), then another delete or GC: the deletion is finished, its record is complete and
``catalog.duckdb`` (on S3 the uploaded copy) no longer shows the rows. Both backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
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
        assert f"finished deletion {started['deletion_id']}, left open" in capsys.readouterr().out
    done = json.loads(lake.storage.read_bytes(records[0]))
    assert done["state"] == "done" and done["recovered_at"] and done["who"] == started["who"]
    assert done["batches_deleted"] == [doomed] and done["warehouse"] is not None
    assert list(lake.storage.list(keys.DELETIONS_OPEN)) == []
    assert warehouse_rows(client, tmp_path) == 1
    assert lake.status(doomed)["state"] == "deleted"


# dies after the partition's rows were compacted into the new ``data.parquet`` and before its ``_metadata.json``
# records the deletion (the window a fresh-user review hit locally ~10 ms after the deletion opened)
KILLED_AFTER_COMPACTION = (
    "import os, sys; from datalake_pipelines.core.lifecycle import delete as d; "
    "d.write_json_atomic = lambda *a, **k: os._exit(9); "
    "from datalake_pipelines.cli.main import main; sys.exit(main(sys.argv[1:]))"
)


def test_time_travel_after_a_delete_killed_past_compaction_gives_each_row_once(client, base):
    """Finishing the deletion must not retain the rewritten ``data.parquet`` beside the originals (every kept
    row would then come back twice in an ``as_of`` read from before the deletion)."""
    from datalake_pipelines.core.catalog.query import DuckDBClient

    jobs = [client.upload_raw_data(pd.DataFrame({"text": [t]}), "inhouse", "alpha")[1] for t in "abc"]
    assert {r.status for r in client.process_pending()} == {"done"}
    with DuckDBClient(base) as duck:
        before_delete = duck.retrieve_with_existing_cols(as_arrow=True).column("row_hash").to_pylist()
    assert len(before_delete) == 3
    before = datetime.now(timezone.utc)

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])}
    argv = [sys.executable, "-c", KILLED_AFTER_COMPACTION, "--base-path", base, "delete", "--batch", jobs[0]]
    assert subprocess.run(argv, env=env, timeout=120).returncode == 9
    assert main(["--base-path", base, "gc", "--grace", "0"]) == 0  # finishes the open deletion (no purge)

    with DuckDBClient(base) as duck:
        now = duck.retrieve_with_existing_cols(as_arrow=True).column("batch_id").to_pylist()
        then = duck.retrieve_with_existing_cols(as_arrow=True, as_of=before).column("row_hash").to_pylist()
    assert sorted(now) == sorted(jobs[1:])
    assert sorted(then) == sorted(before_delete)  # each row once, the deleted one included


def test_lineage_of_a_deleted_row_names_the_deletion_that_removed_it_and_its_partition(client, base):
    """Two deletions in one partition both retain the later-deleted row; lineage gives it once, attributed to
    the deletion that removed it, with its partition keys."""
    from datalake_pipelines.core.lifecycle.lineage import lineage

    jobs = [client.upload_raw_data(pd.DataFrame({"text": [t]}), "inhouse", "alpha")[1] for t in "abc"]
    assert {r.status for r in client.process_pending()} == {"done"}
    from datalake_pipelines.core.catalog.query import DuckDBClient

    with DuckDBClient(base) as duck:
        table = duck.retrieve_with_existing_cols(as_arrow=True)
    row_hash = table.column("row_hash")[table.column("batch_id").to_pylist().index(jobs[2])].as_py()
    assert main(["--base-path", base, "delete", "--batch", jobs[0]]) == 0
    assert main(["--base-path", base, "delete", "--batch", jobs[2]]) == 0
    second = json.loads(client.lake.storage.read_bytes(keys.job_record(jobs[2])))["deleted"]["deletion_id"]

    doc = lineage(client.lake, row_hash)
    assert doc["kind"] == "row" and doc["deleted"] is True
    assert len(doc["rows"]) == 1, doc["rows"]
    row = doc["rows"][0]
    assert row["deletion_id"] == second
    assert (row["provider"], row["dataset"], row["batch_id"]) == ("inhouse", "alpha", jobs[2])
    assert row["task"] == "raw" and row["variant"]

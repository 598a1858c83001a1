"""Row dedup through the row-hash index, on a local folder and on S3 (moto's HTTP server).

The index may cost a re-added row after a crash, never a dropped one: every case below checks the catalog's rows
against what was uploaded, whatever state the index was left in.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datalake_pipelines import DatalakeClient
from datalake_pipelines.core.catalog.parts import ROW_HASH
from datalake_pipelines.core.catalog.verify import verify_lake
from datalake_pipelines.core.ingest import s3_rows
from datalake_pipelines.core.ingest.row_index import LocalRowDedup, RowIndex, pack, unpack
from datalake_pipelines.core.lake import keys
from datalake_pipelines.core.lake.layout import PartitionRef

REF = PartitionRef("aihub", "docs", "ocr", "w")
META = {"lang": "ko", "src": "real"}


@pytest.fixture(params=["local", "s3"])
def base(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "lake")
    return request.getfixturevalue("s3_lake")


def ingest(client: DatalakeClient, values: list[str], job_id: str | None = None):
    client.upload_task_data(
        pa.table({"text": values}), REF.provider, REF.dataset, REF.task, REF.variant, META, job_id=job_id
    )
    [result] = client.process_pending()
    assert result.status == "done", result.error
    return result


def catalog_values(client: DatalakeClient) -> Counter:
    """The ``text`` values of every row the partition holds (read from its part files)."""
    with client.lake.partition_view(REF) as view:
        folder = view.partition_dir(REF)
        tables = [pq.read_table(p, columns=["text"]) for p in sorted(folder.glob("*.parquet"))]
    return Counter(v for t in tables for v in t.column("text").to_pylist())


def new_client(base: str) -> DatalakeClient:
    return DatalakeClient(base, num_proc=1, batch_size=64, progress=False)


def test_reuploading_rows_into_a_big_partition_adds_nothing(base):
    client = new_client(base)
    rows = [f"row {i}" for i in range(600)]
    assert ingest(client, rows).rows_added == 600
    again = ingest(client, rows)
    assert (again.rows_added, again.rows_duplicate) == (0, 600)
    mixed = ingest(client, rows[:100] + ["fresh 1", "fresh 2"])
    assert (mixed.rows_added, mixed.rows_duplicate) == (2, 100)
    assert sum(catalog_values(client).values()) == 602


def test_identical_rows_within_a_batch_keep_their_occurrences(base):
    client = new_client(base)
    assert ingest(client, ["a", "a", "b"]).rows_added == 3
    assert ingest(client, ["a", "b", "a"]).rows_added == 0
    assert ingest(client, ["a", "a", "a"]).rows_added == 1  # the third "a" is a new occurrence
    assert catalog_values(client) == Counter({"a": 3, "b": 1})


def test_an_entry_without_its_part_never_drops_a_row(base):
    # hashes recorded for a part that never got committed (a crash between the index write and the part's rename,
    # or a segment published for a part that is gone): the part files are the truth, the rows go in
    client = new_client(base)
    ingest(client, ["kept"])
    ghost = base.removesuffix("/lake") + "/ghost" if "://" in base else str(Path(base).parent / "ghost")
    hashes = ghost_hashes(new_client(ghost), ["x", "y"])
    if "://" in base:
        storage = client.lake.storage
        storage.write_bytes(keys.row_segment(REF, "part-ghost.parquet", "1-abc"), s3_rows.hashes_bytes(hashes))
        with client.lake.hash_index() as index:  # the cache too, as a run that died after recording would leave it
            RowIndex(index).record(REF.key, "part-ghost.parquet", "1-abc", hashes)
    else:
        with client.lake.hash_index() as index:
            RowIndex(index).record(REF.key, "part-ghost.parquet", "1:1", hashes)
    result = ingest(client, ["x", "y"])
    assert result.rows_added == 2
    assert catalog_values(client) == Counter({"kept": 1, "x": 1, "y": 1})
    assert verify_lake(base, REF.key, index=False)["ok"]


def ghost_hashes(client: DatalakeClient, values: list[str]) -> list[str]:
    """The row hashes ``values`` get in REF (ingested into another lake)."""
    ingest(client, values)
    with client.lake.partition_view(REF) as view:
        return [h for p in view.partition_dir(REF).glob("*.parquet") for h in pq.read_table(p)[ROW_HASH].to_pylist()]


def test_a_part_committed_without_its_index_entries_is_indexed_on_next_use(base, monkeypatch):
    # the reverse crash: the part is in place but its hashes were never recorded (the run died right after)
    client = new_client(base)
    target = s3_rows.S3RowSegments if "://" in base else LocalRowDedup
    name = "publish" if "://" in base else "committed"
    original = getattr(target, name)
    monkeypatch.setattr(target, name, lambda *a, **k: None)
    ingest(client, ["a", "b"])
    monkeypatch.setattr(target, name, original)
    again = ingest(client, ["a", "b", "c"])
    assert (again.rows_added, again.rows_duplicate) == (1, 2)
    assert catalog_values(client) == Counter({"a": 1, "b": 1, "c": 1})
    assert verify_lake(base, REF.key, index=False)["ok"]


def test_a_lake_older_than_the_row_index_still_dedups(base, tmp_path):
    client = new_client(base)
    ingest(client, ["a", "b"])
    if "://" in base:  # no segments in the bucket, no cache on this machine
        client.lake.storage.delete([o.key for o in client.lake.storage.list(keys.ROW_SEGMENTS + "/")])
        for path in (tmp_path / "lake-cache").rglob("hash_index.sqlite*"):
            path.unlink()
    else:
        with sqlite3.connect(Path(base) / "index" / "hash_index.sqlite") as conn:
            for table in ("row_hashes", "row_parts", "row_partitions"):
                conn.execute(f"DROP TABLE {table}")
    client = new_client(base)
    again = ingest(client, ["b", "a", "d"])
    assert (again.rows_added, again.rows_duplicate) == (1, 2)
    assert catalog_values(client) == Counter({"a": 1, "b": 1, "d": 1})


def test_compaction_keeps_the_index_true(base):
    client = new_client(base)
    first = ingest(client, ["a", "b"])
    ingest(client, ["c"])
    # a part stored twice under two names (an interrupted run written again): compaction drops the copy's rows
    part = keys.part_file(REF, first.job_id)
    client.lake.storage.write_bytes(part.replace(first.job_id, "copy"), client.lake.storage.read_bytes(part))
    [compacted] = [client.lake.rebuild_partition(REF, 64)]
    assert (compacted.rows, compacted.duplicates_dropped) == (3, 2)
    assert verify_lake(base, REF.key, index=False)["ok"]
    again = ingest(client, ["a", "b", "c", "e"])
    assert (again.rows_added, again.rows_duplicate) == (1, 3)
    assert catalog_values(client) == Counter({"a": 1, "b": 1, "c": 1, "e": 1})
    assert verify_lake(base, REF.key, index=False)["ok"]


def test_row_hash_keys_are_one_to_one():
    digest = "0123456789abcdef" * 4
    strings = [digest, digest.upper(), "00" + "61" * 31, "\x00" * 33 + "a", "a", "", "é" * 40]
    assert len({pack(s) for s in strings}) == len(strings)
    assert [unpack(pack(s)) for s in strings] == strings and len(pack(digest)) == 32


def test_verify_reports_a_tampered_index(base):
    client = new_client(base)
    result = ingest(client, ["a", "b"])
    assert verify_lake(base, REF.key, index=False)["ok"]
    part = Path(result.part_file or "").name
    if "://" in base:
        storage = client.lake.storage
        [key] = [o.key for o in storage.list(keys.row_segments(REF) + "/")]
        hashes = s3_rows.bytes_hashes(storage.read_bytes(key))
        storage.write_bytes(key, s3_rows.hashes_bytes([*hashes[1:], "f" * 64]))
    else:
        with client.lake.hash_index() as index:
            conn = index._conn
            with conn:
                conn.execute("DELETE FROM row_hashes WHERE h = (SELECT min(h) FROM row_hashes)")
                conn.execute(
                    "INSERT INTO row_hashes (pid, h, part) SELECT pid, ?, id FROM row_parts WHERE part = ?",
                    (pack("f" * 64), part),
                )
    report = verify_lake(base, REF.key, index=False)
    problems = " ".join(report["partitions"][0]["problems"])
    assert not report["ok"]
    assert "would be dropped as duplicates" in problems and "would be added again" in problems


def test_an_s3_run_never_downloads_the_partitions_parts(s3_lake, monkeypatch):
    client = new_client(s3_lake)
    ingest(client, [f"old {i}" for i in range(50)])
    ingest(client, [f"older {i}" for i in range(50)])
    from datalake_pipelines.core.storage.backends import S3Storage

    fetched: list[str] = []
    for method in ("download", "read_bytes"):
        original = getattr(S3Storage, method)

        def spy(self, key, *args, _original=original, **kwargs):
            fetched.append(key)
            return _original(self, key, *args, **kwargs)

        monkeypatch.setattr(S3Storage, method, spy)
    result = ingest(client, ["old 1", "new"])
    assert (result.rows_added, result.rows_duplicate) == (1, 1)
    catalog = [k for k in fetched if k.startswith(keys.partition(REF))]
    assert catalog == [keys.partition_metadata(REF)]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(st.lists(st.sampled_from("abcde"), min_size=1, max_size=6), min_size=1, max_size=5),
    compact_after=st.integers(min_value=0, max_value=5),
)
def test_rows_in_the_catalog_are_the_rows_expected(tmp_path_factory, batches, compact_after):
    # a batch is a multiset; its k-th copy of a row is one identity: the catalog holds, for each value, the most
    # copies any one batch had
    client = new_client(str(tmp_path_factory.mktemp("lake")))
    expected: Counter = Counter()
    for i, values in enumerate(batches):
        ingest(client, values)
        expected |= Counter(values)
        if i == compact_after:
            client.lake.rebuild_partition(REF, 64)
        assert catalog_values(client) == expected
    assert verify_lake(client.lake.base, REF.key, index=False)["ok"]


def test_a_row_removed_from_a_part_can_be_added_again(base, tmp_path):
    # a part rewritten without some rows (a deletion): its signature changes, so its old hashes stop counting
    client = new_client(base)
    result = ingest(client, ["a", "b"])
    key = keys.part_file(REF, result.job_id)
    local = tmp_path / "part.parquet"
    local.write_bytes(client.lake.storage.read_bytes(key))
    table = pq.read_table(local)
    pq.write_table(table.filter(pc.not_equal(table["text"], "a")), local)
    client.lake.storage.upload(local, key)
    assert catalog_values(client) == Counter({"b": 1})
    again = ingest(client, ["a", "b"])
    assert (again.rows_added, again.rows_duplicate) == (1, 1)
    assert catalog_values(client) == Counter({"a": 1, "b": 1})
    assert verify_lake(base, REF.key, index=False)["ok"]

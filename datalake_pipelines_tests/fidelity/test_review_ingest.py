"""Ingest-side faults found by a fresh user (review of issue 11): promotions, sources, meta, empty input, processing
order, pandas indexes, dictionaries of nested types, null versus absent columns. Real lakes, real processing."""

from __future__ import annotations

import decimal
import json
import time
import uuid

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datalake_pipelines.core.catalog.parts import partition_files
from datalake_pipelines.core.catalog.query import DuckDBClient
from datalake_pipelines.core.catalog.verify import verify_lake
from datalake_pipelines.core.errors import ValidationError
from datalake_pipelines.core.export.download import download
from datalake_pipelines.core.export.reader import iter_export_batches
from datalake_pipelines.core.export.tasks import run_export
from datalake_pipelines.core.lake.layout import PartitionRef

REF = PartitionRef("inhouse", "r4", "raw", "mixed")


def ingest_one(client, data, dataset="r4", **kwargs):
    _, job_id = client.upload_raw_data(data, "inhouse", dataset, **kwargs)
    [result] = client.process_pending()
    assert result.status == "done", result.error
    return result


def staged(lake) -> list:
    return [p for p in lake.pending.iterdir() if p.is_dir()] if lake.pending.is_dir() else []


# 1. a promotion never leaves the partition unreadable -------------------------------------------------------
PROMOTIONS = {
    "list-large_list": (pa.array([[1]], pa.list_(pa.int64())), pa.array([[2, 3]], pa.large_list(pa.int64()))),
    "int32-int64": (pa.array([1], pa.int32()), pa.array([2**40], pa.int64())),
    "string-large_string": (pa.array(["x"], pa.string()), pa.array(["y"], pa.large_string())),
    "decimal-precision": (
        pa.array([decimal.Decimal("1.25")], pa.decimal128(5, 2)),
        pa.array([decimal.Decimal("12345678.50")], pa.decimal128(10, 2)),
    ),
    "struct-field": (
        pa.array([{"x": 1}], pa.struct([("x", pa.int64())])),
        pa.array([{"x": 2, "y": "new"}], pa.struct([("x", pa.int64()), ("y", pa.string())])),
    ),
    "null-int64": (pa.nulls(1), pa.array([7], pa.int64())),
}


@pytest.mark.parametrize("kind", sorted(PROMOTIONS))
def test_after_each_promotion_query_download_and_export_read_the_partition(client, lake, tmp_path, kind):
    first, second = PROMOTIONS[kind]
    ingest_one(client, pa.table({"k": [1], "a": first}))
    ingest_one(client, pa.table({"k": [2], "a": second}))
    doc = json.loads(lake.partition_metadata(REF).read_text())
    assert doc["contract"]["promotions"], "the change was a promotion"
    contract_type = pa.ipc.read_schema(pa.py_buffer(__import__("base64").b64decode(doc["contract"]["arrow_schema"])))
    want = contract_type.field("a").type
    assert want == second.type or kind == "struct-field"
    # every stored part already has the contract's types: no reader sees two types for one column
    from datalake_pipelines.core.catalog.parts import contract_disagreements

    assert contract_disagreements(lake, REF) == []
    for path in partition_files(lake, REF):
        assert pq.read_schema(path).field("a").type == want, path.name
    expected = first.to_pylist() + second.to_pylist()
    if kind == "struct-field":
        expected = [{"x": 1, "y": None}, {"x": 2, "y": "new"}]
    with DuckDBClient(lake.base) as duck:
        queried = duck.retrieve_with_existing_cols(datasets=["r4"], as_arrow=True).sort_by("k")
    assert queried["a"].to_pylist() == expected and queried.schema.field("a").type == want
    manifest = download(lake, {"datasets": ["r4"]}, "parquet", tmp_path / "dl", progress=False)
    got = pq.read_table(tmp_path / "dl" / "data.parquet").sort_by("k")
    assert manifest["rows"] == 2 and got["a"].to_pylist() == expected and got.schema.field("a").type == want
    exported = run_export(lake, {"destination": str(tmp_path / "ex"), "export_all": True, "file_type": "parquet"})
    back = pa.Table.from_batches(list(iter_export_batches(exported["path"]))).sort_by("k")
    assert back["a"].to_pylist() == expected and back.schema.field("a").type == want
    assert verify_lake(lake.base)["ok"]


def test_an_s3_lake_publishes_the_older_parts_rewritten_in_the_promoted_types(s3_lake):
    from datalake_pipelines.client import DatalakeClient
    from datalake_pipelines.core.lake.keys import partition as partition_prefix
    from datalake_pipelines.core.storage.backends import S3Storage

    s3_client = DatalakeClient(s3_lake, num_proc=2, progress=False)
    s3_client.upload_raw_data(pa.table({"a": pa.array([[1]], pa.list_(pa.int64()))}), "inhouse", "r4")
    assert [r.status for r in s3_client.process_pending()] == ["done"]
    s3_client.upload_raw_data(pa.table({"a": pa.array([[2]], pa.large_list(pa.int64()))}), "inhouse", "r4")
    [second] = s3_client.process_pending()
    assert second.status == "done" and len(second.conformed_parts) == 1, second
    storage = S3Storage(s3_lake)
    keys = [o.key for o in storage.list(partition_prefix(REF)) if o.key.endswith(".parquet")]
    assert len(keys) == 2
    for key in keys:
        assert pq.read_schema(pa.BufferReader(storage.read_bytes(key))).field("a").type == pa.large_list(pa.int64())


def test_catalog_verify_reports_a_part_that_disagrees_with_the_contract(client, lake):
    ingest_one(client, pa.table({"a": pa.array([1], pa.int32())}))
    ingest_one(client, pa.table({"a": pa.array([2], pa.int64())}))
    # a part left in its old type (a lake written before parts were conformed at write time)
    part = partition_files(lake, REF)[0]
    table = pq.read_table(part)
    pq.write_table(table.set_column(0, pa.field("a", pa.int32()), table["a"].cast(pa.int32())), part)
    report = verify_lake(lake.base)
    [doc] = report["partitions"]
    assert not report["ok"] and not doc["ok"]
    assert any("'a'" in p and "int32" in p and "int64" in p and part.name in p for p in doc["problems"]), doc


# 2. extension types --------------------------------------------------------------------------------------
def test_uuid_and_json_extension_columns_come_back_through_query_download_and_export(client, lake, tmp_path):
    values = [uuid.uuid4().bytes, None]
    ext = pa.ExtensionArray.from_storage(pa.uuid(), pa.array(values, pa.binary(16)))
    docs = pa.ExtensionArray.from_storage(pa.json_(), pa.array(['{"a": [1, 2]}', None]))
    in_list = pa.ListArray.from_arrays(pa.array([0, 1, 2], pa.int32()), ext)
    table = pa.table({"k": [1, 2], "u": ext, "j": docs, "lu": in_list})
    ingest_one(client, table)

    def check(got: pa.Table, where: str) -> None:
        got = got.sort_by("k")
        for name in ("u", "j", "lu"):
            assert got.schema.field(name).type == table.schema.field(name).type, (where, name)
            assert got[name].to_pylist() == table[name].to_pylist(), (where, name)

    with DuckDBClient(lake.base) as duck:
        check(duck.retrieve_with_existing_cols(datasets=["r4"], as_arrow=True), "query")
    download(lake, {"datasets": ["r4"]}, "parquet", tmp_path / "dl", progress=False)
    check(pq.read_table(tmp_path / "dl" / "data.parquet"), "download")
    exported = run_export(lake, {"destination": str(tmp_path / "ex"), "export_all": True, "file_type": "parquet"})
    check(pa.Table.from_batches(list(iter_export_batches(exported["path"]))), "export")


# 3. meta values ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [2**70, -(2**63) - 1, [1, 2], {"x": 1}, b"raw"])
def test_meta_values_the_catalog_cannot_hold_are_refused_at_upload(client, lake, value):
    meta = {"lang": "ko", "src": "real", "n": value}
    with pytest.raises(ValidationError, match="meta field 'n'"):
        client.upload_task_data(pd.DataFrame({"t": ["a"]}), "inhouse", "docs", "ocr", "v1", meta=meta)
    assert not staged(lake)


def test_meta_values_at_the_int64_limits_are_stored_exactly(client, lake):
    meta = {"lang": "ko", "src": "real", "big": 2**63 - 1, "small": -(2**63), "f": 0.5, "b": True}
    client.upload_task_data(pd.DataFrame({"t": ["a"]}), "inhouse", "docs", "ocr", "v1", meta=meta)
    [result] = client.process_pending()
    assert result.status == "done", result.error
    table = pq.read_table(partition_files(lake, PartitionRef("inhouse", "docs", "ocr", "v1"))[0])
    assert table.select(["big", "small", "f", "b"]).to_pylist() == [{k: meta[k] for k in ("big", "small", "f", "b")}]


# 4. empty input ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data",
    [pa.table({"a": pa.array([], pa.int64())}), pa.table({}), pd.DataFrame({"a": pd.Series([], dtype="int64")})],
    ids=["no-rows", "no-columns", "empty-frame"],
)
def test_empty_uploads_are_refused_at_upload(client, lake, data):
    with pytest.raises(ValidationError, match="no (rows|columns)"):
        client.upload_raw_data(data, "inhouse", "empty")
    assert not staged(lake)


def test_a_zero_column_parquet_is_refused_by_the_cli(lake, tmp_path, capsys):
    from datalake_pipelines.cli.main import main

    path = tmp_path / "nocols.parquet"
    pq.write_table(pa.table({}), path)
    before = path.read_bytes()
    args = ["--base-path", str(lake.base), "upload", "--type", "raw", "--data", str(path)]
    code = main([*args, "--provider", "inhouse", "--dataset", "empty"])
    err = capsys.readouterr().err
    assert code != 0 and "no columns" in err, err
    assert not staged(lake) and path.read_bytes() == before


# 5. Arrow sources ----------------------------------------------------------------------------------------
def test_record_batch_reader_and_c_stream_sources_are_accepted(client, lake):
    batch = pa.record_batch({"a": [1, 2]})

    class Stream:  # any producer of the Arrow PyCapsule stream interface (polars, DuckDB, nanoarrow...)
        def __arrow_c_stream__(self, requested_schema=None):
            return pa.table({"a": [5]}).__arrow_c_stream__(requested_schema)

    ingest_one(client, batch, dataset="rb")
    ingest_one(client, pa.RecordBatchReader.from_batches(batch.schema, [pa.record_batch({"a": [3, 4]})]), "rb")
    ingest_one(client, Stream(), dataset="rb")
    with DuckDBClient(lake.base) as duck:
        assert sorted(duck.sql("SELECT a FROM catalog", as_arrow=True)["a"].to_pylist()) == [1, 2, 3, 4, 5]


def test_an_unknown_source_is_refused_listing_the_accepted_ones(client, lake):
    with pytest.raises(ValidationError, match="RecordBatchReader") as err:
        client.upload_raw_data({"a": [1]}, "inhouse", "x")
    assert "dict" in str(err.value) and not staged(lake)


# 6. processing order -------------------------------------------------------------------------------------
def test_pending_batches_are_processed_in_staging_order_not_job_id_order(client, lake):
    # staged first under a job id that sorts last: it fixes the schema contract
    client.upload_raw_data(pa.table({"a": pa.array([1], pa.int64())}), "inhouse", "ord", job_id="zz-first")
    time.sleep(0.01)
    client.upload_raw_data(pa.table({"a": ["text"]}), "inhouse", "ord", job_id="aa-second")
    results = client.process_pending()
    assert [(r.job_id, r.status) for r in results] == [("zz-first", "done"), ("aa-second", "failed")]
    assert "'a'" in results[1].error and "int64" in results[1].error


def test_the_sensor_queue_lists_pending_batches_in_staging_order(client, lake):
    from datalake_pipelines.core.lake.queue import scan_pending

    for job_id in ("c-1", "a-2", "b-3"):
        client.upload_raw_data(pa.table({"a": [1]}), "inhouse", "ord", job_id=job_id)
        time.sleep(0.01)
    assert [b.job_id for b in scan_pending(lake)] == ["c-1", "a-2", "b-3"]


# 7. pandas indexes ---------------------------------------------------------------------------------------
def test_a_named_range_index_is_kept_and_an_unnamed_one_is_dropped(client, lake):
    ingest_one(client, pd.DataFrame({"v": [1, 2]}, index=pd.RangeIndex(2, name="rid")), dataset="idx")
    ingest_one(client, pd.DataFrame({"w": [3]}), dataset="idx2")
    named = pq.read_table(partition_files(lake, PartitionRef("inhouse", "idx", "raw", "mixed"))[0])
    assert named.select(["rid", "v"]).to_pydict() == {"rid": [0, 1], "v": [1, 2]}
    plain = pq.read_table(partition_files(lake, PartitionRef("inhouse", "idx2", "raw", "mixed"))[0])
    assert [c for c in plain.column_names if c not in ("batch_id", "ingested_at", "row_hash")] == ["w"]


# 8. dictionaries of any value type -----------------------------------------------------------------------
def test_dictionaries_of_structs_and_lists_at_any_depth_are_decoded(client, lake):
    values = pa.array([{"x": 1, "y": "a"}, {"x": 2, "y": "b"}])
    dict_struct = pa.DictionaryArray.from_arrays(pa.array([0, 1, None, 0], pa.int32()), values)
    lists = pa.array([[{"x": 1}], []], pa.list_(pa.struct([("x", pa.int64())])))
    dict_list = pa.DictionaryArray.from_arrays(pa.array([1, 0, 0, 1], pa.int8()), lists)
    nested = pa.StructArray.from_arrays([dict_struct], names=["inner"])
    table = pa.table({"k": [1, 2, 3, 4], "ds": dict_struct, "dl": dict_list, "nested": nested})
    ingest_one(client, table, dataset="dict")
    stored = pq.read_table(partition_files(lake, PartitionRef("inhouse", "dict", "raw", "mixed"))[0]).sort_by("k")
    assert stored.schema.field("ds").type == values.type
    assert stored.schema.field("dl").type == lists.type
    assert stored.schema.field("nested").type == pa.struct([("inner", values.type)])
    for name in ("ds", "dl", "nested"):
        assert stored[name].to_pylist() == table[name].to_pylist(), name


# 9. a null value and an absent column are the same row ----------------------------------------------------
def test_an_added_all_null_column_does_not_make_old_rows_new(client, lake):
    ingest_one(client, pa.table({"a": [1]}), dataset="nul")
    again = ingest_one(client, pa.table({"a": [1], "b": pa.array([None], pa.string())}), dataset="nul")
    assert (again.rows_added, again.rows_duplicate) == (0, 1)
    struct_old = pa.array([{"x": 1}], pa.struct([("x", pa.int64())]))
    struct_new = pa.array([{"x": 1, "y": None}], pa.struct([("x", pa.int64()), ("y", pa.string())]))
    ingest_one(client, pa.table({"s": struct_old}), dataset="nst")
    again = ingest_one(client, pa.table({"s": struct_new}), dataset="nst")
    assert (again.rows_added, again.rows_duplicate) == (0, 1)
    # a value moved to another column is another row
    moved = ingest_one(client, pa.table({"b": pa.array(["1"]), "a": pa.array([None], pa.int64())}), dataset="nul")
    assert moved.rows_added == 1
    with DuckDBClient(lake.base) as duck:
        assert duck.sql("SELECT count(*) AS n FROM catalog WHERE dataset = 'nul'")["n"][0] == 2

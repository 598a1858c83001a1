"""What comes out of the lake is what went in (issue 11, items 5-7): types, bytes, text, filters, destinations.

Every catalog here is built through the real client (``upload_raw_data`` + ``process_pending``) from real
Parquet files, and read back through the real download/export/query/CLI code paths.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import datasets
import h5py
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from datalake_pipelines import catalog_dataset
from datalake_pipelines.cli.main import main
from datalake_pipelines.core.arrow.restore import TypeConflictError
from datalake_pipelines.core.catalog.parts import PartWriter, record_batch_in_partition
from datalake_pipelines.core.catalog.query import DuckDBClient
from datalake_pipelines.core.catalog.query_sql import InvalidFilterValueError
from datalake_pipelines.core.export.download import download
from datalake_pipelines.core.export.hf_types import HfUnsupportedTypeError, hf_plan
from datalake_pipelines.core.export.output_guard import OutputPathError
from datalake_pipelines.core.export.reader import iter_export_batches
from datalake_pipelines.core.export.tasks import ExportError, run_export
from datalake_pipelines.core.lake.layout import PartitionRef

FIDELITY = next(  # ../shared beside the project (a worktree sits one level deeper than the main checkout)
    (
        p / "shared" / "corpus" / "fidelity"
        for p in Path(__file__).resolve().parents
        if (p / "shared" / "corpus").is_dir()
    ),
    Path("../shared/corpus/fidelity"),
)
MAP_HALF_FIXED = FIDELITY / "map_half_fixed" / "data.parquet"
USER_COLUMNS = ["attrs", "h", "fx"]


def ingest(client, data, dataset: str, variant: str | None = None, tmp: Path | None = None) -> None:
    if isinstance(data, pa.Table):
        path = tmp / f"{dataset}-{variant}-{len(list(tmp.glob('*.parquet')))}.parquet"
        pq.write_table(data, path)
        data = path
    client.upload_raw_data(str(data), "aihub", dataset, variant=variant)
    results = client.process_pending()
    assert [r.status for r in results] == ["done"], [r.error for r in results]


@pytest.fixture
def map_lake(client, lake):
    if not MAP_HALF_FIXED.is_file():
        pytest.skip(f"fidelity corpus not found at {MAP_HALF_FIXED}")
    ingest(client, MAP_HALF_FIXED, "maps")
    return lake


def expected_map_table() -> pa.Table:
    return pq.read_table(MAP_HALF_FIXED)


def assert_same_user_columns(table: pa.Table, expected: pa.Table) -> None:
    for name in USER_COLUMNS:
        assert table.schema.field(name).type == expected.schema.field(name).type, name
        assert table.column(name).to_pylist() == expected.column(name).to_pylist(), name


# 1. types come back as stored ------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_map_float16_fixed_binary_download_keeps_catalog_types(map_lake, tmp_path, fmt):
    out = tmp_path / fmt
    manifest = download(map_lake, {"datasets": ["maps"]}, fmt, out, progress=False)
    if fmt == "parquet":
        table = pq.read_table(out / "data.parquet")
    else:
        with pa.ipc.open_file(out / "data.arrow") as reader:
            table = reader.read_all()
    assert_same_user_columns(table, expected_map_table())
    types = {c["name"]: c["type"] for c in manifest["columns"]}
    assert types["h"] == "halffloat" and types["fx"] == "fixed_size_binary[4]"


def test_query_results_have_catalog_types(map_lake):
    with DuckDBClient(map_lake.base) as duck:
        table = duck.retrieve_with_existing_cols(datasets=["maps"], as_arrow=True)
    assert_same_user_columns(table, expected_map_table())
    assert table.schema.field("ingested_at").type == pa.timestamp("us", tz="UTC")


def test_hf_download_converts_maps_and_records_it(map_lake, tmp_path):
    out = tmp_path / "hf"
    manifest = download(map_lake, {"datasets": ["maps"]}, "hf", out, progress=False)
    ds = datasets.load_from_disk(str(out))
    table = ds.data.table
    assert table.schema.field("h").type == pa.float16()
    assert table.schema.field("fx").type == pa.binary(4)
    assert [r["fx"] for r in ds] == [b"abcd", b"efgh"] and [r["h"] for r in ds] == [0.5, 1.5]
    assert [r["attrs"] for r in ds] == [
        [{"key": "k", "value": 1}],
        [{"key": "k", "value": 2}, {"key": "j", "value": 3}],
    ]
    on_disk = json.loads((out / "download.json").read_text())
    assert [c["column"] for c in on_disk["hf_conversions"]] == ["attrs"]
    assert on_disk["hf_conversions"][0]["from"].startswith("map<string, int32")
    assert on_disk["hf_conversions"] == manifest["hf_conversions"]
    exported = run_export(map_lake, {"destination": str(tmp_path / "ex"), "export_all": True, "file_type": "hf"})
    assert exported["manifest"]["hf_conversions"] == manifest["hf_conversions"]
    table = pa.Table.from_batches(list(iter_export_batches(exported["path"])))
    assert table.schema.field("h").type == pa.float16() and table.schema.field("fx").type == pa.binary(4)
    assert table["attrs"].to_pylist() == [r["attrs"] for r in ds]


def test_hf_refuses_what_datasets_cannot_hold_with_a_stable_code():
    schema = pa.schema(
        [("ok", pa.int8()), ("u", pa.dense_union([pa.field("a", pa.int8())])), ("lv", pa.list_view(pa.int8()))]
    )
    with pytest.raises(HfUnsupportedTypeError) as err:
        hf_plan(schema)
    assert err.value.code == "hf_unsupported_type"
    assert "'u'" in str(err.value) and "'lv'" in str(err.value) and "'ok'" not in str(err.value)


@pytest.mark.parametrize("file_type", ["parquet", "arrow", "jsonl", "hdf5"])
def test_map_float16_fixed_binary_exports_read_back_exactly(map_lake, tmp_path, file_type):
    result = run_export(map_lake, {"destination": str(tmp_path / "out"), "export_all": True, "file_type": file_type})
    table = pa.Table.from_batches(list(iter_export_batches(result["path"])))
    expected = expected_map_table()
    assert_same_user_columns(table, expected)
    if file_type == "jsonl":  # bytes as base64 and the map as key/value entries, both restored by the reader
        encodings = {"attrs": ["map_entries"], "fx": ["base64"], "ingested_at": ["epoch_units"]}
        assert result["manifest"]["encodings"] == encodings
        first = json.loads((Path(result["path"]) / "data.jsonl").read_text().splitlines()[0])
        assert first["fx"] == "YWJjZA==" and first["attrs"] == [{"key": "k", "value": 1}]
    if file_type == "hdf5":
        with h5py.File(Path(result["path"]) / "data.h5") as f:
            group = f["/aihub/maps/raw/mixed"]
            assert group["h"].dtype.name == "float16"
            assert {c["name"]: c["encoding"] for c in json.loads(group.attrs["schema"])}["fx"] == "bytes"


def test_times_beyond_python_datetime_come_out_of_every_format(lake, tmp_path):
    """``out_of_range_timestamps`` (a struct holding year 52671, and a top-level one): written as a catalog part
    directly, since refusing or accepting it at upload is the staging side's decision."""
    source = FIDELITY / "out_of_range_timestamps" / "data.parquet"
    if not source.is_file():
        pytest.skip(f"fidelity corpus not found at {source}")
    event = pq.read_table(source).column("event").combine_chunks()
    far = pa.array([1_600_000_000_000_000_000, 5], pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    now = pa.array([0, 0], pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    table = pa.table({"event": event, "far": far, "batch_id": ["j", "j"], "ingested_at": now, "row_hash": ["a", "b"]})
    ref = PartitionRef("aihub", "times", "raw", "mixed")
    writer = PartWriter(lake.part_file(ref, "j"))
    writer.write(table)
    writer.commit()
    record_batch_in_partition(lake, ref, "j", 2, table.schema, {"created_at": "2026-01-01T00:00:00+00:00"})
    for file_type in ("parquet", "arrow", "jsonl", "hdf5", "hf"):
        params = {"destination": str(tmp_path / file_type), "export_all": True, "file_type": file_type}
        result = run_export(lake, params)
        assert result["scan_data_count"] == 2, file_type
        assert len(result["sampled_data"]) == 2
        back = pa.Table.from_batches(list(iter_export_batches(result["path"])))
        if True:  # every format, JSONL included (times as integers in their unit), gives the exact times back
            assert back["event"].combine_chunks().equals(event) and back["far"].combine_chunks().equals(far)
    for fmt in ("parquet", "arrow", "hf"):
        manifest = download(lake, None, fmt, tmp_path / f"dl-{fmt}", progress=False)
        assert manifest["rows"] == 2


# 3. type conflicts across partitions -----------------------------------------------------------------------
@pytest.fixture
def conflict_lake(client, lake, tmp_path):
    ingest(client, pa.table({"a": pa.array([1, 2**53 + 1], pa.int64()), "b": ["x", "y"]}), "ints", tmp=tmp_path)
    ingest(client, pa.table({"a": ["one", "two"], "b": ["z", "w"]}), "texts", tmp=tmp_path)
    return lake


def test_cross_partition_type_conflict_is_one_clear_error(conflict_lake, tmp_path):
    with DuckDBClient(conflict_lake.base) as duck:
        with pytest.raises(TypeConflictError) as err:
            duck.retrieve_with_existing_cols()
        message = str(err.value)
        assert "'a'" in message and "int64" in message and "string" in message
        assert "aihub/ints/raw/mixed" in message and "aihub/texts/raw/mixed" in message
        assert err.value.code == "type_conflict"
        # a column both agree on, or one side only, is fine and exactly typed
        assert sorted(duck.retrieve_with_existing_cols(columns=["b"], as_arrow=True)["b"].to_pylist()) == list("wxyz")
        ints = duck.retrieve_with_existing_cols(datasets=["ints"], as_arrow=True)
        assert ints.schema.field("a").type == pa.int64() and sorted(ints["a"].to_pylist()) == [1, 2**53 + 1]
        with pytest.raises(TypeConflictError):
            duck.search_text("b", "x")
    with pytest.raises(TypeConflictError):
        download(conflict_lake, None, "parquet", tmp_path / "dl", progress=False)
    assert not (tmp_path / "dl").exists()
    with pytest.raises(ExportError) as err:
        run_export(conflict_lake, {"destination": str(tmp_path / "ex"), "export_all": True})
    assert err.value.code == "type_conflict"


# 4. JSONL bytes ------------------------------------------------------------------------------------------
def test_jsonl_binary_round_trips_through_base64(client, lake, tmp_path):
    raw = [b"\x00\xff\\x41", b"", None]
    nested = [[b"\x01", None], None, []]
    ingest(
        client,
        pa.table({"blob": pa.array(raw, pa.binary()), "blobs": pa.array(nested, pa.list_(pa.binary()))}),
        "bin",
        tmp=tmp_path,
    )
    result = run_export(lake, {"destination": str(tmp_path / "out"), "export_all": True, "file_type": "jsonl"})
    lines = (Path(result["path"]) / "data.jsonl").read_text().splitlines()
    assert "\\\\x" not in "".join(lines)  # not DuckDB's escape text
    assert result["manifest"]["encodings"] == {"blob": ["base64"], "blobs": ["base64"], "ingested_at": ["epoch_units"]}
    table = pa.Table.from_batches(list(iter_export_batches(result["path"])))
    assert table.schema.field("blob").type == pa.binary()
    rows = sorted(zip(table["blob"].to_pylist(), table["blobs"].to_pylist()), key=repr)
    assert rows == sorted(zip(raw, nested), key=repr)


def test_jsonl_decimals_read_back_as_exact_decimals(client, lake, tmp_path):
    from decimal import Decimal

    values = [Decimal("12345678901234567890.123456"), Decimal("-0.000001"), None]
    nested = [[Decimal("1.5")], None, [None]]
    source = {
        "d": pa.array(values, pa.decimal128(38, 6)),
        "ds": pa.array(nested, pa.list_(pa.decimal128(5, 1))),
    }
    ingest(client, pa.table(source), "dec", tmp=tmp_path)
    result = run_export(lake, {"destination": str(tmp_path / "out"), "export_all": True, "file_type": "jsonl"})
    table = pa.Table.from_batches(list(iter_export_batches(result["path"])))
    assert table.schema.field("d").type == pa.decimal128(38, 6)  # not float64, which has 15-17 digits
    assert table.schema.field("ds").type == pa.list_(pa.decimal128(5, 1))
    rows = sorted(zip(table["d"].to_pylist(), table["ds"].to_pylist()), key=repr)
    assert rows == sorted(zip(values, nested), key=repr)


# 5. HDF5 strings with NUL -------------------------------------------------------------------------------
def test_hdf5_keeps_strings_with_nul_as_bytes(client, lake, tmp_path):
    texts = ["plain", "é", "a\x00b", None, "after"]
    ingest(client, pa.table({"s": texts, "n": list(range(5))}), "nul", tmp=tmp_path)
    params = {
        "destination": str(tmp_path / "out"),
        "export_all": True,
        "file_type": "hdf5",
        "options": {"batch_size": 2},
    }
    result = run_export(lake, params)
    table = pa.Table.from_batches(list(iter_export_batches(result["path"], 2)))
    assert sorted(zip(table["n"].to_pylist(), table["s"].to_pylist())) == list(enumerate(texts))
    with h5py.File(Path(result["path"]) / "data.h5") as f:
        schema = json.loads(f["/aihub/nul/raw/mixed"].attrs["schema"])
    assert {c["name"]: c["encoding"] for c in schema}["s"] == "utf8_bytes"


# 6. search folds both sides in one engine --------------------------------------------------------------
def test_search_folds_term_and_text_the_same_way(client, lake, tmp_path):
    texts = ["Welcome to İstanbul, the city", "ISTANBUL airport", "Ankara"]
    ingest(client, pa.table({"t": texts}), "cities", tmp=tmp_path)
    with DuckDBClient(lake.base) as duck:
        hits = duck.search_text("t", "İstanbul", as_arrow=True)
        found = dict(zip(hits["t"].to_pylist(), hits["matched_snippet"].to_pylist()))
        assert "Welcome to İstanbul, the city" in found
        assert "İstanbul" in found["Welcome to İstanbul, the city"]
        assert "Ankara" not in found
        lower = duck.search_text("t", "istanbul", as_arrow=True)
        assert set(lower["t"].to_pylist()) == set(found)


def test_json_search_finds_escaped_and_renumbered_values(client, lake, tmp_path):
    docs = [
        '{"words": [{"text": "\\u0130stanbul"}]}',  # escaped in the raw JSON text
        '{"words": [{"text": "İstanbul"}]}',
        '{"words": [{"text": 1E2}]}',  # extracted as 100.0
        '{"words": [{"text": "Ankara"}]}',
    ]
    ingest(client, pa.table({"doc": docs, "i": [0, 1, 2, 3]}), "jsondocs", tmp=tmp_path)
    with DuckDBClient(lake.base) as duck:
        hits = duck.search_text("doc", "İSTANBUL", json_path="$.words[*].text", as_arrow=True)
        assert sorted(hits["i"].to_pylist()) == [0, 1]
        assert set(hits["matched_snippet"].to_pylist()) == {"İstanbul"}
        assert duck.search_text("doc", "100", json_path="$.words[*].text", as_arrow=True)["i"].to_pylist() == [2]


# 7. filters with commas, bad values ---------------------------------------------------------------------
@pytest.fixture
def city_lake(client, lake, tmp_path):
    table = pa.table({"city": ["Seoul, Korea", "Seoul", "Korea", "Busan"], "score": [1, 2, 3, 4]})
    ingest(client, table, "cities", tmp=tmp_path)
    return lake


def test_cli_download_where_value_with_comma_is_one_value(city_lake, tmp_path, capsys):
    out = tmp_path / "dl"
    argv = ["--base-path", str(city_lake.base), "download", "--all", "--where", "city=Seoul, Korea", "--out", str(out)]
    assert main([*argv, "--json"]) == 0
    assert pq.read_table(out / "data.parquet")["city"].to_pylist() == ["Seoul, Korea"]
    out2 = tmp_path / "dl2"
    argv = ["--base-path", str(city_lake.base), "download", "--all", "--where", "city=Seoul, Korea", "--where",
            "city=Busan", "--out", str(out2), "--json"]  # fmt: skip
    assert main(argv) == 0
    assert sorted(pq.read_table(out2 / "data.parquet")["city"].to_pylist()) == ["Busan", "Seoul, Korea"]


def test_cli_export_filter_value_with_comma_is_one_value(city_lake, tmp_path, capsys):
    dest = tmp_path / "exports"
    argv = ["--base-path", str(city_lake.base), "export", "create", "--filter", "city=Seoul, Korea",
            "--destination", str(dest), "--now", "--json"]  # fmt: skip
    assert main(argv) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["task_status"] == "done"
    (folder,) = [p for p in dest.iterdir() if not p.name.startswith(".")]
    rows = [r for b in iter_export_batches(folder) for r in b.to_pylist()]
    assert [r["city"] for r in rows] == ["Seoul, Korea"]
    both = '{"city": ["Seoul, Korea", "Busan"], "score": [4]}'
    argv = ["--base-path", str(city_lake.base), "export", "create", "--filter-json", both,
            "--destination", str(dest), "--now", "--json"]  # fmt: skip
    assert main(argv) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["process_info"]["scan_data_count"] == 1


def test_cli_value_not_of_the_column_type_is_an_error_line(city_lake, tmp_path, capsys):
    argv = [
        "--base-path",
        str(city_lake.base),
        "download",
        "--all",
        "--where",
        "score=abc",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "'score'" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
    with DuckDBClient(city_lake.base) as duck, pytest.raises(InvalidFilterValueError):
        duck.retrieve_with_existing_cols(where={"score": "abc"})
    with DuckDBClient(city_lake.base) as duck:
        assert duck.retrieve_with_existing_cols(where={"score": "3"}, as_arrow=True)["city"].to_pylist() == ["Korea"]


# 9. destinations are never replaced unless asked ---------------------------------------------------------
def test_download_never_replaces_unless_asked_and_races_have_one_winner(city_lake, tmp_path):
    # A folder the user wrote is never replaced, even with overwrite (the output guard's rule since the
    # review of issue 18 found --overwrite could delete any folder); a download folder of ours is, when asked.
    out = tmp_path / "dl"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    for overwrite in (False, True):
        with pytest.raises(OutputPathError, match="not written by this command"):
            download(city_lake, {"where": {"city": "Busan"}}, "parquet", out, progress=False, overwrite=overwrite)
    assert (out / "mine.txt").read_text() == "keep"
    ours = tmp_path / "ours"
    download(city_lake, {"where": {"city": "Seoul"}}, "parquet", ours, progress=False)
    with pytest.raises(FileExistsError, match="already exists"):
        download(city_lake, {"where": {"city": "Busan"}}, "parquet", ours, progress=False)
    download(city_lake, {"where": {"city": "Busan"}}, "parquet", ours, progress=False, overwrite=True)
    assert pq.read_table(ours / "data.parquet")["city"].to_pylist() == ["Busan"]

    race = tmp_path / "race"
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def run(city: str) -> None:
        barrier.wait()
        try:
            outcomes[city] = download(city_lake, {"where": {"city": city}}, "parquet", race, progress=False)
        except FileExistsError as exc:
            outcomes[city] = exc

    threads = [threading.Thread(target=run, args=(c,)) for c in ("Seoul", "Busan")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [c for c, o in outcomes.items() if isinstance(o, dict)]
    losers = [o for o in outcomes.values() if isinstance(o, FileExistsError)]
    assert len(winners) == 1 and len(losers) == 1 and "already exists" in str(losers[0])
    assert pq.read_table(race / "data.parquet")["city"].to_pylist() == winners
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# 10. digit-only partition values ------------------------------------------------------------------------
def test_digit_partition_values_read_back_as_distinct_strings(client, lake, tmp_path):
    ingest(client, pa.table({"x": [1]}), "2017", variant="007", tmp=tmp_path)
    ingest(client, pa.table({"x": [2]}), "2017", variant="7", tmp=tmp_path)
    expected = [("2017", "007", 1), ("2017", "7", 2)]

    def triples(table: pa.Table) -> list:
        assert table.schema.field("dataset").type == pa.string() and table.schema.field("variant").type == pa.string()
        return sorted(zip(table["dataset"].to_pylist(), table["variant"].to_pylist(), table["x"].to_pylist()))

    assert triples(catalog_dataset(lake.base).to_table()) == expected
    with DuckDBClient(lake.base) as duck:
        assert triples(duck.retrieve_with_existing_cols(as_arrow=True)) == expected
        assert triples(duck.sql("SELECT * FROM catalog", as_arrow=True)) == expected
        assert triples(duck.retrieve_with_existing_cols(variants=["007"], as_arrow=True)) == expected[:1]
    download(lake, {"datasets": ["2017"]}, "parquet", tmp_path / "hive", hive=True, progress=False)
    assert triples(catalog_dataset(tmp_path / "hive" / "data").to_table()) == expected
    # the trap catalog_dataset avoids: hive inference turns both variants into the integer 7
    inferred = pads.dataset(lake.catalog_root, format="parquet", partitioning="hive").to_table()
    assert inferred.schema.field("variant").type != pa.string()

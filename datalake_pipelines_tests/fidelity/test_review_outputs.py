"""Faults a fresh user found on the output side (queries, filters, downloads, exports), one test per kind.

Lakes are built through the real client (``upload_raw_data`` + ``process_pending``) and read back through
``DuckDBClient``, ``download``, the export job and the CLI's ``main()``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datalake_pipelines.cli.main import main
from datalake_pipelines.core.catalog.query import DuckDBClient
from datalake_pipelines.core.catalog.query_sql import InvalidFilterValueError
from datalake_pipelines.core.export.download import download


def ingest(client, table: pa.Table, dataset: str, tmp: Path) -> None:
    path = tmp / f"{dataset}-{len(list(tmp.glob('*.parquet')))}.parquet"
    pq.write_table(table, path)
    client.upload_raw_data(str(path), "aihub", dataset)
    results = client.process_pending()
    assert [r.status for r in results] == ["done"], [r.error for r in results]


@pytest.fixture
def typed_lake(client, lake, tmp_path):
    table = pa.table(
        {
            "score": pa.array([3, 4], pa.int64()),
            "flag": [True, False],
            "city": ["Seoul", ""],
            "ratio": pa.array([0.1, 2.5], pa.float32()),
            "a,b": ["x", "y"],
            "note": pa.array([None, "n"], pa.string()),
        }
    )
    ingest(client, table, "typed", tmp_path)
    return lake


# 1. filter values are cast exactly, never rounded --------------------------------------------------------
@pytest.mark.parametrize(
    "where",
    [
        {"score": 3.5},
        {"score": "3.5"},
        {"score": [3.5]},
        {"score": True},
        {"flag": 1},
        {"flag": "yes"},
        {"flag": "1"},
        {"city": 1},
        {"ratio": "0.100000001"},
    ],
)
def test_filter_value_not_exactly_of_the_type_is_refused(typed_lake, where):
    with DuckDBClient(base_path=typed_lake.base) as duck, pytest.raises(InvalidFilterValueError) as err:
        duck.retrieve_with_existing_cols(where=where)
    assert str(err.value).startswith("[invalid_filter_value]") and repr(next(iter(where))) in str(err.value)


@pytest.mark.parametrize(
    ("where", "scores"),
    [
        ({"score": 3}, [3]),
        ({"score": "4"}, [4]),
        ({"score": 3.0}, [3]),
        ({"flag": True}, [3]),
        ({"flag": "FALSE"}, [4]),
        ({"ratio": 0.1}, [3]),
        ({"ratio": "2.5"}, [4]),
        ({"city": ""}, [4]),
        ({"note": None}, [3]),
        ({"note": [None]}, [3]),
        ({"note": [None, "n"]}, [3, 4]),
    ],
)
def test_exact_filter_values_match(typed_lake, where, scores):
    with DuckDBClient(base_path=typed_lake.base) as duck:
        table = duck.retrieve_with_existing_cols(where=where, as_arrow=True)
    assert sorted(table["score"].to_pylist()) == scores


def test_non_dict_where_is_refused_clearly(typed_lake, tmp_path):
    with pytest.raises(ValueError, match="where must be a dict"):
        download(typed_lake, {"where": "score=3"}, "parquet", tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("value", ["score=3.5", "flag=yes", "flag=1"])
def test_cli_download_where_not_exact_is_an_error_line(typed_lake, tmp_path, capsys, value):
    out = tmp_path / "o"
    assert main(["--base-path", str(typed_lake.base), "download", "--all", "--where", value, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: [invalid_filter_value]") and "Traceback" not in err
    assert not out.exists()


def test_cli_export_filter_not_exact_is_an_error_line(typed_lake, tmp_path, capsys):
    argv = ["--base-path", str(typed_lake.base), "export", "create", "--filter", "score=3.5",
            "--destination", str(tmp_path / "exp"), "--now"]  # fmt: skip
    assert main(argv) == 1
    captured = capsys.readouterr()
    err = captured.err
    assert err.splitlines() == [err.splitlines()[0]] and err.startswith("error: [INVALID_FILTER_TYPE] column 'score'")
    assert "3.5" in err and "Traceback" not in err
    # one error line per failure: the task summary on stdout does not repeat it (found in review)
    assert "INVALID_FILTER_TYPE" not in captured.out and "task " in captured.out
    assert not (tmp_path / "exp").exists() or not any(
        p for p in (tmp_path / "exp").rglob("*") if p.is_file() and p.suffix in (".parquet", ".jsonl", ".h5")
    )


def test_cli_where_empty_value_is_the_empty_string(typed_lake, tmp_path):
    out = tmp_path / "o"
    argv = ["--base-path", str(typed_lake.base), "download", "--all", "--where", "city=", "--out", str(out), "--json"]
    assert main(argv) == 0
    assert pq.read_table(out / "data.parquet")["score"].to_pylist() == [4]


def test_cli_columns_repeatable_and_a_column_with_a_comma(typed_lake, tmp_path):
    def columns(*flags: str) -> list[str]:
        out = tmp_path / f"o{len(list(tmp_path.iterdir()))}"
        argv = ["--base-path", str(typed_lake.base), "download", "--all", "--out", str(out), "--json"]
        for flag in flags:
            argv += ["--columns", flag]
        assert main(argv) == 0
        return pq.read_table(out / "data.parquet").column_names

    assert columns("a,b") == ["a,b"]
    assert columns("a,b", "score") == ["a,b", "score"]
    assert columns("score,city") == ["score", "city"]
    assert columns("city", "score") == ["city", "score"]


# 2. JSONL exports write extreme times exactly ------------------------------------------------------------
def test_jsonl_export_keeps_extreme_times_exact(client, lake, tmp_path):
    import pandas as pd

    from datalake_pipelines.core.export.reader import iter_export_batches
    from datalake_pipelines.core.export.tasks import run_export

    ns = [2**63 - 1, -(2**63) + 1, pd.Timestamp.min.value, pd.Timestamp.max.value]
    table = pa.table(
        {
            "ts": pa.array(ns, pa.int64()).cast(pa.timestamp("ns")),
            "tz": pa.array(ns, pa.int64()).cast(pa.timestamp("ns", tz="Asia/Seoul")),
            "ms": pa.array([2**50, -(2**50), 0, 1], pa.int64()).cast(pa.timestamp("ms")),
            "day": pa.array([2**31 - 1, -(2**31) + 1, 0, 1], pa.int32()).cast(pa.date32()),
            "nested": pa.array([{"t": v} for v in ns], pa.struct([("t", pa.int64())])).cast(
                pa.struct([("t", pa.timestamp("ns"))])
            ),
            "raw": pa.array([b"\x00", b"a", b"", None], pa.binary()),
            "i": [0, 1, 2, 3],
        }
    )
    ingest(client, table, "extremes", tmp_path)
    result = run_export(lake, {"destination": str(tmp_path / "exp"), "export_all": True, "file_type": "jsonl"})
    text = "".join(p.read_text() for p in Path(result["path"]).rglob("*.jsonl"))
    assert "infinity" not in text
    back = pa.Table.from_batches(list(iter_export_batches(result["path"]))).sort_by("i")
    for name in table.column_names:
        got = back[name].combine_chunks()
        assert got.type == table.schema.field(name).type, name
        assert got.equals(table[name].combine_chunks()), name


# 6. JSONL exports of extension columns read back --------------------------------------------------------
def extension_table() -> pa.Table:
    import pandas as pd

    frame = pd.DataFrame(
        {
            "period": pd.array([pd.Period("2024-01", "M"), None, pd.Period("1999-12", "M")], dtype="period[M]"),
            "span": pd.arrays.IntervalArray.from_breaks([0, 1, 2, 3]),
        }
    )
    table = pa.Table.from_pandas(frame, preserve_index=False)
    tensor = pa.fixed_shape_tensor(pa.int32(), (2, 2))
    storage = pa.array([[1, 2, 3, 4], [5, 6, 7, 8], None], pa.list_(pa.int32(), 4))
    table = table.append_column("tensor", pa.ExtensionArray.from_storage(tensor, storage))
    doc = pa.ExtensionArray.from_storage(pa.json_(), pa.array(['{"a": [1, 2]}', None, '"x"']))
    return table.append_column("doc", doc).append_column("i", pa.array([0, 1, 2]))


def test_jsonl_export_reads_extension_columns_back(client, lake, tmp_path):
    from datalake_pipelines.core.export.reader import iter_export_batches
    from datalake_pipelines.core.export.tasks import run_export

    table = extension_table()
    ingest(client, table, "ext", tmp_path)
    result = run_export(lake, {"destination": str(tmp_path / "exp"), "export_all": True, "file_type": "jsonl"})
    back = pa.Table.from_batches(list(iter_export_batches(result["path"]))).sort_by("i")
    for name in table.column_names:
        got = back[name].combine_chunks()
        assert got.type == table.schema.field(name).type, name
        assert got.equals(table[name].combine_chunks()), name


# 4. any table exports through the Dagster job; expected failures print one error line ------------------
def test_export_job_metadata_is_json_safe_for_every_type(client, lake, tmp_path, capsys):
    from decimal import Decimal

    from datalake_pipelines.core.export.reader import iter_export_batches

    ns = [2**63 - 1, -(2**63) + 1, 0]
    table = pa.table(
        {
            "wait": pa.array([1, -(10**15), None], pa.duration("ns")),
            "wait_s": pa.array([86_400 * 3 + 1, 0, -5], pa.duration("s")),
            "price": pa.array([Decimal("1.10"), None, Decimal("-3.00")], pa.decimal128(10, 2)),
            "blob": pa.array([b"\x00\xff", b"", None], pa.binary()),
            "far": pa.array(ns, pa.int64()).cast(pa.timestamp("ns")),
            "x": pa.array([float("nan"), float("inf"), 1.5]),
            "nested": pa.array([{"d": 1}, None, {"d": 2}], pa.struct([("d", pa.duration("ms"))])),
        }
    )
    ingest(client, table, "anytype", tmp_path)
    for file_type in ("parquet", "jsonl"):
        dest = tmp_path / f"exp-{file_type}"
        argv = ["--base-path", str(lake.base), "export", "create", "--export-all", "--file-type", file_type,
                "--destination", str(dest), "--now", "--json"]  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err
        captured = capsys.readouterr()
        info = json.loads(captured.out)
        assert info["task_status"] == "done" and captured.err == ""
        assert len(info["process_info"]["sampled_data"]) == 3
        (folder,) = [p for p in dest.iterdir() if not p.name.startswith(".")]
        back = pa.Table.from_batches(list(iter_export_batches(folder)))
        assert back.num_rows == 3 and back["wait"].type == pa.duration("ns")


# 7. documented query behaviours ---------------------------------------------------------------------------
def test_existing_cols_leaves_out_all_null_columns_unless_named(typed_lake):
    with DuckDBClient(base_path=typed_lake.base) as duck:
        assert "note" not in duck.retrieve_with_existing_cols(where={"score": 3}, as_arrow=True).column_names
        named = duck.retrieve_with_existing_cols(columns=["score", "note"], where={"score": 3}, as_arrow=True)
        assert named.column_names == ["score", "note"] and named["note"].to_pylist() == [None]


def test_search_case_mapping_is_duckdb_lower_on_both_sides(client, lake, tmp_path):
    ingest(client, pa.table({"t": ["Straße", "οδος", "ΟΔΟΣ"]}), "fold", tmp_path)
    with DuckDBClient(base_path=lake.base) as duck:

        def hits(term: str) -> list[str]:
            return sorted(duck.search_text("t", term, as_arrow=True)["t"].to_pylist())

        assert hits("STRASSE") == [] and hits("STRAßE") == ["Straße"]
        assert hits("ΟΔΟΣ") == ["ΟΔΟΣ"] and hits("οδος") == ["οδος"]


# 3. catalog_dataset reads a selection with its own exact schema ------------------------------------------
def test_catalog_dataset_selection_keeps_exact_types_and_names_conflicts(client, lake, tmp_path):
    from datalake_pipelines import catalog_dataset
    from datalake_pipelines.core.arrow.restore import TypeConflictError

    big = 2**53 + 2
    ingest(client, pa.table({"q": pa.array([5, big], pa.int64()), "k": pa.array([1, 2], pa.int8())}), "a", tmp_path)
    ingest(client, pa.table({"q": [0.5], "k": pa.array([300], pa.int16())}), "b", tmp_path)
    ingest(client, pa.table({"k": ["text"]}), "c", tmp_path)

    a = catalog_dataset(lake.base, datasets="a").to_table()
    assert a.schema.field("q").type == pa.int64() and a.schema.field("k").type == pa.int8()
    assert sorted(a["q"].to_pylist()) == [5, big] and set(a["dataset"].to_pylist()) == {"a"}
    with pytest.raises(TypeConflictError) as err:  # k: int16 in b, string in c
        catalog_dataset(lake.base, datasets=["b", "c"], providers="aihub")
    assert "'k'" in str(err.value) and "int16" in str(err.value) and "aihub/c/" in str(err.value)
    for selection in ({}, {"datasets": ["a", "b"]}):  # q: int64 in a, double in b (not lossless)
        with pytest.raises(TypeConflictError) as err:
            catalog_dataset(lake.base, **selection)
        message = str(err.value)
        assert message.startswith("[type_conflict]") and ("'q'" in message or "'k'" in message)
        assert "aihub/a/" in message and "aihub/b/" in message
    with pytest.raises(ValueError, match="no partition"):
        catalog_dataset(lake.base, datasets="zzz")


# 5. HDF5 exports hold every column name and type upload accepts -----------------------------------------
def test_hdf5_export_maps_odd_names_reversibly_and_holds_many_columns(client, lake, tmp_path):
    import h5py

    from datalake_pipelines.core.export.reader import iter_export_batches
    from datalake_pipelines.core.export.tasks import run_export

    odd = {".": [1, 2, 3], "trail/": ["x", None, "z"], "a": [1.5, 2.5, 3.5], "a/b": [4, 5, 6], "/lead": [7, 8, 9],
           "100%": ["p", "q", "r"], "_nulls": [True, None, False]}  # fmt: skip
    table = pa.table(odd).append_column("i", pa.array([0, 1, 2]))
    for c in extension_table().column_names[:-1]:
        table = table.append_column(c, extension_table()[c])
    many = pa.table({f"column_number_{k:04d}": pa.array([k, k + 1, k + 2], pa.int32()) for k in range(2000)})
    ingest(client, table, "odd", tmp_path)
    ingest(client, many, "many", tmp_path)
    result = run_export(lake, {"destination": str(tmp_path / "exp"), "export_all": True, "file_type": "hdf5"})
    (h5,) = Path(result["path"]).rglob("*.h5")
    with h5py.File(h5, "r") as f:
        assert "lead" not in f and "%2Flead" in f["aihub/odd/raw/mixed"]  # nothing written at the file's root
    back = pa.Table.from_batches(list(iter_export_batches(result["path"])))
    odd_back = back.filter(back["i"].is_valid()).sort_by("i")
    for name in table.column_names:
        got = odd_back[name].combine_chunks()
        assert got.type == table.schema.field(name).type, name
        assert got.equals(table[name].combine_chunks()), name
    many_back = back.filter(back["column_number_0000"].is_valid())
    assert many_back.num_rows == 3 and many_back["column_number_1999"].to_pylist() == [1999, 2000, 2001]


def test_hdf5_writer_refuses_a_type_without_text_form_before_writing(tmp_path):
    from datalake_pipelines.core.export.hdf5 import Hdf5ExportWriter
    from datalake_pipelines.core.export.hdf5_names import Hdf5UnsupportedColumnError

    batch = pa.table(
        {"provider": ["p"], "dataset": ["d"], "task": ["t"], "variant": ["v"], "ok": [1],
         "span": pa.array([pa.scalar((1, 2, 3), pa.month_day_nano_interval()).as_py()], pa.month_day_nano_interval())}
    )  # fmt: skip
    writer = Hdf5ExportWriter(tmp_path / "x.h5", read_asset=lambda p: b"")
    with pytest.raises(Hdf5UnsupportedColumnError, match=r"\[hdf5_unsupported_column\] column 'span'"):
        writer.write(batch)
    assert not writer.groups  # nothing was written
    writer.abort()


@pytest.fixture
def instance():
    import dagster as dg

    with dg.instance_for_test() as inst:
        yield inst


def test_export_job_keeps_filter_value_types(typed_lake, tmp_path, instance):
    """Through the Dagster job (run config), ``{"city": [1]}`` must not become the text '1' nor 1 become true."""
    from datalake_pipelines.services.exports import create_export, export_info

    for bad in ({"city": [1]}, {"flag": [1]}, {"score": [3.5]}):
        params = {"destination": str(tmp_path / "exp"), "filter": bad}
        task = create_export(instance, params, base_path=typed_lake.base, wait=True)
        info = export_info(instance, typed_lake, task)
        assert info["task_status"] == "fail", bad
        assert info["process_info"]["err_code"] == "INVALID_FILTER_TYPE", bad
    task = create_export(instance, {"destination": str(tmp_path / "ok"), "filter": {"flag": [True], "score": [3.0]}},
                         base_path=typed_lake.base, wait=True)  # fmt: skip
    assert export_info(instance, typed_lake, task)["process_info"]["scan_data_count"] == 1

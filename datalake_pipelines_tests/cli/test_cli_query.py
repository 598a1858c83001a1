"""`datalake catalog rebuild` and `datalake download`: flags, prompts and bad input."""

import io
import json
import sys

import duckdb
import pandas as pd
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from datalake_pipelines.cli.main import main


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def ocr_lake(client, lake, tmp_path, make_jpeg):
    words = ["invoice 42", "receipt", "' OR 1=1 --"]
    df = pd.DataFrame(
        {
            "image": [str(make_jpeg(tmp_path / f"{i}.jpg")) for i in range(3)],
            "ocr_result": [json.dumps({"words": [{"text": w, "bbox": [0, 0, 5, 5]}]}) for w in words],
        }
    )
    client.upload_task_data(df, "aihub", "receipts", "ocr", "words", meta={"lang": "en", "src": "real"})
    client.upload_raw_data(df[["image"]], "aihub", "receipts")
    assert all(r.status == "done" for r in client.process_pending())
    return lake


def cli(lake, *args, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", Tty(stdin))
    return main(["--base-path", str(lake.base), *args])


def test_catalog_rebuild_runs_the_warehouse_asset(ocr_lake, capsys):
    assert cli(ocr_lake, "catalog", "rebuild", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["partitions"] == 2 and doc["rows"] == 6
    with duckdb.connect(str(ocr_lake.duckdb_file), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM hash_index").fetchone()[0] == 3
        assert con.execute("SELECT sum(rows) FROM partitions").fetchone()[0] == 6


def test_catalog_rebuild_sees_a_partition_copied_in_by_hand(ocr_lake, capsys):
    """The automatic refresh reads the change log, which a copy by hand is not in; `catalog rebuild` walks."""
    import shutil

    from datalake_pipelines.core.lake.layout import PartitionRef
    from datalake_pipelines.core.lake.open import open_lake

    open_lake(str(ocr_lake.base)).refresh_warehouse()
    source = ocr_lake.partition_dir(PartitionRef("aihub", "receipts", "ocr", "words"))
    shutil.copytree(source, ocr_lake.partition_dir(PartitionRef("aihub", "receipts", "ocr", "copied")))
    assert open_lake(str(ocr_lake.base)).refresh_warehouse()["partitions"] == 2
    assert cli(ocr_lake, "catalog", "rebuild", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["partitions"] == 3 and doc["rows"] == 9


def test_download_by_partition_and_by_text(ocr_lake, tmp_path):
    out = tmp_path / "arrow"
    assert cli(ocr_lake, "download", "--task", "ocr", "--format", "arrow", "--out", str(out)) == 0
    table = ipc.open_file(out / "data.arrow").read_all()
    assert table.num_rows == 3 and set(table.column("task").to_pylist()) == {"ocr"}
    found = tmp_path / "found"
    args = ["--search-column", "ocr_result", "--text", "INVOICE", "--json-path", "$.words[*].text"]
    assert cli(ocr_lake, "download", *args, "--task", "ocr", "--out", str(found)) == 0
    rows = pq.read_table(found / "data.parquet").to_pylist()
    assert [r["matched_snippet"] for r in rows] == ["invoice 42"]
    manifest = json.loads((found / "download.json").read_text())
    assert manifest["rows"] == 1


def test_sql_looking_text_is_matched_literally(ocr_lake, tmp_path):
    out = tmp_path / "sql"
    args = ["--search-column", "ocr_result", "--text", "' OR 1=1 --", "--task", "ocr", "--out", str(out)]
    assert cli(ocr_lake, "download", *args) == 0
    assert pq.read_table(out / "data.parquet").num_rows == 1


def test_download_prompts_like_the_reference(ocr_lake, tmp_path, monkeypatch):
    out = tmp_path / "prompted"
    answers = "2\naihub\n\nocr\nocr_result\nreceipt\n$.words[*].text\n1\n"
    assert cli(ocr_lake, "download", "--out", str(out), stdin=answers, monkeypatch=monkeypatch) == 0
    assert pq.read_table(out / "data.parquet").column("matched_snippet").to_pylist() == ["receipt"]


def test_download_bad_input_is_a_clear_error(ocr_lake, tmp_path, capsys):
    assert cli(ocr_lake, "download", "--out", str(tmp_path / "x")) == 2
    assert cli(ocr_lake, "download", "--provider", "nobody", "--out", str(tmp_path / "y")) == 1
    assert "aihub" in capsys.readouterr().err, "the error lists the providers that exist"
    assert cli(ocr_lake, "download", "--all", "--columns", "nope", "--out", str(tmp_path / "z")) == 1
    assert "nope" in capsys.readouterr().err

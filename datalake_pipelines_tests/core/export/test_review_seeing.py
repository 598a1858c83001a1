"""Issue 18 review: where ``preview``/``download``/``near-dups --out``/``profile --png`` may write (one guard), and
the one ``--limit`` rule."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from datalake_pipelines.cli.main import main
from datalake_pipelines.core.export.download import download
from datalake_pipelines.core.export.output_guard import OutputPathError, check_output

KEY = "inhouse/shots/ocr/v1"


@pytest.fixture
def lake_with_rows(client, lake, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rows = []
    for i in range(3):
        p = src / f"s{i}.png"
        Image.new("RGB", (40, 30), (30 * i, 90, 200)).save(p)
        rows.append({"image": str(p), "doc_id": f"s{i}"})
    client.upload_task_data(pd.DataFrame(rows), "inhouse", "shots", "ocr", "v1", meta={"lang": "en", "src": "real"})
    assert [r.status for r in client.process_pending()] == ["done"]
    return lake


def refused(args, capsys, match: str) -> None:
    """``main(args)`` fails (exit code not 0) with ``match`` in its error message."""
    code = main(args)
    err = capsys.readouterr().err
    assert code != 0 and match in err, (code, err)


def lake_files(lake) -> set[str]:
    """The lake's files, less those that come and go on their own: SQLite side files, and processed batches
    (``staging/processing/.done-*``) that processing deletes in the background."""
    return {
        rel
        for p in lake.base.rglob("*")
        if p.is_file()
        and not p.name.endswith(("-wal", "-shm"))
        and "/.done-" not in (rel := p.relative_to(lake.base).as_posix())
    }


def commands(lake, out):
    base = ["--base-path", str(lake.base)]
    return {
        "preview": [*base, "preview", "--partition", KEY, "--out", str(out), "--overwrite"],
        "download": [*base, "download", "--all", "--format", "parquet", "--out", str(out), "--overwrite"],
        "near-dups": [*base, "near-dups", "--out", str(out), "--overwrite"],
    }


@pytest.mark.parametrize("command", ["preview", "download", "near-dups"])
def test_overwrite_never_replaces_the_lake_or_a_folder_in_it(lake_with_rows, tmp_path, capsys, command):
    lake = lake_with_rows
    before = lake_files(lake)
    link = tmp_path / "link-to-lake"
    link.symlink_to(lake.base)
    for out in (lake.base, lake.base / "assets", lake.base / "catalog", link, lake.base.parent):
        refused(commands(lake, out)[command], capsys, f"lake at {lake.base}")
    assert lake_files(lake) == before and all((lake.base / f).is_file() for f in before)


@pytest.mark.parametrize("command", ["preview", "download", "near-dups"])
def test_overwrite_replaces_only_a_folder_written_by_us(lake_with_rows, tmp_path, capsys, command):
    lake = lake_with_rows
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"x")
    for out in (a_file, other):
        refused(commands(lake, out)[command], capsys, "never replaced")
    assert a_file.read_text() == "mine" and (other / "holiday.jpg").read_bytes() == b"x"
    ours = tmp_path / "ours"
    assert main(commands(lake, ours)[command]) == 0  # a new folder
    assert main(commands(lake, ours)[command]) == 0  # replaced: it holds our marker


def test_profile_png_follows_the_same_rule_and_creates_folders(lake_with_rows, tmp_path, capsys):
    lake = lake_with_rows
    base = ["--base-path", str(lake.base), "profile", "--partition", KEY, "--json"]
    png = tmp_path / "new" / "deeper" / "p.png"
    assert main([*base, "--png", str(png)]) == 0
    assert Image.open(png).format == "PNG"
    kept = tmp_path / "keep.png"
    kept.write_bytes(b"precious")
    refused([*base, "--png", str(kept)], capsys, "already exists")
    assert kept.read_bytes() == b"precious"
    assert main([*base, "--png", str(kept), "--overwrite"]) == 0 and Image.open(kept).format == "PNG"
    refused([*base, "--png", str(lake.base / "catalog" / "p.png"), "--overwrite"], capsys, "inside the lake")
    (tmp_path / "a-folder").mkdir()
    refused([*base, "--png", str(tmp_path / "a-folder"), "--overwrite"], capsys, "not a regular file")


@pytest.mark.parametrize("command", ["preview", "download", "near-dups"])
def test_limit_has_one_rule(lake_with_rows, tmp_path, capsys, command):
    lake = lake_with_rows
    args = commands(lake, tmp_path / "out")[command]
    assert main([*args, "--limit", "-1"]) == 2
    assert "--limit: must be a whole number of 0 or more, got '-1'" in capsys.readouterr().err
    assert main([*args, "--limit", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    if command == "preview":
        assert report["rows"] == 0
    elif command == "download":
        assert report["rows"] == 0
    else:
        assert "more clusters" not in json.dumps(report.get("gallery", {}))


def test_download_api_refuses_a_negative_limit_with_exclusion(lake_with_rows, tmp_path):
    with pytest.raises(ValueError, match="non-negative"):
        download(lake_with_rows, {"limit": -1}, "parquet", tmp_path / "d", exclude_near_duplicates=4)
    assert not (tmp_path / "d").exists()


def test_guard_api(lake_with_rows, tmp_path):
    lake = lake_with_rows
    with pytest.raises(OutputPathError, match="holds the lake"):
        check_output(lake.base.parent, lake, True)
    assert check_output(tmp_path / "fresh", lake, False) == (tmp_path / "fresh").resolve()
    assert check_output(tmp_path / "x", "s3://bucket/lake", True) == (tmp_path / "x").resolve()


@pytest.mark.parametrize("command", ["preview", "download", "near-dups", "profile"])
def test_an_uri_output_is_refused_not_taken_as_a_local_folder(lake_with_rows, tmp_path, capsys, monkeypatch, command):
    """``--out s3://bucket/x`` used to write a folder named ``s3:`` under the working directory."""
    monkeypatch.chdir(tmp_path)
    profile = ["--base-path", str(lake_with_rows.base), "profile", "--partition", KEY, "--png", "s3://bucket/p.png"]
    code = main({**commands(lake_with_rows, "s3://bucket/x"), "profile": profile}[command])
    err = capsys.readouterr().err
    assert code == 1 and "[bad_output_path] output s3://bucket/" in err and "export create --destination s3://" in err
    assert "a local " + ("file" if command == "profile" else "folder") in err
    assert not (tmp_path / "s3:").exists()


def test_download_api_refuses_an_uri_output(lake_with_rows, tmp_path, monkeypatch):
    from datalake_pipelines import DatalakeClient

    monkeypatch.chdir(tmp_path)
    client = DatalakeClient(lake_with_rows.base, progress=False)
    for out in ("s3://bucket/x", Path("s3://bucket/x"), "https://example.com/x"):  # a Path has made it s3:/bucket/x
        with pytest.raises(OutputPathError, match="is a URI") as err:
            client.download({"tasks": ["ocr"]}, "parquet", out)
        assert err.value.code == "bad_output_path"
    assert not (tmp_path / "s3:").exists() and not (tmp_path / "https:").exists()
    assert check_output("C:/x", lake_with_rows, False) == tmp_path / "C:" / "x"  # a drive letter is no scheme

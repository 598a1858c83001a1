"""Findings of a fresh user's review of file and image handling (issue 12), each on a real lake.

Dedup hits on broken assets, EXIF-rotated TIFF geometry, decompression bombs in ``create_data_file``,
``catalog verify`` over the hash index, and the messages a user reads.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.dataset as pads
import pytest
from PIL import Image, ImageOps

from datalake_pipelines import DatalakeClient
from datalake_pipelines.cli.main import main
from datalake_pipelines.core.errors import ValidationError
from datalake_pipelines.core.ingest.hash_index import HashIndex


def rows(lake) -> list[dict]:
    return pads.dataset(lake.catalog_root, partitioning="hive").to_table().to_pylist()


def ingest(client: DatalakeClient, folder: Path) -> object:
    client.upload_raw_data(folder, provider="inhouse", dataset="scans")
    [result] = client.process_pending()
    return result


# 3. a dedup hit on a deleted or damaged asset ------------------------------------------------------------
@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_dedup_hit_on_a_broken_local_asset_stores_the_bytes_again(client, lake, tmp_path, make_jpeg, damage):
    src = tmp_path / "a"
    make_jpeg(src / "x.jpg", color=(10, 20, 30))
    first = ingest(client, src)
    assert first.status == "done" and first.images_new == 1
    asset = lake.base / rows(lake)[0]["image"]
    original = asset.read_bytes()
    if damage == "delete":
        asset.unlink()
    else:
        asset.write_bytes(original[:-7])
    second = tmp_path / "b"
    second.mkdir()
    (second / "y.jpg").write_bytes((src / "x.jpg").read_bytes())
    result = ingest(client, second)
    assert result.status == "done"
    assert (result.images_new, result.images_deduplicated) == (1, 0)
    assert asset.read_bytes() == original
    assert all((lake.base / r["image"]).read_bytes() == original for r in rows(lake))


def test_create_data_file_restores_a_deleted_asset_and_verify_index_sees_it(client, lake, tmp_path, capsys):
    src = tmp_path / "notes.bin"
    src.write_bytes(b"some data file " * 10)
    doc = client.create_data_file(src)
    asset = lake.base / doc["path"]
    asset.unlink()

    capsys.readouterr()
    code = main(["--base-path", str(lake.base), "catalog", "verify", "--json", "--index"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and not report["ok"]
    assert report["partitions"] == [] and report["index"]["missing"] == [doc["path"]]

    again = client.create_data_file(src)
    assert not again["deduplicated"] and again["path"] == doc["path"]
    assert asset.read_bytes() == src.read_bytes()
    assert main(["--base-path", str(lake.base), "catalog", "verify"]) == 0  # no partition: the index is checked


# 6. geometry of an EXIF-rotated image, every format that carries the tag ----------------------------------
@pytest.mark.parametrize("fmt", ["TIFF", "JPEG", "PNG", "WEBP"])
def test_rotated_image_size_agrees_with_exif_transpose(client, lake, tmp_path, fmt):
    exif = Image.Exif()
    exif[274] = 6
    buf = io.BytesIO()
    Image.new("RGB", (40, 20), (200, 10, 10)).save(buf, fmt, exif=exif)
    data = buf.getvalue()
    shown = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).size
    assert shown == (20, 40)
    src = tmp_path / "src"
    src.mkdir()
    (src / f"rot.{fmt.lower()}").write_bytes(data)
    assert ingest(client, src).status == "done"
    [row] = rows(lake)
    assert (row["image_width"], row["image_height"]) == shown
    doc = client.create_data_file(src / f"rot.{fmt.lower()}")
    assert (doc["width"], doc["height"]) == shown


# 7. decompression bombs are images, rejected ----------------------------------------------------------------
def test_create_data_file_rejects_a_decompression_bomb_as_an_image(client, lake, tmp_path, corpus_dir):
    bomb = corpus_dir / "invalid" / "decompression_bomb.gif"
    with pytest.raises(ValidationError, match="an image, rejected: decompression bomb"):
        client.create_data_file(bomb)
    big = tmp_path / "big.png"
    Image.new("1", (14000, 14000)).save(big)  # 196 Mpx, flat: a small file
    with pytest.raises(ValidationError, match="decompression bomb"):
        client.create_data_file(big)
    assert HashIndex(lake.hash_index).count() == 0


# 4./5. image columns: detection over the whole column, duplicates compared by resolved file -------------
@pytest.fixture
def imgs(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)  # a DataFrame's relative paths resolve against the working directory
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "imgs" / "w0.bmp")
    Image.new("RGB", (8, 8), (9, 9, 9)).save(tmp_path / "imgs" / "r.jpg")
    return tmp_path


def test_image_column_after_200_placeholders_is_not_silently_text(client, imgs):
    import pandas as pd

    df = pd.DataFrame({"image": ["n/a"] * 200 + ["imgs/w0.bmp"] * 5})
    with pytest.raises(ValidationError, match="n/a"):  # resolved as an image column: the placeholder is named
        client.upload_raw_data(df, "inhouse", "ph")
    # not named like an image: text, with the reason and the count of rows that did resolve
    df = pd.DataFrame({"ref": ["n/a"] * 200 + ["imgs/w0.bmp"] * 5, "caption": ["a cat"] * 205})
    client.upload_raw_data(df, "inhouse", "ph2")
    text = client.last_staging_report["text_columns"]
    assert "'n/a' resolves to no file" in text["ref"] and "(5 of 205 non-null values resolve" in text["ref"]
    assert "'a cat' resolves to no file" in text["caption"]
    big = pd.DataFrame({"ref": ["n/a"] * 5000 + ["imgs/w0.bmp"] * 5})  # beyond any head-only sample
    client.upload_raw_data(big, "inhouse", "ph3")
    assert "(5 of 5005 non-null values resolve" in client.last_staging_report["text_columns"]["ref"]


def test_duplicate_image_columns_are_compared_by_resolved_file(client, imgs, lake):
    import pandas as pd

    df = pd.DataFrame({"img": ["imgs/w0.bmp", "imgs\\r.jpg"], "orig": ["imgs/w0.bmp", "imgs/r.jpg"]})
    client.upload_raw_data(df, "inhouse", "dup")
    report = client.last_staging_report
    assert list(report["image_columns"]) == ["img"]
    assert "repeats the values of image column 'img'" in report["text_columns"]["orig"]
    [result] = client.process_pending()
    assert result.status == "done", result.error
    assert sorted(r["orig"] for r in rows(lake)) == ["imgs/r.jpg", "imgs/w0.bmp"]  # the text is kept as given


# 9. messages a user reads ----------------------------------------------------------------------------------
def test_a_failed_batch_reports_nothing_added(client, lake, tmp_path, make_jpeg, capsys):
    src = tmp_path / "src"
    for i in range(5):
        make_jpeg(src / f"ok{i}.jpg", color=(i, 50, 90))
    for i in range(11):
        (src / f"bad{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    client.upload_raw_data(src, provider="inhouse", dataset="scans")
    [result] = client.process_pending()
    assert result.status == "failed" and result.rows_rejected == 11
    assert result.rows_added == 0 and "nothing was added to the catalog" in result.error
    record = json.loads(lake.job_record(result.job_id).read_text())
    assert record["rows_added"] == 0
    capsys.readouterr()
    main(["--base-path", str(lake.base), "process", "status", result.job_id])
    out = capsys.readouterr().out
    assert "added=0" in out and "added=5" not in out


def test_verify_counts_distinct_problems(client, lake, tmp_path, make_jpeg, capsys):
    src = tmp_path / "src"
    make_jpeg(src / "a.jpg", color=(1, 1, 1))
    (src / "copy.jpg").write_bytes((src / "a.jpg").read_bytes())  # two rows, one asset
    make_jpeg(src / "b.jpg", color=(2, 2, 2))
    ingest(client, src)
    by_name = {r["file_name"]: lake.base / r["image"] for r in rows(lake)}
    by_name["a.jpg"].unlink()
    by_name["b.jpg"].write_bytes(b"short")
    capsys.readouterr()
    assert main(["--base-path", str(lake.base), "catalog", "verify", "--partition", "inhouse/scans/raw/image"]) == 1
    out = capsys.readouterr().out
    assert "1 missing asset(s), 1 other problem(s)" in out and "+" not in out
    assert out.count("missing: ") == 1 and out.count("expected") == 1


def test_upload_data_file_of_a_path_that_never_existed(lake, collection, tmp_path, make_jpeg):
    unit = {"files": {"image": make_jpeg(tmp_path / "u.jpg"), "annotation": tmp_path / "never.json"}}
    with pytest.raises(Exception) as info:
        DatalakeClient(lake.base, progress=False).upload_data_file(unit, collection.id)
    assert "does not exist" in str(info.value) and "disappeared" not in str(info.value)


def test_windows_absolute_path_is_reported_as_given(client, imgs):
    import pandas as pd

    df = pd.DataFrame({"image": ["imgs/w0.bmp", "C:\\imgs\\w0.bmp"]})
    with pytest.raises(ValidationError) as info:
        client.upload_raw_data(df, "inhouse", "win", image_columns=["image"])
    message = str(info.value)
    assert "'C:\\\\imgs\\\\w0.bmp' is an absolute Windows path" in message and str(imgs) not in message


# 1./2./8. hand drops: image columns of data.parquet resolved, nothing a user wrote is deleted ---------------
def job_record(lake, job_id: str) -> dict:
    return json.loads(lake.job_record(job_id).read_text())


def kept_folder(lake, job_id: str) -> Path:
    return lake.failed / f"{job_id}-unreferenced" / "files"


def test_hand_drop_data_parquet_image_column_is_resolved_and_unreferenced_files_are_kept(client, lake, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    drop = lake.pending / "drop-data"
    (drop / "imgs").mkdir(parents=True)
    Image.new("RGB", (8, 6), (1, 2, 3)).save(drop / "imgs" / "a.png")
    Image.new("RGB", (8, 6), (3, 2, 1)).save(drop / "imgs" / "unused.png")
    (drop / "extra.txt").write_text("my notes")
    outside = tmp_path / "outside.png"
    Image.new("RGB", (4, 4), (9, 9, 9)).save(outside)
    values = ["imgs/a.png", "../../../outside.png", str(outside)]
    pq.write_table(pa.table({"image": values, "caption": ["a", "b", "c"]}), drop / "data.parquet")
    (drop / "_metadata.json").write_text(json.dumps({"provider": "inhouse", "dataset": "drops"}))
    [result] = client.process_pending(max_reject_ratio=1.0)
    assert result.status == "done", result.error
    assert result.rows_added == 1 and result.images_new == 1 and result.rows_rejected == 2
    [row] = rows(lake)
    assert row["image"].startswith("assets/") and (lake.base / row["image"]).is_file()
    reasons = " ".join(r["reason"] for r in result.rejected)
    assert "'..'" in reasons and "absolute path" in reasons
    report = job_record(lake, result.job_id)["staging_report"]
    assert list(report["image_columns"]) == ["image"]
    kept = {k["path"]: k["reason"] for k in report["kept"]["files"]}
    assert kept == {"extra.txt": "no row of the batch references the file",
                    "imgs/unused.png": "no row of the batch references the file"}  # fmt: skip
    assert (kept_folder(lake, result.job_id) / "extra.txt").read_text() == "my notes"
    assert (kept_folder(lake, result.job_id) / "imgs" / "unused.png").is_file()
    assert outside.is_file()


def test_hand_drop_image_columns_key_in_the_manifest(client, lake):
    import pyarrow as pa
    import pyarrow.parquet as pq

    drop = lake.pending / "drop-named"
    (drop / "sub").mkdir(parents=True)
    Image.new("RGB", (5, 5), (7, 7, 7)).save(drop / "sub" / "scan.bmp")
    # a relative path written on Windows resolves like its forward-slash form, as in an upload
    pq.write_table(pa.table({"ref": ["sub\\scan.bmp"], "note": ["sub\\scan.bmp"]}), drop / "data.parquet")
    meta = {"provider": "inhouse", "dataset": "drops", "image_columns": ["ref"]}
    (drop / "_metadata.json").write_text(json.dumps(meta))
    [result] = client.process_pending()
    assert result.status == "done", result.error
    [row] = rows(lake)
    assert row["ref"].startswith("assets/") and row["note"] == "sub\\scan.bmp"
    assert not (lake.failed / f"{result.job_id}-unreferenced").exists()  # the file was taken: nothing to keep


def test_hand_drop_skipped_files_are_listed_and_kept(client, lake, make_jpeg):
    import os

    drop = lake.pending / "drop-skips"
    make_jpeg(drop / "good.jpg", color=(5, 6, 7))
    (drop / ".hidden").write_text("h")
    (drop / ".cache").mkdir()
    (drop / ".cache" / "x.bin").write_bytes(b"x")
    (drop / ".claim.json").write_text('{"mine": true}')
    (drop / "error.json").write_text('{"user": 1}')
    os.mkfifo(drop / "pipe")
    os.symlink(drop / "good.jpg", drop / "link.jpg")
    bad = os.fsdecode(b"bad\xffname.bmp")
    Image.new("RGB", (4, 4), (1, 1, 1)).save(os.path.join(os.fsencode(drop), b"bad\xffname.bmp"), "BMP")
    (drop / "_metadata.json").write_text(json.dumps({"provider": "inhouse", "dataset": "drops"}))
    [result] = client.process_pending(max_reject_ratio=1.0)
    assert result.status == "done", result.error
    assert {r["file_name"] for r in rows(lake)} == {"good.jpg"}
    report = job_record(lake, result.job_id)["staging_report"]
    skipped = {s["path"] for s in report["skipped"]}
    assert {".hidden", ".cache/", ".claim.json", "error.json", "pipe", "bad\\xffname.bmp"} <= skipped
    assert any("b'bad\\xffname.bmp'" in s["reason"] for s in report["skipped"])
    kept = {k["path"] for k in report["kept"]["files"]}
    assert kept == {".hidden", ".cache/x.bin", ".claim.json", "error.json", "pipe", "link.jpg", "bad\\xffname.bmp"}
    folder = kept_folder(lake, result.job_id)
    assert (folder / ".claim.json").read_text() == '{"mine": true}'
    assert (folder / "error.json").read_text() == '{"user": 1}'
    assert (folder / "link.jpg").is_symlink() and (folder / "pipe").is_fifo()
    assert (folder / bad).is_file() and (folder / ".cache" / "x.bin").read_bytes() == b"x"


def test_folder_upload_with_a_non_utf8_file_name_skips_it_by_name(client, lake, tmp_path, make_jpeg):
    import os

    src = tmp_path / "src"
    make_jpeg(src / "good.jpg", color=(5, 6, 7))
    Image.new("RGB", (4, 4), (1, 1, 1)).save(os.path.join(os.fsencode(src), b"bad\xffname.bmp"), "BMP")
    client.upload_raw_data(src, provider="inhouse", dataset="scans")
    [skip] = client.last_staging_report["skipped"]
    assert skip["path"] == "bad\\xffname.bmp" and "b'bad\\xffname.bmp'" in skip["reason"]
    [result] = client.process_pending()
    assert result.status == "done" and result.rows_added == 1


def test_re_uploading_a_folder_with_a_bad_file_reuses_the_same_quarantine(client, lake, tmp_path, make_jpeg):
    src = tmp_path / "src"
    for i in range(3):
        make_jpeg(src / f"ok{i}.jpg", color=(i, 9, 9))
    (src / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    first = ingest(client, src)
    again = ingest(client, src)
    assert (first.status, again.status) == ("done", "done") and again.rows_duplicate == 3
    assert again.rejected_dir == first.rejected_dir
    assert len(list(lake.failed.glob("*-rejected"))) == 1
    (src / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken differently")
    third = ingest(client, src)
    assert third.rejected_dir != first.rejected_dir and len(list(lake.failed.glob("*-rejected"))) == 2


def test_s3_hand_drop_keeps_unreferenced_files_in_the_bucket(s3_lake, make_jpeg, tmp_path):
    from datalake_pipelines.core.storage.backends import S3Storage

    storage = S3Storage(s3_lake)
    jpg = make_jpeg(tmp_path / "a.jpg", color=(3, 3, 3))
    storage.write_bytes("staging/pending/s3drop/a.jpg", jpg.read_bytes())
    storage.write_bytes("staging/pending/s3drop/.hidden", b"mine")
    storage.write_bytes("staging/pending/s3drop/error.json", b'{"user": 1}')
    storage.write_bytes("staging/pending/s3drop/_metadata.json", b'{"provider": "inhouse", "dataset": "drops"}')
    from datalake_pipelines.core.ingest.processing import ProcessOptions
    from datalake_pipelines.core.lake.s3 import S3Lake

    [result] = S3Lake(s3_lake).process_pending(ProcessOptions(), quiet_seconds=0.0)
    assert result.status == "done", result.error
    kept = result.staging_report["kept"]
    assert {k["path"] for k in kept["files"]} == {".hidden", "error.json"}
    assert storage.read_bytes("staging/failed/s3drop-unreferenced/files/.hidden") == b"mine"
    assert storage.read_bytes("staging/failed/s3drop-unreferenced/files/error.json") == b'{"user": 1}'


def test_decompression_bombs_are_rejected_images_in_folder_uploads_and_hand_drops(client, lake, tmp_path, corpus_dir):
    import shutil

    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (6, 6), (4, 4, 4)).save(src / "ok.png")
    shutil.copyfile(corpus_dir / "invalid" / "decompression_bomb.gif", src / "bomb.gif")
    Image.new("1", (14000, 14000)).save(src / "big.png")
    client.upload_raw_data(src, provider="inhouse", dataset="scans")
    [first] = client.process_pending(max_reject_ratio=1.0)
    drop = lake.pending / "drop-bombs"
    shutil.copytree(src, drop)
    (drop / "ok.png").unlink()
    Image.new("RGB", (6, 6), (5, 5, 5)).save(drop / "ok2.png")
    Image.new("RGB", (6, 6), (6, 6, 6)).save(drop / "ok3.png")
    Image.new("RGB", (6, 6), (7, 7, 7)).save(drop / "ok4.png")
    (drop / "_metadata.json").write_text(json.dumps({"provider": "inhouse", "dataset": "drops"}))
    [second] = client.process_pending(max_reject_ratio=1.0)
    for result in (first, second):
        assert result.status == "done", result.error
        assert len(result.rejected) == 2 and all("decompression bomb" in r["reason"] for r in result.rejected)
        assert {r.get("column") for r in result.rejected} == {"image"}


def test_s3_create_data_file_restores_a_deleted_object(s3_lake, tmp_path):
    from datalake_pipelines.core.storage.backends import S3Storage

    src = tmp_path / "notes.bin"
    src.write_bytes(b"s3 data file " * 20)
    client = DatalakeClient(s3_lake, progress=False)
    doc = client.create_data_file(src)
    storage = S3Storage(s3_lake)
    storage.delete([doc["path"]])
    again = client.create_data_file(src)
    assert not again["deduplicated"] and again["path"] == doc["path"]
    assert storage.read_bytes(doc["path"]) == src.read_bytes()
    assert client.create_data_file(src)["deduplicated"]


def test_hand_drop_rejected_row_with_a_windows_path_keeps_its_file_in_the_quarantine(client, lake):
    import pyarrow as pa
    import pyarrow.parquet as pq

    drop = lake.pending / "drop-win"
    (drop / "sub").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (5, 5), (i, 7, 7)).save(drop / "sub" / f"ok{i}.png")
    (drop / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    values = ["sub\\ok0.png", "sub\\ok1.png", "sub\\broken.png"]
    pq.write_table(pa.table({"image": values}), drop / "data.parquet")
    (drop / "_metadata.json").write_text(json.dumps({"provider": "inhouse", "dataset": "drops"}))
    [result] = client.process_pending()
    assert result.status == "done" and result.rows_added == 2 and result.rows_rejected == 1, result.error
    assert (Path(result.rejected_dir) / "sub" / "broken.png").read_bytes() == b"\x89PNG\r\n\x1a\n cut"


def test_xmp_orientation_is_read_as_exif_transpose_reads_it(client, lake, tmp_path):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    xmp = '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    info.add_itxt("XML:com.adobe.xmp", xmp)
    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (40, 20), (1, 2, 3)).save(src / "xmp.png", pnginfo=info)
    shown = ImageOps.exif_transpose(Image.open(src / "xmp.png")).size
    assert shown == (20, 40)
    assert ingest(client, src).status == "done"
    [row] = rows(lake)
    assert (row["image_width"], row["image_height"], row["image_orientation"]) == (20, 40, 6)


# second review: image-named columns that resolve to nothing, NFC/NFD references -----------------------------
def test_an_image_named_column_of_image_paths_none_resolving_is_refused_by_name(client, imgs, lake):
    import pandas as pd

    with pytest.raises(ValidationError, match="'image'.*nope.png"):
        client.upload_raw_data(pd.DataFrame({"image": ["/tmp/nope.png", "imgs/typo.jpg"]}), "inhouse", "miss")
    assert not any(lake.pending.iterdir())
    # placeholders that name no image file stay text, with the reason in the staging report
    client.upload_raw_data(pd.DataFrame({"img": ["n/a", "n/a"]}), "inhouse", "ph")
    assert "'n/a' resolves to no file" in client.last_staging_report["text_columns"]["img"]


def test_a_hand_drop_whose_image_paths_resolve_to_nothing_fails_naming_the_column(client, lake):
    import pyarrow as pa
    import pyarrow.parquet as pq

    drop = lake.pending / "drop-missing"
    drop.mkdir(parents=True)
    pq.write_table(pa.table({"image": ["imgs/missing.png"]}), drop / "data.parquet")
    (drop / "_metadata.json").write_text(json.dumps({"provider": "inhouse", "dataset": "drops"}))
    [result] = client.process_pending()
    assert result.status == "failed" and "'image'" in result.error and "missing.png" in result.error
    assert (lake.failed / "drop-missing" / "data.parquet").is_file()  # the original batch is recoverable


@pytest.mark.parametrize("stored, referenced", [("NFD", "NFC"), ("NFC", "NFD")])
def test_references_match_a_file_name_written_in_the_other_normal_form(client, lake, tmp_path, stored, referenced):
    import unicodedata

    import pyarrow as pa
    import pyarrow.parquet as pq

    name = "imgs/caf\u00e9.png"
    on_disk, in_row = unicodedata.normalize(stored, name), unicodedata.normalize(referenced, name)
    drop = lake.pending / "drop-nf"
    (drop / "imgs").mkdir(parents=True)
    Image.new("RGB", (6, 6), (4, 5, 6)).save(drop / on_disk)
    pq.write_table(pa.table({"image": [in_row]}), drop / "data.parquet")
    (drop / "_metadata.json").write_text(json.dumps({"provider": "inhouse", "dataset": "drops"}))
    [result] = client.process_pending()
    assert result.status == "done", result.error
    assert result.images_new == 1 and not (lake.failed / f"{result.job_id}-unreferenced").exists()
    # the same through an upload of a Parquet file next to the images
    src = tmp_path / "src"
    (src / "imgs").mkdir(parents=True)
    Image.new("RGB", (6, 6), (6, 5, 4)).save(src / on_disk)
    pq.write_table(pa.table({"image": [in_row]}), src / "data.parquet")
    client.upload_raw_data(src / "data.parquet", "inhouse", "uploads")
    assert list(client.last_staging_report["image_columns"]) == ["image"]
    [result] = client.process_pending()
    assert result.status == "done" and result.images_new == 1

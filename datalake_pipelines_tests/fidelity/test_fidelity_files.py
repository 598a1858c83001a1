"""Every file of an upload accounted for, every image checked whole under one pixel limit, image columns resolved.

One test per input of ``../shared/corpus/fidelity`` that issue 12 items 1-3 cover, the whole image corpus through a
folder and a Parquet upload, the pixel limit at 95 and 190 Mpx, an NFD/NFC hand drop and Windows paths.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
import unicodedata
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from datalake_pipelines.cli.main import main
from datalake_pipelines.core.errors import ValidationError
from datalake_pipelines.core.ingest.file_accounting import IMAGE_EXTENSIONS, identify_image, scan_folder
from datalake_pipelines_tests.core.ingest.test_core_corpus import WHOLE_FILE_REJECTS, expected


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def job_record(lake, job_id: str) -> dict:
    return json.loads(lake.job_record(job_id).read_text())


def cli(lake, capsys, *args) -> tuple[int, str]:
    code = main(["--base-path", str(lake.base), *args])
    return code, capsys.readouterr().out


# folder_mixed_formats/ ---------------------------------------------------------------------------------------
def test_folder_mixed_formats_every_file_is_an_image_a_file_row_or_skipped(
    fidelity_dir, lake, capsys, tmp_path, read_catalog
):
    folder = tmp_path / "mixed"
    shutil.copytree(fidelity_dir / "folder_mixed_formats", folder)
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    os.symlink(tmp_path / "nowhere", folder / "dangling.jpg")
    code, out = cli(lake, capsys, "upload", "--type", "raw", "--data", str(folder), "--provider", "inhouse",
                    "--dataset", "mixed", "--job-id", "mixed-1")  # fmt: skip
    assert code == 0
    assert "images: 4, other files: 1, skipped: 2" in out  # the counts a user sees
    assert "skipped .DS_Store: hidden file" in out and "skipped dangling.jpg: broken symbolic link" in out
    staged = json.loads((lake.pending_batch("mixed-1") / "_metadata.json").read_text())["staging_report"]
    assert (staged["images"], staged["other_files"], staged["skipped_count"]) == (4, 1, 2)
    assert staged["image_columns"] == {"image": "identified by content"}

    code, out = cli(lake, capsys, "process", "start", "--json")
    assert code == 0, out
    rows = {r["file_name"]: r for r in read_catalog()}
    assert set(rows) == {"notes.bin", "page.pcx", "photo.jpg", "scan.j2k", "scan.sgi"}
    formats = {name: rows[name]["image_format"] for name in rows if rows[name]["image"]}
    assert formats == {"page.pcx": "PCX", "photo.jpg": "JPEG", "scan.j2k": "JPEG2000", "scan.sgi": "SGI"}
    for name in formats:
        assert rows[name]["image_sha256"] == sha(folder / name)
        assert lake.resolve(rows[name]["image"]).read_bytes() == (folder / name).read_bytes()
    notes = rows["notes.bin"]  # not an image: a content-addressed file row, bytes intact
    assert (notes["image"], notes["file_sha256"], notes["file_size"]) == (None, sha(folder / "notes.bin"), 15)
    assert lake.resolve(notes["file"]).read_bytes() == (folder / "notes.bin").read_bytes()
    record = job_record(lake, "mixed-1")["staging_report"]  # the job record says what was skipped, and why
    assert {s["path"]: s["reason"] for s in record["skipped"]} == {
        ".DS_Store": "hidden file (not uploaded)",
        "dangling.jpg": "broken symbolic link",
    }


def test_identification_reads_headers_only_and_knows_every_decodable_format(tmp_path):
    for ext in (".j2k", ".jp2", ".sgi", ".pcx", ".psd", ".dds", ".tga", ".qoi", ".jpg", ".webp"):
        assert ext in IMAGE_EXTENSIONS
    assert ".h5" not in IMAGE_EXTENSIONS and ".pdf" not in IMAGE_EXTENSIONS  # stub / save-only formats
    big = tmp_path / "big.png"
    Image.new("1", (20000, 20000), 1).save(big)  # 400 Mpx: decoding it would take seconds and 400 MB
    (tmp_path / "data.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))  # Pillow has only a stub for HDF5
    (tmp_path / "header.tga.bin").write_bytes(bytes([0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 2, 0, 24, 0]))
    started = time.perf_counter()
    scan = scan_folder(tmp_path)
    assert time.perf_counter() - started < 1.0
    assert scan.images == ["big.png"]
    assert scan.others == ["data.h5", "header.tga.bin"]  # TGA has no signature: it needs its own extension
    assert identify_image(tmp_path / "data.h5") is None


# truncated_animation.gif and every multi-frame format ----------------------------------------------------------
def _animation(fmt: str, path: Path) -> Path:
    frames = [Image.frombytes("RGB", (64, 48), os.urandom(64 * 48 * 3)) for _ in range(3)]
    if fmt == "GIF":
        frames = [f.convert("P") for f in frames]
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:])
    return path


def test_truncated_animation_is_rejected_with_its_frame_and_the_rest_ingested(
    fidelity_dir, client, tmp_path, make_jpeg, read_catalog
):
    gif = fidelity_dir / "truncated_animation.gif"
    with Image.open(gif) as im:  # frame 0 alone loads: a frame-0 check accepts the file
        im.load()
    files = {"truncated_animation.gif": gif, "photo.jpg": make_jpeg(tmp_path / "photo.jpg")}
    for fmt, ext in (("GIF", "gif"), ("PNG", "png"), ("TIFF", "tif")):  # APNG, multi-page TIFF
        whole = _animation(fmt, tmp_path / f"whole.{ext}")
        cut = tmp_path / f"cut.{ext}"
        cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.9)])  # frame 3 cut off
        files[whole.name], files[cut.name] = whole, cut
    df = pd.DataFrame({"image": [str(p) for p in files.values()], "name": list(files)})
    client.upload_raw_data(df, "inhouse", "frames", image_columns=["image"])
    [result] = client.process_pending()
    assert result.status == "done", result.error
    reasons = {Path(r["source"]).name: r["reason"] for r in result.rejected}
    assert set(reasons) == {"truncated_animation.gif", "cut.gif", "cut.png", "cut.tif"}
    assert "frame 3 of 3" in reasons["truncated_animation.gif"] and "truncated" in reasons["truncated_animation.gif"]
    for name in ("cut.gif", "cut.png", "cut.tif"):
        assert "frame 3 of 3" in reasons[name], reasons[name]
    assert {r["name"] for r in read_catalog()} == {"photo.jpg", "whole.gif", "whole.png", "whole.tif"}


# text_that_looks_like_paths/ -----------------------------------------------------------------------------------
def test_only_the_image_column_is_resolved_and_text_stays_text(fidelity_dir, client, lake, read_catalog):
    source = pq.read_table(fidelity_dir / "text_that_looks_like_paths" / "data.parquet").to_pylist()
    _, job_id = client.upload_raw_data(str(fidelity_dir / "text_that_looks_like_paths" / "data.parquet"), "inhouse",
                                       "paths")  # fmt: skip
    report = client.last_staging_report
    assert list(report["image_columns"]) == ["image"]
    assert report["image_columns"]["image"].startswith("every value resolves")
    assert "repeats the values of image column 'image'" in report["text_columns"]["orig_name"]
    assert "URL" in report["text_columns"]["url"]
    [result] = client.process_pending()
    assert result.status == "done", result.error
    rows = sorted(read_catalog(), key=lambda r: r["orig_name"])
    for row, original in zip(rows, sorted(source, key=lambda r: r["orig_name"])):
        assert (row["orig_name"], row["url"], row["caption"]) == (original["orig_name"], original["url"],
                                                                  original["caption"])  # fmt: skip
        folder = fidelity_dir / "text_that_looks_like_paths"
        assert row["image_sha256"] == sha(folder / original["image"])
    assert "orig_name_sha256" not in rows[0] and "url_sha256" not in rows[0]
    assert job_record(lake, job_id)["staging_report"]["image_columns"] == report["image_columns"]


def test_columns_that_repeat_each_other_without_an_image_name_are_refused(client, tmp_path, make_jpeg):
    make_jpeg(tmp_path / "a.jpg")
    df = pd.DataFrame({"path_a": [str(tmp_path / "a.jpg")], "path_b": [str(tmp_path / "a.jpg")]})
    with pytest.raises(ValidationError, match=r"ambiguous; name it with image_columns"):
        client.upload_raw_data(df, "inhouse", "twins")
    client.upload_raw_data(df, "inhouse", "twins", image_columns=["path_a"])  # naming decides
    assert client.last_staging_report["image_columns"] == {"path_a": "named by the user"}


def test_a_url_column_is_text_and_naming_it_an_image_column_is_refused(client, tmp_path, make_jpeg):
    df = pd.DataFrame({"image_url": ["https://example.com/a.jpg", "s3://bucket/b.jpg"], "n": [1, 2]})
    client.upload_raw_data(df, "inhouse", "urls")
    assert client.last_staging_report["image_columns"] == {}
    with pytest.raises(ValidationError, match="is a URL; the lake does not fetch URLs"):
        client.upload_raw_data(df, "inhouse", "urls", image_columns=["image_url"])


# dictionary_image_paths/ ---------------------------------------------------------------------------------------
def test_dictionary_encoded_paths_are_resolved_like_plain_strings(fidelity_dir, client, read_catalog, monkeypatch):
    folder = fidelity_dir / "dictionary_image_paths"
    assert pa.types.is_dictionary(pq.read_schema(folder / "data.parquet").field("image").type)
    client.upload_raw_data(str(folder / "data.parquet"), "inhouse", "categories")
    assert list(client.last_staging_report["image_columns"]) == ["image"]
    [result] = client.process_pending()
    assert result.status == "done", result.error
    rows = {r["caption"]: r for r in read_catalog()}
    assert {c: rows[c]["image_sha256"] for c in rows} == {
        "one": sha(folder / "imgs/p0.jpg"),
        "two": sha(folder / "imgs/p1.jpg"),
        "three": sha(folder / "imgs/p2.jpg"),
    }
    pdf = pd.read_parquet(folder / "data.parquet")  # the pandas `category` column of the same data
    assert isinstance(pdf["image"].dtype, pd.CategoricalDtype)
    monkeypatch.chdir(folder)  # a DataFrame's relative paths resolve against the working directory
    client.upload_raw_data(pdf, "inhouse", "categories_df")
    assert list(client.last_staging_report["image_columns"]) == ["image"]


# Windows paths -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("named", [False, True])
def test_relative_windows_paths_resolve_like_forward_slashes(client, tmp_path, read_catalog, named):
    src = tmp_path / "win"
    for i in range(2):
        (src / "imgs").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20 + i, 10), (i, 2, 3)).save(src / "imgs" / f"w{i}.png")
    pq.write_table(pa.table({"picture": ["imgs\\w0.png", "imgs\\w1.png"], "k": [0, 1]}), src / "data.parquet")
    client.upload_raw_data(str(src / "data.parquet"), "inhouse", "win", image_columns=["picture"] if named else None)
    assert list(client.last_staging_report["image_columns"]) == ["picture"]
    [result] = client.process_pending()
    assert result.status == "done", result.error
    rows = {r["k"]: r for r in read_catalog()}
    assert [rows[i]["picture_sha256"] for i in (0, 1)] == [sha(src / "imgs" / f"w{i}.png") for i in (0, 1)]
    assert [rows[i]["picture_width"] for i in (0, 1)] == [20, 21]


# the whole image corpus ----------------------------------------------------------------------------------------
def _check_corpus_result(corpus_dir, result, rows_by_name, not_images=()):
    """Valid files ingested with EXPECTED.tsv's facts, invalid ones rejected with their reason."""
    assert result.status == "done", result.error
    reasons = {r["name"]: r["reason"] for r in result.rejected}
    for file, expect, fmt, width, height, mode, says in expected(corpus_dir):
        if file in not_images:
            continue
        if expect == "ingest":
            row = rows_by_name[file]
            assert (row["image_format"], row["image_width"], row["image_height"], row["image_mode"]) == (
                fmt, width, height, mode), file  # fmt: skip
            assert row["image_sha256"] == sha(corpus_dir / file)
        else:
            assert file not in rows_by_name and file in reasons, file
            kind, _, detail = says.partition(": ")
            if kind == "DecompressionBombError":
                assert "decompression bomb" in reasons[file] and "pixels" in reasons[file], reasons[file]
            elif kind == "UnidentifiedImageError":
                assert "cannot identify" in reasons[file], reasons[file]
            else:
                assert detail.split(" (")[0] in reasons[file], (file, reasons[file])


def test_the_corpus_through_a_folder_upload(corpus_dir, client, lake, tmp_path, read_catalog):
    folder = tmp_path / "corpus"
    shutil.copytree(corpus_dir, folder)
    (folder / "EXPECTED.tsv").unlink()
    client.upload_raw_data(str(folder), "inhouse", "corpus_folder")
    report = client.last_staging_report
    n_files = sum(1 for p in folder.rglob("*") if p.is_file())
    # pngtest_bad.png.bin: Pillow cannot identify it and .bin names no image format, so it is another file.
    assert (report["images"], report["other_files"], report["skipped_count"]) == (n_files - 1, 1, 0)
    started = time.perf_counter()
    [result] = client.process_pending(max_reject_ratio=0.9)
    assert time.perf_counter() - started < 30  # nothing hangs
    rows = {r["file_name"]: r for r in read_catalog()}
    for r in result.rejected:
        r["name"] = r["source"]  # the path inside the uploaded folder
    assert len(rows) + len(result.rejected) == n_files  # every file is a catalog row or a rejected row
    _check_corpus_result(corpus_dir, result, rows, not_images={"invalid/pngtest_bad.png.bin"})
    bad = rows["invalid/pngtest_bad.png.bin"]
    assert (bad["image"], bad["file_sha256"]) == (None, sha(corpus_dir / "invalid/pngtest_bad.png.bin"))


def test_the_corpus_through_a_parquet_upload(corpus_dir, client, tmp_path, read_catalog):
    files = [row[0] for row in expected(corpus_dir)]
    data = tmp_path / "sub" / "data.parquet"
    data.parent.mkdir()
    rel = [os.path.relpath(corpus_dir / f, data.parent) for f in files]  # relative to the Parquet file
    pq.write_table(pa.table({"image": rel, "name": files}), data)
    client.upload_raw_data(str(data), "inhouse", "corpus_parquet")
    assert list(client.last_staging_report["image_columns"]) == ["image"]  # named like an image, resolves
    [result] = client.process_pending(max_reject_ratio=0.9)
    names = dict(zip(rel, files))
    for r in result.rejected:
        r["name"] = names[r["source"]]
    rows = {r["name"]: r for r in read_catalog()}
    assert len(rows) + len(result.rejected) == len(files)
    _check_corpus_result(corpus_dir, result, rows, not_images={"invalid/pngtest_bad.png.bin"})
    assert "cannot identify" in {r["name"]: r["reason"] for r in result.rejected}["invalid/pngtest_bad.png.bin"]
    assert WHOLE_FILE_REJECTS.keys() <= {r["name"] for r in result.rejected}


# one pixel limit -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def big_pngs(tmp_path_factory) -> dict[str, Path]:
    """A 95 Mpx and a 190 Mpx flat PNG (1-bit, so about 30-45 KB each), made once per session."""
    folder = tmp_path_factory.mktemp("big_pngs")
    paths = {}
    for name, size in (("p95", (10_000, 9_500)), ("p190", (19_000, 10_000))):
        paths[name] = folder / f"{name}.png"
        Image.new("1", size, 1).save(paths[name])
    return paths


def test_one_pixel_limit_raises_and_lowers_ours_and_pillows_guard(big_pngs, client, lake, monkeypatch, make_jpeg,
                                                                  tmp_path, read_catalog):  # fmt: skip
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)  # Pillow's default guard, refusing > 178,956,970
    monkeypatch.delenv("DATALAKE_MAX_IMAGE_PIXELS", raising=False)
    df = pd.DataFrame({"image": [str(big_pngs["p95"]), str(big_pngs["p190"]), str(make_jpeg(tmp_path / "s.jpg"))]})
    client.upload_raw_data(df, "inhouse", "scans", image_columns=["image"])
    [result] = client.process_pending(max_reject_ratio=0.9)  # the default limit: both refused, naming it
    assert result.status == "done" and result.rows_added == 1
    assert len(result.rejected) == 2
    for r in result.rejected:
        assert "decompression bomb" in r["reason"] and "limit of 89,478,485 pixels" in r["reason"], r["reason"]

    client.upload_raw_data(df, "inhouse", "scans", image_columns=["image"])
    [result] = client.process_pending(max_pixels=200_000_000)  # raised explicitly: both ingest
    assert (result.status, result.rows_added, result.rejected) == ("done", 2, []), result.error
    sizes = {(r["image_width"], r["image_height"]) for r in read_catalog()}
    assert {(10_000, 9_500), (19_000, 10_000)} <= sizes

    monkeypatch.setenv("DATALAKE_MAX_IMAGE_PIXELS", "100000000")  # the environment: 95 Mpx passes, 190 does not
    df2 = pd.DataFrame({"image": [str(big_pngs["p95"]), str(big_pngs["p190"])]})
    client.upload_raw_data(df2, "inhouse", "scans_env", image_columns=["image"])
    [result] = client.process_pending()
    assert result.rows_added == 1
    [rejected] = result.rejected
    assert rejected["source"].endswith("p190.png") and "limit of 100,000,000 pixels" in rejected["reason"]

    monkeypatch.setenv("DATALAKE_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValidationError, match="DATALAKE_MAX_IMAGE_PIXELS must be a positive whole number"):
        client.process_pending()


def test_known_content_still_meets_this_runs_image_checks(client, lake, tmp_path, make_jpeg):
    """A dedup hit skips the decode, not the rules: the pixel limit applies, and bytes first stored as a plain
    file are inspected before they can become an image row."""
    folder = tmp_path / "drop"
    photo = make_jpeg(folder / "photo.jpg", size=(60, 50))
    (folder / "blob.bin").write_bytes(b"\x00\x01 not an image")
    client.upload_raw_data(str(folder), "inhouse", "known")
    [first] = client.process_pending()
    assert first.rows_added == 2
    df = pd.DataFrame({"image": [str(photo), str(folder / "blob.bin")]})
    client.upload_raw_data(df, "inhouse", "known_again", image_columns=["image"])
    [again] = client.process_pending(max_pixels=2_000, max_reject_ratio=1.0)
    reasons = {Path(r["source"]).name: r["reason"] for r in again.rejected}
    assert "limit of 2,000 pixels" in reasons["photo.jpg"]
    assert "cannot identify" in reasons["blob.bin"]


def test_the_pixel_limit_of_every_frame_is_checked_before_decoding(tmp_path):
    from datalake_pipelines.core.ingest.images import ImageRejected, inspect_image

    small, large = Image.new("L", (10, 10)), Image.new("L", (3000, 3000))
    buf = io.BytesIO()
    small.save(buf, "TIFF", save_all=True, append_images=[large])  # page 2 is 9 Mpx
    with pytest.raises(ImageRejected, match=r"frame 2: 3000x3000 = 9,000,000 pixels exceeds the limit of 1,000,000"):
        inspect_image(buf.getvalue(), max_pixels=1_000_000)
    assert inspect_image(buf.getvalue(), max_pixels=10_000_000).width == 10


# hand drops: NFC identity ----------------------------------------------------------------------------------------
def test_a_hand_drop_with_nfd_names_then_nfc_names_adds_nothing_the_second_time(client, lake, make_jpeg, read_catalog):
    names = ["café.jpg", "Ångström/résumé.jpg", "notes-é.txt"]
    content = {}
    for form, job in (("NFD", "drop-nfd"), ("NFC", "drop-nfc")):
        drop = lake.pending / job
        for i, name in enumerate(names):
            path = drop / unicodedata.normalize(form, name)
            if name.endswith(".jpg"):
                make_jpeg(path, color=(i * 40, 10, 10))
            else:
                path.write_text("plain notes", encoding="utf-8")
            content.setdefault(name, path.read_bytes())
            assert path.read_bytes() == content[name]
        (drop / ".hidden").write_text("x")
        (drop / "_metadata.json").write_text(json.dumps({"provider": "inhouse", "dataset": "drops"}))
        [result] = client.process_pending()
        assert result.status == "done", result.error
        if form == "NFD":
            assert result.rows_added == 3
            skipped = job_record(lake, job)["staging_report"]["skipped"]
            assert skipped == [{"path": ".hidden", "reason": "hidden file (not uploaded)"}]
        else:
            assert (result.rows_added, result.rows_duplicate) == (0, 3)
    rows = read_catalog()
    assert sorted(r["file_name"] for r in rows) == sorted(unicodedata.normalize("NFC", n) for n in names)
    assert {r["file_name"] for r in rows if r["file"]} == {unicodedata.normalize("NFC", "notes-é.txt")}


# the same on an S3 lake, hand drops through the real staging sensor and ingest job ---------------------------------
def test_s3_hand_drops_through_the_sensor_account_for_every_file_and_use_nfc_names(
    fidelity_dir, s3_lake, monkeypatch, tmp_path
):
    from dagster import instance_for_test

    from datalake_pipelines.core.storage.backends import S3Storage
    from datalake_pipelines.defs.ingest import sensors
    from datalake_pipelines_tests.support.s3_pipeline import run, tick

    monkeypatch.setattr(sensors, "QUIET_SECONDS", 0.0)  # the drops below are complete when the sensor ticks
    storage = S3Storage(s3_lake)
    source = fidelity_dir / "folder_mixed_formats"
    with instance_for_test() as instance:
        cursor = None
        for form, job in (("NFD", "s3-drop-nfd"), ("NFC", "s3-drop-nfc")):
            for path in sorted(source.iterdir()):
                name = unicodedata.normalize(form, f"déjà/{path.name}")
                storage.write_bytes(f"staging/pending/{job}/{name}", path.read_bytes())
            storage.write_bytes(f"staging/pending/{job}/.hidden", b"x")
            doc = {"provider": "inhouse", "dataset": "s3_drops"}
            storage.write_bytes(f"staging/pending/{job}/_metadata.json", json.dumps(doc).encode())
            result = tick(instance, s3_lake, cursor)
            cursor = result.cursor
            assert [r.run_key for r in result.run_requests] == [job]
            outcome = run(instance, s3_lake, result.run_requests[0], result)
            assert outcome.success
            mat = outcome.asset_materializations_for_node("catalog_partition")[0].metadata
            record = json.loads(storage.read_bytes(f"logs/jobs/{job}.json"))
            assert record["staging_report"]["skipped"] == [{"path": ".hidden", "reason": "hidden file (not uploaded)"}]
            assert mat["files_skipped"].value == 1
            if form == "NFD":
                assert (mat["rows_added"].value, mat["rows_rejected"].value) == (5, 0)
                assert (record["staging_report"]["images"], record["staging_report"]["other_files"]) == (4, 1)
            else:
                assert (mat["rows_added"].value, mat["rows_duplicate"].value) == (0, 5)  # the same files again
        fs, root = storage.arrow()
        table = pq.read_table(f"{root}/catalog/provider=inhouse/dataset=s3_drops", filesystem=fs)
    rows = {r["file_name"]: r for r in table.to_pylist()}
    assert set(rows) == {unicodedata.normalize("NFC", f"déjà/{p.name}") for p in source.iterdir()}
    formats = {"notes.bin": None, "page.pcx": "PCX", "photo.jpg": "JPEG", "scan.j2k": "JPEG2000", "scan.sgi": "SGI"}
    assert {n.split("/")[1]: r["image_format"] for n, r in rows.items()} == formats
    notes = rows[unicodedata.normalize("NFC", "déjà/notes.bin")]
    assert notes["file_sha256"] == sha(source / "notes.bin") and notes["file_size"] == 15


def test_a_folder_upload_has_one_image_column(client, tmp_path, make_jpeg):
    make_jpeg(tmp_path / "f" / "a.jpg")
    for wrong in ([], ["picture"]):
        with pytest.raises(ValidationError, match="its image column is 'image'"):
            client.upload_raw_data(str(tmp_path / "f"), "inhouse", "one_col", image_columns=wrong)
    (tmp_path / "empty" / ".git").mkdir(parents=True)
    (tmp_path / "empty" / ".git" / "HEAD").write_text("ref")
    with pytest.raises(ValidationError, match=r"holds no files to upload \(skipped: .git/ \(hidden folder"):
        client.upload_raw_data(str(tmp_path / "empty"), "inhouse", "one_col")

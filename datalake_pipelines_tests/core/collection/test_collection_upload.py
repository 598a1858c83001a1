"""Uploading collections: one catalog row per unit, strict/lenient, re-runs, retries, chunked copies, CLI."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tracemalloc
from pathlib import Path

import pytest

from datalake_pipelines.cli.main import main
from datalake_pipelines.client_collections import CollectionClientMixin
from datalake_pipelines.core.collection import data_units
from datalake_pipelines.core.collection.file_copy import CHUNK_SIZE, CHUNKED_THRESHOLD, RetryPolicy, copy_file
from datalake_pipelines.core.collection.upload import UploadError, upload_collection
from datalake_pipelines.core.ingest.hash_index import HashIndex
from datalake_pipelines.core.ingest.processing import list_pending, process_pending
from datalake_pipelines.core.lake.layout import LakeLayout

NO_SLEEP = RetryPolicy(attempts=3, base_delay=0.0, sleep=lambda s: None)


@pytest.fixture
def folder(tmp_path, make_jpeg) -> Path:
    """Five complete units (one Korean, one with spaces) plus one unit of every bad kind."""
    folder = tmp_path / "in"
    stems = ["sample_001", "sample_002", "sample_003", "영수증 004", "with spaces 005"]
    for i, stem in enumerate(stems):
        make_jpeg(folder / f"{stem}.jpg", size=(24, 16))
        (folder / f"{stem}.json").write_text(
            json.dumps({"label": i, "text": "가나다"}, ensure_ascii=False), encoding="utf-8"
        )
        (folder / f"{stem}.xml").write_text(f"<meta id='{i}'/>", encoding="utf-8")
    make_jpeg(folder / "missing_json.jpg")
    make_jpeg(folder / "dup.jpg")
    make_jpeg(folder / "dup.png")
    (folder / "dup.json").write_text("{}")
    make_jpeg(folder / "bad_json.jpg")
    (folder / "bad_json.json").write_text("{not json")
    (folder / "stray.txt").write_text("nobody asked")
    return folder


def pending_count(lake: LakeLayout) -> int:
    return len(list_pending(lake))


def test_lenient_upload_one_row_per_unit_and_rerun_adds_nothing(lake, collection, folder, read_catalog):
    report = upload_collection(lake, folder, collection, batch_size=2, progress=False, num_proc=2)
    u = report["upload"]
    assert (u["status"], u["uploaded"], u["not_uploaded"], u["failed"], u["skipped"]) == ("done", 5, 3, 0, 0)
    assert len(u["batches"]) == 3 and pending_count(lake) == 3
    assert Path(report["report_path"]).is_file()
    assert json.loads(Path(report["report_path"]).read_text())["upload"]["uploaded"] == 5
    statuses = {x["unit"]: x["upload"] for x in report["units"]}
    assert statuses["dup"] == statuses["bad_json"] == statuses["missing_json"] == "not_uploaded"
    assert not (lake.staging / ".uploads").exists() or not any((lake.staging / ".uploads").iterdir())

    results = process_pending(lake)
    assert [r.status for r in results] == ["done"] * 3
    rows = read_catalog()
    assert len(rows) == 5
    row = next(r for r in rows if r["origin_file_stem"] == "영수증 004")
    assert json.loads(row["annotation"]) == {"label": 3, "text": "가나다"}
    assert row["image_format"] == "JPEG" and row["metadata"].endswith(".xml") and row["metadata_size"] > 0
    assert row["image_sha256"] == hashlib.sha256((folder / "영수증 004.jpg").read_bytes()).hexdigest()
    assert (row["variant"], row["task"], row["origin_file_extension"]) == ("docs", "raw", ".jpg")
    assert lake.resolve(row["image"]).is_file() and lake.resolve(row["metadata"]).is_file()
    assets = HashIndex(lake.hash_index).count()
    assert assets == 10

    again = upload_collection(lake, folder, collection, batch_size=2, progress=False)
    assert (again["upload"]["skipped"], again["upload"]["uploaded"], again["upload"]["batches"]) == (5, 0, [])
    assert {x["upload"] for x in again["units"] if x["status"] == "complete"} == {"skipped"}
    assert pending_count(lake) == 0 and process_pending(lake) == []
    assert len(read_catalog()) == 5 and HashIndex(lake.hash_index).count() == assets


def test_strict_refuses_and_stages_nothing(lake, collection, folder, tmp_path):
    target = tmp_path / "report.json"
    with pytest.raises(UploadError, match="strict mode: upload refused, 3 units have problems and 1 files") as err:
        upload_collection(lake, folder, collection, strict=True, progress=False, report_path=target)
    assert pending_count(lake) == 0
    assert err.value.report["upload"]["status"] == "refused"
    assert json.loads(target.read_text())["upload"]["refused"] == 8


def test_strict_accepts_a_clean_folder(lake, collection, tmp_path, make_jpeg):
    folder = tmp_path / "clean"
    for i in range(3):
        make_jpeg(folder / f"u{i}.png")
        (folder / f"u{i}.json").write_text("[1, 2]")
    report = upload_collection(lake, folder, collection, strict=True, progress=False)
    assert report["upload"]["uploaded"] == 3 and report["upload"]["mode"] == "strict"
    process_pending(lake)


def flaky(failures: int, err: int = errno.EIO):
    """A ``copy_file`` that fails ``failures`` times (per source) with ``err``, then copies for real."""
    calls: dict[str, int] = {}

    def copy(source, dest, progress=None):
        calls[source] = calls.get(source, 0) + 1
        if calls[source] <= failures:
            raise OSError(err, os.strerror(err), source)
        return copy_file(source, dest, progress)

    return copy, calls


def test_transient_errors_are_retried_with_exponential_backoff(lake, collection, folder, monkeypatch):
    copy, calls = flaky(2)
    monkeypatch.setattr(data_units, "copy_file", copy)
    delays: list[float] = []
    policy = RetryPolicy(attempts=3, base_delay=0.1, max_delay=10, sleep=delays.append)
    report = upload_collection(lake, folder, collection, progress=False, num_proc=1, policy=policy)
    assert report["upload"]["uploaded"] == 5
    assert set(calls.values()) == {3}  # two failures, then success, for every copied file
    assert len(delays) == 2 * 10  # 5 units x 2 files (image, metadata) x 2 retries
    first, second = delays[0::2], delays[1::2]
    assert all(0.05 <= d <= 0.15 for d in first) and all(0.1 <= d <= 0.3 for d in second)
    assert len(set(delays)) > 2  # jitter
    assert {r.status for r in process_pending(lake)} == {"done"}


def test_clear_error_after_the_last_try(lake, collection, folder, monkeypatch):
    copy, calls = flaky(99, errno.EAGAIN)
    monkeypatch.setattr(data_units, "copy_file", copy)
    report = upload_collection(lake, folder, collection, progress=False, policy=NO_SLEEP)
    assert report["upload"]["failed"] == 5 and report["upload"]["uploaded"] == 0
    unit = next(x for x in report["units"] if x["unit"] == "sample_001")
    problem = unit["problems"][-1]
    assert problem["kind"] == "upload_failed" and "gave up after 3 attempts" in problem["detail"]
    assert "temporarily unavailable" in problem["detail"].lower()


def test_permission_denied_at_upload_is_not_retried(lake, collection, folder, monkeypatch):
    # Tests may run as root, where chmod 000 does not block reads: inject EACCES at the copy boundary.
    real = copy_file
    calls: list[str] = []

    def copy(source, dest, progress=None):
        calls.append(source)
        if source.endswith("sample_002.jpg"):
            raise PermissionError(errno.EACCES, "Permission denied", source)
        return real(source, dest, progress)

    monkeypatch.setattr(data_units, "copy_file", copy)
    report = upload_collection(lake, folder, collection, progress=False, policy=NO_SLEEP)
    assert report["upload"]["failed"] == 1 and report["upload"]["uploaded"] == 4
    assert sum(c.endswith("sample_002.jpg") for c in calls) == 1
    unit = next(x for x in report["units"] if x["unit"] == "sample_002")
    assert unit["upload"] == "failed" and unit["problems"][-1]["kind"] == "unreadable"


def test_file_disappearing_mid_upload(lake, collection, folder, monkeypatch, read_catalog):
    real = copy_file

    def copy(source, dest, progress=None):
        if source.endswith("sample_003.xml"):
            os.unlink(source)
        return real(source, dest, progress)

    monkeypatch.setattr(data_units, "copy_file", copy)
    report = upload_collection(lake, folder, collection, progress=False, policy=NO_SLEEP)
    unit = next(x for x in report["units"] if x["unit"] == "sample_003")
    assert unit["upload"] == "failed" and unit["problems"][-1]["kind"] == "vanished"
    assert report["upload"]["uploaded"] == 4
    process_pending(lake)
    assert sorted(r["origin_file_stem"] for r in read_catalog()) == [
        "sample_001",
        "sample_002",
        "with spaces 005",
        "영수증 004",
    ]


def test_failed_batch_keeps_earlier_batches_and_rerun_completes(lake, collection, folder, monkeypatch, read_catalog):
    real_stage = data_units._LinkingStager.stage
    calls = [0]

    def stage(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_stage(self, *args, **kwargs)

    monkeypatch.setattr(data_units._LinkingStager, "stage", stage)
    with pytest.raises(UploadError, match="No space left on device") as err:
        upload_collection(lake, folder, collection, batch_size=2, progress=False)
    u = err.value.report["upload"]
    assert (u["status"], u["uploaded"], len(u["batches"])) == ("failed", 2, 1)
    assert pending_count(lake) == 1
    monkeypatch.setattr(data_units._LinkingStager, "stage", real_stage)
    process_pending(lake)
    again = upload_collection(lake, folder, collection, batch_size=2, progress=False)
    assert (again["upload"]["skipped"], again["upload"]["uploaded"]) == (2, 3)
    process_pending(lake)
    assert len(read_catalog()) == 5


def test_chunked_copy_of_a_large_file_keeps_memory_bounded(tmp_path):
    source = tmp_path / "big.bin"
    block = os.urandom(1024 * 1024)
    with open(source, "wb") as fh:
        for _ in range(CHUNKED_THRESHOLD // len(block) + 8):  # 58 MiB
            fh.write(block)
    chunks: list[int] = []
    tracemalloc.start()
    try:
        size, sha = copy_file(str(source), str(tmp_path / "copy.bin"), chunks.append)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == source.stat().st_size and len(chunks) == -(-size // CHUNK_SIZE)
    assert sha == hashlib.sha256(source.read_bytes()).hexdigest()
    assert peak < 2 * CHUNK_SIZE, f"peak {peak / 2**20:.1f} MiB"


class Client(CollectionClientMixin):
    def __init__(self, layout: LakeLayout):
        self.layout, self.num_proc, self.batch_size, self.progress = layout, 2, 10, False


def test_mixin_in_the_reference_shape(lake, collection, folder, read_catalog):
    from datalake_pipelines.core.collection.organize import organize

    client = Client(lake)
    assert client.list_data_collection()[0]["name"] == "docs"
    assert client.get_data_collection(collection.id)["id"] == collection.id
    unit = next(u for u in organize(folder, collection).units if u.key == "sample_001")
    uploaded = client.upload_data_file(unit.organized_file(), collection.id)
    assert set(uploaded["files"]) == {"image", "metadata"} and "annotation" in uploaded["texts"]
    [data_unit] = client.create_data_units([uploaded])
    assert data_unit["meta"]["batch_id"] == data_unit["job_id"]
    process_pending(lake)
    [row] = read_catalog()
    assert row["row_hash"] == data_unit["id"] and row["batch_id"] == data_unit["job_id"]
    report = client.upload_collection(folder, "docs")
    assert (report["upload"]["skipped"], report["upload"]["uploaded"]) == (1, 4)


def test_cli_upload_prints_table_and_writes_report(lake, collection, folder, tmp_path, capsys):
    base = ["--base-path", str(lake.base)]
    assert main(base + ["collection", "upload", str(folder), "--collection", "docs", "--strict"]) == 1
    captured = capsys.readouterr()
    assert "duplicate[image]" in captured.out and "upload refused" in captured.err
    target = tmp_path / "r.json"
    assert (
        main(
            base
            + [
                "collection",
                "upload",
                str(folder),
                "--collection",
                "docs",
                "--batch-size",
                "2",
                "--report",
                str(target),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "5 units staged in 3 batches" in out and "invalid_json[annotation]" in out
    assert json.loads(target.read_text())["upload"]["uploaded"] == 5
    assert main(base + ["--json", "collection", "upload", str(folder), "--collection", "docs"]) == 0
    assert json.loads(capsys.readouterr().out)["upload"]["uploaded"] == 5  # not processed yet: staged again


def test_a_lake_inside_the_uploaded_folder_is_not_walked(tmp_path, make_jpeg):
    from datalake_pipelines.core.collection.config import create_collection

    lake = LakeLayout(tmp_path / "lake")  # the lake lives inside the folder being uploaded
    coll = create_collection(
        lake, "docs", "inhouse", "docs", [{"name": "image", "is_required": True, "extensions": [".jpg"]}]
    )
    make_jpeg(tmp_path / "a.jpg")
    report = upload_collection(lake, tmp_path, coll, progress=False, policy=NO_SLEEP)
    assert not any("lake/" in f for f in report["unmatched_files"]), report["unmatched_files"]


def test_identical_units_in_one_batch_are_two_rows_with_the_ids_processing_gives(
    lake, collection, folder, read_catalog
):
    from datalake_pipelines.core.collection.organize import organize

    client = Client(lake)
    unit = next(u for u in organize(folder, collection).units if u.key == "sample_001")
    twice = [client.upload_data_file(unit.organized_file(), collection.id) for _ in range(2)]
    data_units = client.create_data_units(twice)
    assert len({d["id"] for d in data_units}) == 2
    process_pending(lake)
    assert sorted(r["row_hash"] for r in read_catalog()) == sorted(d["id"] for d in data_units)


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_cli_strict_refusal_says_why_once_and_fills_every_refused_row(lake, collection, folder, capsys, json_flag):
    base = ["--base-path", str(lake.base), *json_flag]
    assert main(base + ["collection", "upload", str(folder), "--collection", "docs", "--strict"]) == 1
    out, err = capsys.readouterr()
    why = "strict mode: upload refused, 3 units have problems and 1 files match no unit"
    assert err.count(why) == 1 and err.startswith("error: ")
    if json_flag:
        assert json.loads(out)["upload"]["error"].startswith(why)  # the report keeps it, as data
        return
    assert why not in out
    refused = [line for line in out.splitlines() if "  refused  " in line or line.rstrip().endswith("refused")]
    assert len(refused) == 8  # every unit, the five clean ones too
    for line in refused:
        assert line.split("refused", 1)[1].strip(), f"a refused row without a reason: {line!r}"
    clean = next(line for line in refused if line.startswith("sample_001"))
    assert "strict mode" in clean  # why a unit without a problem of its own was not staged

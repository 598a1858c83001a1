"""Organizing folders into data units: grouping modes, meta, and every kind of bad input."""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path

import pytest

from datalake_pipelines.core.collection import organize as organize_mod
from datalake_pipelines.core.collection.config import CollectionError, create_collection
from datalake_pipelines.core.collection.organize import organize
from datalake_pipelines.core.collection.units import format_table

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def make_unit(make_jpeg):
    def make(
        folder: Path,
        stem: str,
        image: bool = True,
        annotation: str | None = '{"label": "cat"}',
        xml: bool = True,
        sub: str = "",
    ) -> None:
        base = folder / sub if sub else folder
        base.mkdir(parents=True, exist_ok=True)
        if image:
            make_jpeg(base / f"{stem}.jpg", size=(16, 12))
        if annotation is not None:
            (base / f"{stem}.json").write_text(annotation, encoding="utf-8")
        if xml:
            (base / f"{stem}.xml").write_text(f"<meta><stem>{stem}</stem></meta>", encoding="utf-8")

    return make


def by_key(organized) -> dict:
    return {u.key: u for u in organized.units}


def kinds(unit) -> list[str]:
    return [p["kind"] for p in unit.problems]


def test_group_by_stem_builds_complete_units_with_meta(tmp_path, collection, make_unit):
    folder = tmp_path / "in"
    for i in range(3):
        make_unit(folder, f"sample_{i:03d}", xml=i != 2)
    organized = organize(folder, collection)
    assert [u.key for u in organized.units] == ["sample_000", "sample_001", "sample_002"]
    assert all(u.complete for u in organized.units)
    unit = organized.units[0]
    assert list(unit.files) == ["image", "annotation", "metadata"]
    assert json.loads(unit.texts["annotation"]) == {"label": "cat"}
    meta = unit.meta
    assert meta["origin_file_stem"] == "sample_000"
    assert meta["origin_file_extension"] == ".jpg"
    assert meta["file_size"] == sum(os.path.getsize(folder / f"sample_000{e}") for e in (".jpg", ".json", ".xml"))
    assert meta["created_at"].endswith("+00:00") and meta["batch_id"] is None
    assert "metadata" not in organized.units[2].files
    org = unit.organized_file()
    assert org["files"]["image"] == folder / "sample_000.jpg" and org["meta"] == meta


def test_folder_with_no_matching_files(tmp_path, collection):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "readme.txt").write_text("hello")
    (folder / ".hidden.jpg").write_bytes(b"x")
    with pytest.raises(CollectionError, match="no file matches collection 'docs'.*1 files looked at"):
        organize(folder, collection)
    with pytest.raises(CollectionError, match="is not a folder"):
        organize(tmp_path / "missing", collection)


def test_missing_required_duplicate_and_unmatched(tmp_path, collection, make_unit, make_jpeg):
    folder = tmp_path / "in"
    make_unit(folder, "ok")
    make_unit(folder, "no_json", annotation=None)
    make_unit(folder, "two_images")
    make_jpeg(folder / "two_images.png", size=(8, 8))
    make_unit(folder, "extra")
    (folder / "extra.txt").write_text("nobody asked for me")
    (folder / "stray.csv").write_text("a,b")
    organized = organize(folder, collection)
    units = by_key(organized)
    assert units["ok"].complete and not units["ok"].problems
    assert kinds(units["no_json"]) == ["missing_required"] and units["no_json"].problems[0]["spec"] == "annotation"
    dup = units["two_images"].problems[0]
    assert dup["kind"] == "duplicate" and sorted(dup["files"]) == ["two_images.jpg", "two_images.png"]
    assert not units["two_images"].complete
    assert kinds(units["extra"]) == ["unmatched"] and units["extra"].complete  # a warning, the unit is fine
    assert organized.unmatched_files == ["stray.csv"]
    report = organized.report()
    assert report["summary"] == {
        "files": 14,
        "units": 4,
        "complete": 2,
        "incomplete": 2,
        "unmatched_files": 1,
        "problems": {"missing_required": 1, "duplicate": 1, "unmatched": 1},
    }
    json.dumps(report)
    table = format_table(report)
    assert "duplicate[image]" in table and "stray.csv" in table and "4 units in 14 files" in table


def test_invalid_json_is_rejected_per_unit_with_parse_error(tmp_path, collection, make_unit):
    folder = tmp_path / "in"
    make_unit(folder, "good")
    make_unit(folder, "broken", annotation='{"label": "cat",}')
    make_unit(folder, "latin1", annotation=None)
    (folder / "latin1.json").write_bytes('{"a": "\xe9"}'.encode("latin-1"))
    units = by_key(organize(folder, collection))
    assert units["good"].complete
    problem = units["broken"].problems[0]
    assert problem["kind"] == "invalid_json" and "line 1 column 17" in problem["detail"]
    assert "not UTF-8" in units["latin1"].problems[0]["detail"]


def test_unreadable_files(tmp_path, collection, make_unit):
    folder = tmp_path / "in"
    make_unit(folder, "ok")
    make_unit(folder, "locked_json")
    make_unit(folder, "locked_image")
    if IS_ROOT:
        # chmod 000 does not stop root, so simulate entries that cannot be opened as data: a FIFO in place
        # of the annotation (reading it would block) and a dangling symlink in place of the image.
        (folder / "locked_json.json").unlink()
        os.mkfifo(folder / "locked_json.json")
        (folder / "locked_image.jpg").unlink()
        (folder / "locked_image.jpg").symlink_to(folder / "gone.jpg")
    else:
        os.chmod(folder / "locked_json.json", 0)
        os.chmod(folder / "locked_image.jpg", 0)
    try:
        units = by_key(organize(folder, collection))
    finally:
        for name in ("locked_json.json", "locked_image.jpg"):
            if not (folder / name).is_symlink():
                os.chmod(folder / name, 0o644)
    assert units["ok"].complete
    for key, spec in (("locked_json", "annotation"), ("locked_image", "image")):
        assert kinds(units[key]) == ["unreadable"], units[key].problems
        assert units[key].problems[0]["spec"] == spec and not units[key].complete
    if not IS_ROOT:
        assert "ermission denied" in units["locked_json"].problems[0]["detail"]


def test_file_disappearing_before_it_is_read(tmp_path, collection, make_unit, monkeypatch):
    folder = tmp_path / "in"
    make_unit(folder, "stays")
    make_unit(folder, "goes")
    walk = organize_mod.walk_files

    def walk_then_delete(path, *skip):
        found = walk(path, *skip)
        (folder / "goes.json").unlink()
        (folder / "goes.jpg").unlink()
        return found

    monkeypatch.setattr(organize_mod, "walk_files", walk_then_delete)
    units = by_key(organize(folder, collection))
    assert units["stays"].complete
    assert sorted(kinds(units["goes"])) == ["vanished", "vanished"]


def test_names_with_spaces_and_korean(tmp_path, collection, make_unit):
    folder = tmp_path / "입력 폴더"
    make_unit(folder, "영수증 001")
    make_unit(folder, "receipt with spaces")
    # macOS writes Hangul decomposed (NFD): it must still group with the composed (NFC) image name.
    make_unit(folder, "영수증 002", annotation=None)
    (folder / unicodedata.normalize("NFD", "영수증 002.json")).write_text("{}", encoding="utf-8")
    organized = organize(folder, collection)
    units = by_key(organized)
    assert set(units) == {"영수증 001", "영수증 002", "receipt with spaces"}
    assert all(u.complete for u in organized.units)
    assert units["영수증 001"].meta["origin_file_stem"] == "영수증 001"
    json.dumps(organized.report(), ensure_ascii=False)


def test_group_by_folder(tmp_path, collection, make_jpeg):
    folder = tmp_path / "in"
    for stem in ("a", "b"):
        make_jpeg(folder / "image" / f"{stem}.jpg")
        (folder / "annotation").mkdir(exist_ok=True)
        (folder / "annotation" / f"{stem}.json").write_text("[]")
    (folder / "image" / "b.txt").write_text("wrong extension")
    (folder / "notes.md").write_text("top level")
    organized = organize(folder, collection, group_by="folder")
    units = by_key(organized)
    assert units["a"].complete and set(units["a"].files) == {"image", "annotation"}
    assert kinds(units["b"]) == ["unmatched"] and "not allowed for 'image'" in units["b"].problems[0]["detail"]
    assert organized.unmatched_files == ["notes.md"]


def test_group_by_regex(tmp_path, collection, make_jpeg):
    folder = tmp_path / "in"
    make_jpeg(folder / "scan-7_front.jpg")
    (folder / "scan-7_labels.json").write_text('{"a": 1}')
    make_jpeg(folder / "other.jpg")
    organized = organize(folder, collection, group_by="regex", pattern=r"^(?P<unit>scan-\d+)_")
    assert [u.key for u in organized.units] == ["scan-7"] and organized.units[0].complete
    assert organized.unmatched_files == ["other.jpg"]
    with pytest.raises(CollectionError, match="named group 'unit'"):
        organize(folder, collection, group_by="regex", pattern=r"scan")
    with pytest.raises(CollectionError, match="invalid regex"):
        organize(folder, collection, group_by="regex", pattern=r"(?P<unit>")


def test_overlapping_extensions_need_folder_grouping(tmp_path, lake, make_jpeg):
    c = create_collection(
        lake,
        "masks",
        "inhouse",
        "seg",
        [
            {"name": "image", "is_required": True, "extensions": [".png"]},
            {"name": "mask", "is_required": True, "extensions": [".png"]},
        ],
    )
    folder = tmp_path / "in"
    make_jpeg(folder / "x.png")
    with pytest.raises(CollectionError, match="both accept .png"):
        organize(folder, c)

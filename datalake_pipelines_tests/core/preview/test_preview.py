"""Previews in catalog_partition materializations (real Dagster instance): contact sheet, annotations, profile."""

from __future__ import annotations

import base64
import io
import json
import os
import re

import dagster as dg
import pandas as pd
import pytest
import yaml
from PIL import Image

from datalake_pipelines import DatalakeClient
from datalake_pipelines.core.errors import SchemaConfigError
from datalake_pipelines.core.lake.schema import PROJECT_SCHEMA, SchemaConfig, load_schema
from datalake_pipelines.core.preview.annotations import extract_annotations
from datalake_pipelines.core.preview.thumbnails import MAX_SHEET_CHARS, render_thumbnail
from datalake_pipelines.definitions import defs
from datalake_pipelines.lib.resources import LakeResource
from datalake_pipelines.services.runner import start_pending

RED = (255, 0, 0)
GREY = (200, 200, 200)
KEY = "inhouse/scans/ocr/words"


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def latest_metadata(instance) -> dict:
    records = instance.fetch_materializations(dg.AssetKey("catalog_partition"), limit=1).records
    return records[0].asset_materialization.metadata


def sheet_images(markdown: str) -> list[Image.Image]:
    uris = re.findall(r"!\[[^\]]*\]\(data:image/jpeg;base64,([A-Za-z0-9+/=]+)\)", markdown)
    images = []
    for uri in uris:
        im = Image.open(io.BytesIO(base64.b64decode(uri)))
        im.load()  # a full decode: raises on a truncated or corrupt JPEG
        images.append(im)
    return images


def near(pixel, color, tol=70) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel, color))


def ingest(instance, client: DatalakeClient, df: pd.DataFrame, task="ocr", variant="words"):
    client.upload_task_data(df, "inhouse", "scans", task, variant, meta={"lang": "en", "src": "real"})
    start_pending(client.layout, instance, echo=lambda *a: None)


def noise_rows(tmp_path, n: int, start: int = 0) -> pd.DataFrame:
    rows = []
    for i in range(start, start + n):
        path = tmp_path / "src" / f"n{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        # noise compresses badly: 24 such thumbnails at 128 px / q70 exceed the cap, so the ladder must work
        Image.frombytes("RGB", (200, 150), os.urandom(200 * 150 * 3)).save(path, quality=90)
        rows.append({"image": str(path), "doc_id": f"d{i:03d}", "caption": f"noise number {i}", "label": "noise"})
    return pd.DataFrame(rows)


def test_materialization_carries_a_contact_sheet_under_the_cap(instance, tmp_path):
    client = DatalakeClient(tmp_path / "lake", progress=False)
    ingest(instance, client, noise_rows(tmp_path, 30))
    md = latest_metadata(instance)
    info = md["contact_sheet_info"].value
    sheet = md["contact_sheet"].value
    assert info["scope"] == "added" and info["rows_sampled"] == 24
    assert len(sheet) <= MAX_SHEET_CHARS and info["chars"] <= MAX_SHEET_CHARS
    images = sheet_images(sheet)
    assert len(images) == info["thumbnails"] >= 12  # shrunk to fit rather than dropped first
    assert all(im.format == "JPEG" and max(im.size) <= 128 for im in images)
    assert info["side_px"] < 128 or info["jpeg_quality"] < 70  # the cap forced the ladder on noise
    assert "**d000**" in sheet and "noise number 0" in sheet  # key fields: id, caption, label
    assert "<" not in sheet  # no raw HTML: the UI strips it
    png = base64.b64decode(md["profile"].value.split("base64,")[1].rstrip(")"))
    assert Image.open(io.BytesIO(png)).format == "PNG" and len(png) < 40_000
    assert md["profile_figures"].value["rows"] == 30

    # a second run shows only what it added
    ingest(instance, client, noise_rows(tmp_path, 2, start=100))
    md = latest_metadata(instance)
    assert md["contact_sheet_info"].value["thumbnails"] == 2
    assert "**d100**" in md["contact_sheet"].value and "**d000**" not in md["contact_sheet"].value
    assert md["profile_figures"].value["rows"] == 32  # the profile covers the whole partition

    # a rebuild (no job ids) samples the whole partition
    result = defs.resolve_job_def("ingest_job").execute_in_process(
        instance=instance, partition_key=KEY, resources={"lake": LakeResource(base_path=str(client.layout.base))}
    )
    assert result.success
    md = latest_metadata(instance)
    assert md["mode"].value == "rebuild" and md["contact_sheet_info"].value["scope"] == "partition"
    sheet = md["contact_sheet"].value
    assert "**d000**" in sheet and "**d100**" in sheet  # spread over both batches
    assert len(sheet_images(sheet)) >= 12 and len(sheet) <= MAX_SHEET_CHARS


def boxed_image(tmp_path, name="page.png"):
    path = tmp_path / "src" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (640, 480), GREY).save(path)
    return path


def test_a_known_box_is_drawn_at_its_place_in_the_ui_thumbnail(instance, tmp_path):
    """640x480 -> 128x96: pixel box [100, 100, 300, 200] becomes [20, 20, 60, 40] in the thumbnail."""
    client = DatalakeClient(tmp_path / "lake", progress=False)
    ocr = {"words": [{"text": "TOTAL", "bbox": [100, 100, 300, 200]}]}
    df = pd.DataFrame([{"image": str(boxed_image(tmp_path)), "doc_id": "p1", "ocr_result": json.dumps(ocr)}])
    ingest(instance, client, df)
    md = latest_metadata(instance)
    [thumb] = sheet_images(md["contact_sheet"].value)
    thumb = thumb.convert("RGB")
    assert thumb.size == (128, 96)
    for edge in [(20, 30), (60, 30), (40, 20), (40, 40)]:
        assert near(thumb.getpixel(edge), RED), (edge, thumb.getpixel(edge))
    for off in [(23, 30), (17, 30), (40, 23), (40, 17), (40, 60)]:
        assert near(thumb.getpixel(off), GREY), (off, thumb.getpixel(off))
    assert "TOTAL" in md["contact_sheet"].value and "1 text box" in md["contact_sheet"].value


def test_normalized_polygons_kie_and_vqa_are_recognised(tmp_path):
    path = boxed_image(tmp_path)
    row = {
        "image": "x",
        "layout": json.dumps([{"polygon": [[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75]], "label": "table"}]),
        "kie": {"fields": [{"key": "total", "value": "12.00", "box": {"x": 0, "y": 0, "w": 0.1, "h": 0.1}}]},
        "question": "What is the total?",
        "answer": "12.00",
    }
    ann = extract_annotations(row, skip={"image"})
    assert ann.normalized and [s.kind for s in ann.shapes] == ["region", "field"]
    assert ann.shapes[1].label == "total: 12.00" and ann.qa == [("What is the total?", "12.00")]
    thumb = render_thumbnail(path, ann, 128)  # PNG source, no JPEG round trip: exact colours
    assert thumb.getpixel((32, 40)) == (0, 170, 0)  # left edge of the polygon at x = 0.25 * 128
    assert thumb.getpixel((40, 40)) == GREY
    assert thumb.getpixel((12, 5)) == (0, 90, 255)  # right edge of the KIE box at x = 0.1 * 128
    assert thumb.getpixel((1, thumb.height - 1)) == (0, 0, 0)  # the Q/A band


def test_other_shapes_map_through_the_task_preview_setting(instance, tmp_path):
    client = DatalakeClient(tmp_path / "lake", progress=False)
    schema_file = client.layout.schema_file
    load_schema(client.layout)  # seeds the lake's schema.yaml
    doc = yaml.safe_load(schema_file.read_text())
    doc["tasks"]["ocr"]["preview"] = {"annotations": "doc.regions", "box": "rect", "text": "content", "format": "xywh"}
    schema_file.write_text(yaml.safe_dump(doc))
    ocr = {"regions": [{"rect": [100, 100, 200, 100], "content": "HELLO"}]}  # x, y, w, h
    df = pd.DataFrame([{"image": str(boxed_image(tmp_path)), "doc_id": "p2", "doc": json.dumps(ocr)}])
    ingest(instance, client, df)
    md = latest_metadata(instance)
    [thumb] = sheet_images(md["contact_sheet"].value)
    assert near(thumb.convert("RGB").getpixel((60, 30)), RED)  # x + w = 300 px -> 60 in the thumbnail
    assert "HELLO" in md["contact_sheet"].value


def test_schema_validation_accepts_the_preview_setting_and_refuses_bad_ones():
    ok = SchemaConfig.from_dict({"tasks": {"ocr": {"preview": {"annotations": "a.b", "box": "quad"}}}})
    assert ok.tasks["ocr"].preview == {"annotations": "a.b", "box": "quad"}
    assert ok.as_yaml_dict()["tasks"]["ocr"]["preview"] == {"annotations": "a.b", "box": "quad"}
    with pytest.raises(SchemaConfigError, match="tasks.ocr.preview.format"):
        SchemaConfig.from_dict({"tasks": {"ocr": {"preview": {"format": "ltrb"}}}})
    with pytest.raises(SchemaConfigError, match="tasks.ocr.preview.boxes"):
        SchemaConfig.from_dict({"tasks": {"ocr": {"preview": {"boxes": "x"}}}})
    assert "ocr" in SchemaConfig.load(PROJECT_SCHEMA).tasks  # the shipped file still validates


def test_an_s3_lake_shows_its_images_task_mapping_and_file_sizes(instance, s3_lake, tmp_path):
    """On S3 a run works in a throwaway work lake without the lake's assets: the sheet reads them from S3 (the
    rows a run added, its deduplicated images too; a rebuild's sample), the task's preview setting comes from
    the lake's schema.yaml and image file sizes from the published hash index."""
    from datalake_pipelines.core.storage.backends import S3Storage
    from datalake_pipelines_tests.support.s3_pipeline import resources, run, tick

    doc = yaml.safe_load(PROJECT_SCHEMA.read_text())
    doc["tasks"]["ocr"]["preview"] = {"annotations": "doc.regions", "box": "rect", "text": "content", "format": "xywh"}
    S3Storage(s3_lake).write_bytes("config/schema.yaml", yaml.safe_dump(doc).encode())
    client = DatalakeClient(s3_lake, progress=False)
    image = str(boxed_image(tmp_path))
    regions = json.dumps({"regions": [{"rect": [100, 100, 200, 100], "content": "HELLO"}]})
    cursor = None
    for doc_id in ("p1", "p2"):  # p2's image is p1's: deduplicated, never in p2's work lake
        frame = pd.DataFrame([{"image": image, "doc_id": doc_id, "doc": regions}])
        client.upload_task_data(frame, "inhouse", "scans", "ocr", "words", meta={"lang": "en", "src": "real"})
        result = tick(instance, s3_lake, cursor)
        cursor = result.cursor
        assert run(instance, s3_lake, result.run_requests[0], result).success
        md = latest_metadata(instance)
        assert md["contact_sheet_info"].value["scope"] == "added" and md["contact_sheet_info"].value["skipped"] == []
        [thumb] = sheet_images(md["contact_sheet"].value)
        assert f"**{doc_id}**" in md["contact_sheet"].value and "HELLO" in md["contact_sheet"].value
        assert near(thumb.convert("RGB").getpixel((60, 30)), RED)  # drawn through the task's xywh mapping
        sizes = md["profile_figures"].value["images"]["image"]
        assert sizes["unknown_sizes"] == 0 and sizes["file_bytes"]["count"] == int(doc_id[1:])
    rebuild = defs.resolve_job_def("ingest_job").execute_in_process(
        instance=instance, partition_key=KEY, resources=resources(s3_lake)
    )
    assert rebuild.success
    md = latest_metadata(instance)
    assert md["contact_sheet_info"].value["scope"] == "partition" and len(sheet_images(md["contact_sheet"].value)) == 2

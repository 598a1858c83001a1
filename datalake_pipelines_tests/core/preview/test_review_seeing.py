"""Issue 18 review: the profile of wide partitions, metadata sizes, Markdown escaping, empty panels, thumbnails
(JPEG encode, fonts, bad coordinates, box counts, extreme aspect ratios, every image column)."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from datalake_pipelines.cli.main import main
from datalake_pipelines.core.preview.annotations import extract_annotations
from datalake_pipelines.core.preview.fonts import font_chain, label_font
from datalake_pipelines.core.preview.partition import PartitionPreview
from datalake_pipelines.core.preview.profile import compact_figures, profile_figure, profile_files
from datalake_pipelines.core.preview.thumbnails import ContactSheet, jpeg_bytes, render_thumbnail
from datalake_pipelines.defs.ingest.metadata import preview_table


def wide_file(tmp_path, columns=1000, rows=60):
    data = {f"col_{i:04d}": pa.array([None if (r + i) % 5 == 0 else "x" * ((r * i) % 40) for r in range(rows)])
            for i in range(columns)}  # fmt: skip
    path = tmp_path / "wide.parquet"
    pq.write_table(pa.table(data), path)
    return path, data


def test_a_1000_column_profile_is_one_scan_and_its_metadata_stays_small(tmp_path):
    path, data = wide_file(tmp_path)
    started = time.perf_counter()
    doc = profile_files([path])
    seconds = time.perf_counter() - started
    assert seconds < 5, seconds  # a query per column took ~35 s here
    assert len(doc["text_lengths"]) == 1000 and len(doc["nulls"]) == 1000  # the CLI's --json keeps every figure
    lengths = [len(s) for s in data["col_0007"].to_pylist() if s is not None]
    assert doc["text_lengths"]["col_0007"]["chars"]["max"] == max(lengths)
    assert doc["text_lengths"]["col_0007"]["chars"]["count"] == len(lengths)
    assert doc["nulls"]["col_0007"] == 12
    small = compact_figures(doc)
    size = len(json.dumps(small, default=str))
    assert size < 20_000, size
    assert len(small["text_lengths"]) == 20 and small["text_columns_more"] == 980
    assert len(small["nulls"]) == 20 and small["null_columns_more"] == 980
    table = preview_table(pq.read_table(path).slice(0, 5), {})
    assert len(table.schema.columns) == 24 and all(len(r.data) == 24 for r in table.records)
    assert len(json.dumps([r.data for r in table.records])) < 10_000


def test_the_preview_table_keeps_user_text_as_text_and_cuts_long_values():
    """A table cell is text to the UI (no Markdown), so the caption is kept as written, only cut when long."""
    caption = "![t](http://e.x/t.png) [a](js:x) <img> **b** a|b"
    table = preview_table(pa.table({"caption": [caption], "long": ["x" * 1000]}), {})
    [record] = table.records
    assert record.data["caption"] == caption
    assert len(record.data["long"]) == 200 and record.data["long"].endswith("...")


def test_a_text_only_profile_png_hides_empty_panels_and_counts_more_text_columns(tmp_path):
    data = {f"t{i}": pa.array(["a" * (i + 1) * 10, None, "b"]) for i in range(7)}
    path = tmp_path / "text.parquet"
    pq.write_table(pa.table(data), path)
    fig = profile_figure(profile_files([path]), "text only")
    axes = fig.axes
    for ax in axes[:3]:
        assert not ax.axison and [t.get_text() for t in ax.texts] in (["no images"], ["no file sizes known"])
    assert axes[3].axison and "3 more columns" in axes[3].get_title()
    assert [t.get_text() for t in axes[3].get_legend().get_texts()] == ["t6", "t5", "t4", "t3"]  # longest first


def test_a_run_that_added_no_rows_says_so():
    empty = ContactSheet("", 0, 0, 128, 70, 0)
    preview = PartitionPreview(empty, "added", {}, b"", {})
    assert preview.sheet_text() == "no rows added by this run"
    no_images = PartitionPreview(ContactSheet("", 0, 3, 128, 70, 0), "added", {}, b"", {})
    assert no_images.sheet_text() == "no images among rows this run added"


# thumbnails ---------------------------------------------------------------------------------------------------
def noise(side=256, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8))


def test_a_noisy_thumbnail_encodes_at_every_quality():
    for quality in (70, 85, 95):
        assert Image.open(io.BytesIO(jpeg_bytes(noise(), quality))).size == (256, 256)


def test_the_gallery_shows_every_image_column_and_survives_noisy_images(client, lake, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    rows = []
    for i in range(2):
        noise(256, i).save(src / f"n{i}.png")
        Image.new("RGB", (60, 40), (0, 90, 200 - i)).save(src / f"p{i}.png")
        rows.append({"image": str(src / f"n{i}.png"), "photo": str(src / f"p{i}.png"), "doc_id": f"d{i}"})
    client.upload_task_data(pd.DataFrame(rows), "inhouse", "noisy", "ocr", "v1", meta={"lang": "en", "src": "real"})
    assert [r.status for r in client.process_pending()] == ["done"]
    out = tmp_path / "gallery"
    code = main(["--base-path", str(lake.base), "preview", "--partition", "inhouse/noisy/ocr/v1", "--out", str(out),
                 "--json"])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["rows"] == 2 and report["thumbnails"] == 4 and report["skipped"] == []
    page = (out / "index.html").read_text()
    assert page.count("<img ") == 4 and 'title="photo"' in page


def test_labels_in_other_scripts_are_drawn_with_a_font_that_has_them():
    cjk = any("wqy" in p or "CJK" in p for p in font_chain())  # make browser installs fonts-wqy-microhei
    for text in ("한국어", "中文", "テキスト"):
        assert label_font(text, 20)[1] == (text if cjk else "")  # without a CJK font: left out, never boxes
    for text in ("한국어", "中文", "テキスト", "مرحبا", "שלום", "Привет")[0 if cjk else 3 :]:
        font, drawable = label_font(text, 20)
        assert drawable == text
        masks = {bytes(font.getmask(ch)) for ch in text if not ch.isspace()}
        assert len(masks) > 1, text  # distinct glyphs, not one missing-glyph box repeated
    font, drawable = label_font("ok 🎉", 20)
    assert drawable == "ok"  # no font here has the emoji: it is left out, not drawn as a box


def test_a_nan_or_inf_coordinate_drops_that_box_only(tmp_path):
    words = [{"text": "nan", "bbox": [float("nan"), 10, 50, 40]}, {"text": "inf", "bbox": [0, 0, float("inf"), 5]},
             {"text": "good", "bbox": [10, 10, 60, 40]}]  # fmt: skip
    ann = extract_annotations({"ocr": json.dumps({"words": words})})
    assert [s.label for s in ann.shapes] == ["good"]
    path = tmp_path / "p.png"
    Image.new("RGB", (100, 80), (255, 255, 255)).save(path)
    assert render_thumbnail(path, ann, 128).size == (100, 80)


def test_a_capped_box_count_says_how_many_were_drawn():
    words = [{"text": f"w{i}", "bbox": [i % 400, i // 400, i % 400 + 5, i // 400 + 5]} for i in range(20000)]
    ann = extract_annotations({"ocr": json.dumps({"words": words})})
    assert len(ann.shapes) == 500 and ann.summary() == "20000 text boxes (500 drawn)"
    few = extract_annotations({"ocr": json.dumps({"words": words[:3]})})
    assert few.summary() == "3 text boxes"


def test_extreme_aspect_ratios_are_letterboxed_to_a_visible_size(tmp_path):
    wide, tall = tmp_path / "wide.png", tmp_path / "tall.png"
    Image.new("RGB", (10000, 50), (0, 128, 255)).save(wide)
    Image.new("L", (50, 10000), 0).save(tall)
    w = render_thumbnail(wide, None, 128)
    t = render_thumbnail(tall, None, 128)
    assert w.size == (128, 16) and t.size == (16, 128)
    assert w.getpixel((64, 7)) == (0, 128, 255) and w.getpixel((64, 0)) == (200, 200, 200)

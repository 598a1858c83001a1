"""``datalake profile``: figures computed over a real lake's catalog, in text and JSON, and the PNG."""

from __future__ import annotations

import io
import json
import os

import pandas as pd
from PIL import Image

from datalake_pipelines.cli.main import main
from datalake_pipelines.core.catalog.parts import partition_files
from datalake_pipelines.core.lake.layout import PartitionRef
from datalake_pipelines.core.preview.profile import profile_files, profile_png

KEY = "inhouse/mixed/ocr/v1"


def build(client, tmp_path):
    """3 JPEG 64x48 RGB, 2 PNG 30x20 (one L, one RGBA); text lengths 1, 10, 100; a caption null twice."""
    src = tmp_path / "src"
    src.mkdir()
    rows = []
    for i in range(3):
        p = src / f"j{i}.jpg"
        Image.frombytes("RGB", (64, 48), os.urandom(64 * 48 * 3)).save(p, quality=90)
        rows.append({"image": str(p), "caption": "x" * (10**i), "note": f"n{i}"})
    for i, mode in enumerate(("L", "RGBA")):
        p = src / f"p{i}.png"
        Image.new(mode, (30, 20), 7 + i).save(p)
        rows.append({"image": str(p), "caption": None, "note": f"m{i}"})
    client.upload_task_data(pd.DataFrame(rows), "inhouse", "mixed", "ocr", "v1", meta={"lang": "en", "src": "real"})
    results = client.process_pending()
    assert [r.status for r in results] == ["done"]
    return {p.name: p.stat().st_size for p in src.iterdir()}


def test_profile_figures_and_cli(client, lake, tmp_path, capsys):
    sizes = build(client, tmp_path)
    png_path = str(tmp_path / "p.png")
    code = main(["--base-path", str(lake.base), "profile", "--partition", KEY, "--json", "--png", png_path])
    out = capsys.readouterr().out
    assert code == 0
    doc = json.loads(out)
    assert doc["partition"] == KEY and doc["rows"] == 5
    img = doc["images"]["image"]
    assert img["count"] == 5
    assert img["formats"] == {"JPEG": 3, "PNG": 2}
    assert img["modes"] == {"RGB": 3, "L": 1, "RGBA": 1}
    assert sorted(map(tuple, img["sizes"])) == [(30, 20, 2), (64, 48, 3)]
    assert img["width"]["min"] == 30 and img["width"]["max"] == 64
    assert img["file_bytes"]["total"] == sum(sizes.values())  # from the hash index: original bytes
    assert img["file_bytes"]["max"] == max(sizes.values()) and img["unknown_sizes"] == 0
    cap = doc["text_lengths"]["caption"]
    assert (cap["chars"]["min"], cap["chars"]["max"], cap["chars"]["count"]) == (1, 100, 3)
    assert cap["chars_log2"] == {"0": 1, "3": 1, "6": 1}  # 1 in [1,2), 10 in [8,16), 100 in [64,128)
    assert doc["nulls"]["caption"] == 2 and doc["nulls"]["note"] == 0
    assert "image_sha256" not in doc["text_lengths"] and "batch_id" not in doc["text_lengths"]
    png = (tmp_path / "p.png").read_bytes()
    assert Image.open(io.BytesIO(png)).size[0] > 300 and len(png) < 40_000

    code = main(["--base-path", str(lake.base), "profile", "--partition", KEY])
    text = capsys.readouterr().out
    assert code == 0
    assert "5 rows" in text and "formats: JPEG 3, PNG 2" in text and "caption 2" in text

    code = main(["--base-path", str(lake.base), "profile", "--partition", "inhouse/none/ocr/v1"])
    assert code == 1 and "has no catalog files" in capsys.readouterr().err


def test_profile_png_stays_small_with_many_columns(client, lake, tmp_path):
    build(client, tmp_path)
    doc = profile_files(partition_files(lake, PartitionRef.parse(KEY)))
    assert doc["images"]["image"]["file_bytes"] is None  # no index given: sizes unknown, not invented
    assert doc["images"]["image"]["unknown_sizes"] == 5
    doc["nulls"].update({f"col{i}": i for i in range(1, 60)})
    doc["text_lengths"].update({f"t{i}": doc["text_lengths"]["caption"] for i in range(10)})
    assert len(profile_png(doc, KEY)) < 40_000

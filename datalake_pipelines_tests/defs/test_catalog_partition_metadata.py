"""``catalog_partition`` explains itself (real instance): figures with units, described columns, the preview as a
table with the useful columns first, owners/tags/code version from settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from datalake_pipelines import DatalakeClient
from datalake_pipelines.core.figures import format_bytes
from datalake_pipelines.core.preview.columns import cell, preview_columns, preview_records
from datalake_pipelines.lib.asset_info import BOOKKEEPING_COLUMNS, CODE_VERSION
from datalake_pipelines_tests.support.s3_pipeline import run, tick

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def materialized(tmp_path, make_jpeg) -> dict:
    """One OCR batch: 3 rows, two of them the same image bytes; the run's materialization metadata."""
    base = str(tmp_path / "lake")
    a = make_jpeg(tmp_path / "src" / "a.jpg")
    b = make_jpeg(tmp_path / "src" / "b.jpg")
    frame = pd.DataFrame(
        {
            "image": [str(a), str(b), str(a)],
            "doc_id": ["d1", "d2", "d3"],
            "caption": ["first page", "second page", "first page again"],
            "label": ["invoice", "receipt", "invoice"],
        }
    )
    DatalakeClient(base, progress=False).upload_task_data(
        frame, "inhouse", "scans", "ocr", "words", meta={"lang": "en", "src": "real"}
    )
    with dg.instance_for_test() as instance:
        result = tick(instance, base)
        outcome = run(instance, base, result.run_requests[0], result)
        assert outcome.success
        meta = outcome.asset_materializations_for_node("catalog_partition")[0].metadata
    return {"meta": meta, "sizes": {p.name: p.stat().st_size for p in (a, b)}, "base": base}


def test_figures_carry_units_next_to_the_raw_ints(materialized):
    meta, sizes = materialized["meta"], materialized["sizes"]
    assert meta["images_new"].value == 2 and meta["images_deduplicated"].value == 1
    assert meta["dedup_ratio_pct"].value == 33.33  # a percentage with two decimals, not the bare fraction 0.3333
    assert "dedup_ratio" not in meta
    assert meta["bytes_stored"].value == sum(sizes.values())  # the raw int, for Dagster's plots
    assert meta["bytes_stored_human"].value == format_bytes(sum(sizes.values()))


def test_the_catalog_version_is_shown_and_is_a_valid_as_of(materialized):
    client = DatalakeClient(materialized["base"], progress=False)
    (version,) = client.catalog_versions("inhouse/scans/ocr/words")
    assert materialized["meta"]["catalog_version"].value == version["version_id"]
    assert (version["action"], version["rows"]) == ("ingest", 3)
    manifest = client.download(None, "parquet", Path(materialized["base"]).parent / "dl", as_of=version["version_id"])
    assert manifest["rows"] == 3


def test_the_preview_is_a_table_with_the_useful_columns_first(materialized):
    preview = materialized["meta"]["preview"]
    assert isinstance(preview, dg.TableMetadataValue)
    names = [c.name for c in preview.schema.columns]
    assert names[:5] == ["doc_id", "caption", "label", "lang", "src"]  # the user's columns and meta fields
    assert names.index("image") < names.index("image_width") < names.index("batch_id")
    assert names[-3:] == ["image_sha256", "image_phash", "row_hash"]  # hashes last
    assert [r.data["doc_id"] for r in preview.records] == ["d1", "d2", "d3"]
    assert preview.records[0].data["caption"] == "first page"
    described = {c.name: c.description for c in preview.schema.columns}
    assert described["row_hash"] == BOOKKEEPING_COLUMNS["row_hash"]


def test_the_column_schema_describes_every_column(materialized):
    columns = {c.name: c for c in materialized["meta"]["dagster/column_schema"].schema.columns}
    assert columns["batch_id"].description == BOOKKEEPING_COLUMNS["batch_id"]
    assert columns["ingested_at"].description == BOOKKEEPING_COLUMNS["ingested_at"]
    assert columns["image"].description.startswith("Lake-relative path of the stored file")
    assert columns["image_sha256"].description.endswith("(of column image)")
    assert "perceptual hash" in columns["image_phash"].description
    assert columns["lang"].description.startswith("Meta field")
    assert columns["caption"].description == "A column of the data."
    assert all(c.description for c in columns.values())


def test_preview_columns_and_cells():
    names = ["row_hash", "x_sha256", "x", "batch_id", "x_width", "text", "x_phash", "n", "ingested_at"]
    assert preview_columns(names) == ["text", "n", "x", "x_width", "batch_id", "ingested_at"] + [
        "row_hash",
        "x_sha256",
        "x_phash",
    ]
    assert preview_columns([f"c{i}" for i in range(100)], limit=24) == [f"c{i}" for i in range(24)]
    assert cell(float("nan")) == "nan" and cell(1.5) == 1.5 and cell(7) == 7 and cell(None) is None
    assert cell({"a": [1, 2]}) == '{"a": [1, 2]}' and cell(b"\x01\xff") == "01ff"
    assert cell("y" * 500) == "y" * 197 + "..."
    assert cell(-5949756206582454123) == "-5949756206582454123" and cell(2**53 - 1) == 2**53 - 1  # pHash: exact
    # a pHash column reads as the near-dup reports write it: 16 hex digits (imagehash's str), not a signed int
    rows = [{"x_phash": -5949756206582454123, "n": -5949756206582454123}, {"x_phash": None, "n": 1}]
    assert preview_records(rows, ["x_phash", "n"]) == [
        {"x_phash": "ad6e3840d67a2895", "n": "-5949756206582454123"},
        {"x_phash": None, "n": 1},
    ]


def test_owners_tags_and_code_version_from_settings():
    env = {
        **os.environ,
        "PYTHONPATH": str(PROJECT),
        "DATALAKE_ASSET_OWNERS": "team:data-eng, ml@example.com",
        "DATALAKE_ASSET_TAGS": "domain=ml,tier=gold",
    }
    code = (
        "import json; from datalake_pipelines.defs.ingest.assets import catalog_partition as a; k = a.key; "
        "print(json.dumps([a.owners_by_key[k], a.tags_by_key[k], a.code_versions_by_key[k]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    owners, tags, version = json.loads(out.stdout.strip().splitlines()[-1])
    assert owners == ["team:data-eng", "ml@example.com"]
    assert {"domain": "ml", "tier": "gold"}.items() <= tags.items()
    assert version == CODE_VERSION != ""


def test_the_catalog_version_on_an_s3_lake(s3_lake, make_jpeg, tmp_path):
    """The same on S3: the ingest run and a rebuild run (no job ids) each show the version they recorded."""
    client = DatalakeClient(s3_lake, progress=False)
    client.upload_raw_data(pd.DataFrame({"image": [str(make_jpeg(tmp_path / "a.jpg"))]}), "inhouse", "s3v")
    with dg.instance_for_test() as instance:
        result = tick(instance, s3_lake)
        outcome = run(instance, s3_lake, result.run_requests[0], result)
        assert outcome.success
        ingested = outcome.asset_materializations_for_node("catalog_partition")[0].metadata["catalog_version"].value
        key = result.run_requests[0].partition_key
        rebuild = dg.RunRequest(partition_key=key, tags={})
        again = run(instance, s3_lake, rebuild, result)
        assert again.success
        rebuilt = again.asset_materializations_for_node("catalog_partition")[0].metadata["catalog_version"].value
    versions = client.catalog_versions("inhouse/s3v/raw/mixed")
    assert [(v["version_id"], v["action"], v["rows"]) for v in versions] == [
        (ingested, "ingest", 1),
        (rebuilt, "rebuild", 1),
    ]

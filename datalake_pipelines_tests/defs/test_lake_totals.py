"""duckdb_catalog metadata on a real instance: lake totals per provider/dataset (table with schema), lake-wide
figures with units, column descriptions, owners/tags/code version from settings; units helpers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from dagster_duckdb import DuckDBResource

from datalake_pipelines import DatalakeClient
from datalake_pipelines.core.catalog.totals import read_lake_totals
from datalake_pipelines.core.figures import format_bytes, format_percent, percent
from datalake_pipelines.defs.warehouse.assets import duckdb_catalog
from datalake_pipelines.lib.asset_info import (
    CODE_VERSION,
    AssetInfoError,
    asset_info,
    column_description,
    parse_tags,
)
from datalake_pipelines.lib.resources import LakeResource

PROJECT = Path(__file__).resolve().parents[2]


def test_units():
    assert format_bytes(213263) == "213.3 kB"
    assert format_bytes(0) == "0 Bytes" and format_bytes(None) == ""
    assert format_bytes(5 * 10**12) == "5.0 TB"
    with pytest.raises(ValueError, match="negative"):
        format_bytes(-1)
    assert percent(1, 3) == 33.33 and percent(1, 8) == 12.5 and percent(5, 0) == 0.0
    assert format_percent(12.3456) == "12.35 %"


@pytest.fixture
def two_datasets(tmp_path, make_jpeg):
    """A: 3 distinct images, one referenced twice; B: 2 images, one the same bytes as A's second image."""
    lake = tmp_path / "lake"
    client = DatalakeClient(lake, progress=False)
    a = [make_jpeg(tmp_path / "a" / f"a{i}.jpg") for i in range(3)]
    b0 = make_jpeg(tmp_path / "b" / "b0.jpg")
    b1 = tmp_path / "b" / "b1.jpg"
    b1.write_bytes(a[1].read_bytes())
    client.upload_raw_data(pd.DataFrame({"image": [str(p) for p in [*a, a[0]]], "n": [0, 1, 2, 3]}), "inhouse", "set_a")
    client.upload_raw_data(pd.DataFrame({"image": [str(b0), str(b1)], "n": [0, 1]}), "inhouse", "set_b")
    assert all(r.status == "done" for r in client.process_pending())
    sizes = {p.name: p.stat().st_size for p in [*a, b0]}
    return client.layout, sizes


def test_duckdb_catalog_metadata_has_lake_totals(two_datasets, monkeypatch):
    layout, sizes = two_datasets
    monkeypatch.setenv("DATALAKE_BASE_PATH", str(layout.base))
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [duckdb_catalog],
            instance=instance,
            resources={
                "lake": LakeResource(base_path=str(layout.base)),
                "duckdb": DuckDBResource(database=str(layout.duckdb_file)),
            },
        )
        assert result.success
        meta = instance.get_latest_materialization_event(duckdb_catalog.key).asset_materialization.metadata
    table = meta["lake_totals"].value
    by_dataset = {(r.data["provider"], r.data["dataset"]): r.data for r in table.records}
    a, b = by_dataset[("inhouse", "set_a")], by_dataset[("inhouse", "set_b")]
    assert (a["rows"], a["assets"], a["file_refs"], a["distinct_files"], a["dedup_ratio_pct"]) == (4, 3, 4, 3, 25.0)
    assert a["bytes_stored"] == sizes["a0.jpg"] + sizes["a1.jpg"] + sizes["a2.jpg"]
    assert a["stored_size"] == format_bytes(a["bytes_stored"])
    # B stored only its new image; its second image reuses A's file.
    assert (b["rows"], b["assets"], b["file_refs"], b["distinct_files"], b["dedup_ratio_pct"]) == (2, 1, 2, 2, 0.0)
    assert b["bytes_stored"] == sizes["b0.jpg"]
    stored = sum(p.stat().st_size for p in (layout.base / "assets").rglob("*") if p.is_file())
    assert meta["bytes_stored"].value == stored == sum(sizes.values())
    assert meta["bytes_stored_human"].value == format_bytes(stored)
    assert meta["assets"].value == 4 and meta["dagster/row_count"].value == 6
    assert meta["file_refs"].value == 6 and meta["distinct_files"].value == 4
    assert meta["dedup_ratio_pct"].value == 33.33
    assert meta["catalog_bytes"].value == sum(p.stat().st_size for p in layout.catalog_root.rglob("*.parquet"))
    names = [c.name for c in table.schema.columns]
    assert names[:2] == ["provider", "dataset"] and names.index("stored_size") == names.index("bytes_stored") + 1
    assert all(c.description for c in table.schema.columns)
    described = {c.name: c.description for c in meta["dagster/column_schema"].value.columns}
    assert "SHA-256" in described["row_hash"] and "UTC" in described["ingested_at"]
    assert "staging job id" in described["batch_id"] and "image" in described["image_sha256"]
    assert described["n"] is None  # the user's own column is not invented a description


def test_totals_of_an_empty_lake(tmp_path):
    client = DatalakeClient(tmp_path / "lake", progress=False)
    from datalake_pipelines.core.catalog.refresh import refresh_duckdb

    refresh_duckdb(client.layout)
    totals = read_lake_totals(client.layout.base)
    assert totals.datasets == [] and totals.totals["rows"] == 0 and totals.totals["dedup_ratio_pct"] == 0.0


def test_owners_tags_and_code_version_from_settings(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": str(PROJECT),
        "DATALAKE_ASSET_OWNERS": "team:data-eng, ml@example.com",
        "DATALAKE_ASSET_TAGS": "domain=ml,tier=gold",
    }
    code = (
        "import json; from datalake_pipelines.defs.warehouse.assets import duckdb_catalog as a; k = a.key; "
        "print(json.dumps([a.owners_by_key[k], a.tags_by_key[k], a.code_versions_by_key[k]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    owners, tags, version = json.loads(out.stdout.strip().splitlines()[-1])
    assert owners == ["team:data-eng", "ml@example.com"]
    assert {"domain": "ml", "tier": "gold"}.items() <= tags.items()
    assert version == CODE_VERSION != ""


def test_bad_settings_are_refused_by_name():
    with pytest.raises(AssetInfoError, match="DATALAKE_ASSET_OWNERS.*'data-eng'"):
        asset_info({"DATALAKE_ASSET_OWNERS": "data-eng"})
    with pytest.raises(AssetInfoError, match="DATALAKE_ASSET_TAGS.*'tier'"):
        parse_tags("tier")
    with pytest.raises(AssetInfoError, match="DATALAKE_ASSET_TAGS.*'k=a b'"):
        parse_tags("k=a b")
    assert asset_info({}).asset_kwargs() == {"owners": [], "tags": {}, "code_version": CODE_VERSION}
    assert column_description("image_width", {"image"}).startswith("Displayed width")
    assert column_description("image_width", set()) is None


def test_totals_on_an_s3_lake(s3_lake, tmp_path, make_jpeg):
    client = DatalakeClient(s3_lake, progress=False)
    a = [make_jpeg(tmp_path / "a" / f"a{i}.jpg") for i in range(2)]
    client.upload_raw_data(pd.DataFrame({"image": [str(a[0]), str(a[1]), str(a[0])]}), "inhouse", "set_a")
    assert all(r.status == "done" for r in client.process_pending())
    client.lake.refresh_warehouse()
    totals = read_lake_totals(s3_lake)
    [row] = totals.datasets
    assert (row["rows"], row["assets"], row["file_refs"], row["distinct_files"]) == (3, 2, 3, 2)
    assert row["bytes_stored"] == sum(p.stat().st_size for p in a) and row["dedup_ratio_pct"] == 33.33

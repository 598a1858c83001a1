"""DuckDBClient over a real catalog written with PartWriter and real Pillow images."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import datetime, timezone

import pyarrow as pa
import pytest
from PIL import Image

from datalake_pipelines.core.catalog.parts import CatalogError, PartWriter, record_batch_in_partition
from datalake_pipelines.core.catalog.query import DuckDBClient, UnknownPartitionError
from datalake_pipelines.core.lake.changes import partition_writer
from datalake_pipelines.core.lake.layout import LakeLayout, PartitionRef

OCR = PartitionRef("acme", "invoices", "ocr", "base")
OCR_JA = PartitionRef("acme", "invoices", "ocr", "ja")
RAW = PartitionRef("acme", "invoices", "raw", "image")
OTHER = PartitionRef("globex", "receipts", "ocr", "base")


def store_image(layout: LakeLayout, ref: PartitionRef, size: tuple[int, int], fmt: str, seed: int) -> dict:
    """Write a real image into the sharded asset store; return its catalog image fields."""
    image = Image.new("RGB", size, ((seed * 40) % 256, (seed * 90) % 256, 120))
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    data = buf.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    relpath = layout.asset_relpath(ref.provider, ref.dataset, sha, "jpg" if fmt == "JPEG" else fmt.lower())
    path = layout.resolve(relpath)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"path": relpath, "sha256": sha, "width": size[0], "height": size[1], "format": fmt, "mode": "RGB"}


def add_batch(layout: LakeLayout, ref: PartitionRef, *args, **kwargs) -> None:
    """:func:`write_batch_files` (same arguments) under the partition writer's lock and change-log entry, as an
    ingest writes."""
    with partition_writer(layout, ref):
        write_batch_files(layout, ref, *args, **kwargs)


def write_batch_files(
    layout: LakeLayout,
    ref: PartitionRef,
    job_id: str,
    columns: dict[str, list],
    image_sizes: list[tuple[int, int]] | None = None,
    image_format: str = "JPEG",
) -> None:
    """Write one part file (with batch_id/ingested_at/row_hash and an optional ``image`` column) + metadata."""
    n = len(next(iter(columns.values())))
    data = dict(columns)
    if image_sizes is not None:
        facts = [store_image(layout, ref, s, image_format, i) for i, s in enumerate(image_sizes)]
        data["image"] = [f["path"] for f in facts]
        for key in ("sha256", "width", "height", "format", "mode"):
            data[f"image_{key}"] = [f[key] for f in facts]
    now = datetime.now(timezone.utc)
    data["batch_id"] = [job_id] * n
    data["ingested_at"] = pa.array([now] * n, pa.timestamp("us", tz="UTC"))
    data["row_hash"] = [hashlib.sha256(f"{job_id}-{i}".encode()).hexdigest() for i in range(n)]
    table = pa.table(data)
    for name in ("image_width", "image_height"):
        if name in table.column_names:
            table = table.set_column(table.schema.get_field_index(name), name, table[name].cast(pa.int32()))
    writer = PartWriter(layout.part_file(ref, job_id))
    writer.write(table)
    writer.commit()
    record_batch_in_partition(layout, ref, job_id, n, table.schema, {"created_at": now.isoformat()})


def ocr_json(*words: str) -> str:
    return json.dumps(
        {"words": [{"text": w, "bbox": [1, 2, 3, 4]} for w in words], "lines": [{"text": " ".join(words)}]}
    )


@pytest.fixture
def lake(tmp_path) -> LakeLayout:
    layout = LakeLayout(tmp_path / "lake")
    add_batch(
        layout,
        OCR,
        "job-a",
        {
            "lang": ["en", "en", "ko"],
            "src": ["real", "real", "synthetic"],
            "ocr_result": [
                ocr_json("Total", "INVOICE", "2024"),
                ocr_json("receipt", "' OR 1=1 --"),
                ocr_json("청구서", "amount"),
            ],
            "note": ["first page", "drop table students; ' OR 1=1 -- here", None],
        },
        image_sizes=[(32, 24), (40, 30), (16, 16)],
    )
    add_batch(layout, OCR_JA, "job-b", {"lang": ["ja"], "ocr_result": [ocr_json("請求書")]}, [(8, 8)], "PNG")
    add_batch(layout, RAW, "job-c", {"caption": ["a cat", "a dog"]}, [(20, 10), (10, 20)], "PNG")
    add_batch(layout, OTHER, "job-d", {"lang": ["en"], "ocr_result": [ocr_json("invoice", "paid")]}, [(12, 12)])
    return layout


def test_retrieve_partitions_counts_rows_and_bytes(lake):
    with DuckDBClient(lake.base) as duck:
        parts = duck.retrieve_partitions("catalog")
    keyed = {tuple(r[c] for c in ("provider", "dataset", "task", "variant")): r for r in parts.to_dict("records")}
    assert keyed[("acme", "invoices", "ocr", "base")]["rows"] == 3
    assert keyed[("globex", "receipts", "ocr", "base")]["rows"] == 1
    assert keyed[("acme", "invoices", "ocr", "base")]["last_batch"] == "job-a"
    assert all(r["bytes"] > 0 for r in keyed.values())
    assert len(keyed) == 4


def test_retrieve_drops_all_null_columns(lake):
    with DuckDBClient(lake.base) as duck:
        df = duck.retrieve_with_existing_cols(providers="acme", tasks=["raw"])
        assert len(df) == 2
        assert "caption" in df.columns and "image_sha256" in df.columns
        # lang/ocr_result only exist in OCR partitions: not in a raw-only selection
        assert "lang" not in df.columns and "ocr_result" not in df.columns
        both = duck.retrieve_with_existing_cols(providers="acme", datasets="invoices", as_arrow=True)
        assert both.num_rows == 6
        assert {"caption", "lang", "ocr_result"} <= set(both.column_names)
        # a filter narrowing to rows where "note" is always null drops it
        ko = duck.retrieve_with_existing_cols(providers="acme", where={"lang": "ko"})
        assert list(ko["lang"]) == ["ko"] and "note" not in ko.columns and "caption" not in ko.columns


def test_where_columns_and_limit(lake):
    with DuckDBClient(lake.base) as duck:
        df = duck.retrieve_with_existing_cols(tasks="ocr", where={"lang": ["en", "ja"]}, columns=["lang", "src"])
        assert list(df.columns) == ["lang", "src"]
        assert sorted(df["lang"]) == ["en", "en", "en", "ja"]
        injected = duck.retrieve_with_existing_cols(where={"lang": "en' OR '1'='1"})
        assert len(injected) == 0
        assert len(duck.retrieve_with_existing_cols(limit=2)) == 2


def test_unknown_partition_lists_existing(lake):
    with DuckDBClient(lake.base) as duck:
        with pytest.raises(UnknownPartitionError, match="existing providers: acme, globex"):
            duck.retrieve_with_existing_cols(providers=["nope"])
        with pytest.raises(UnknownPartitionError, match=r"unknown variant 'xx'.*base, ja"):
            duck.retrieve_with_existing_cols(providers="acme", tasks="ocr", variants="xx")


def test_unknown_column_lists_available(lake):
    with DuckDBClient(lake.base) as duck:
        with pytest.raises(ValueError, match=r"unknown column\(s\) 'missing'; available columns: .*ocr_result"):
            duck.retrieve_with_existing_cols(tasks="ocr", columns=["lang", "missing"])
        with pytest.raises(ValueError, match="unknown column"):
            duck.retrieve_with_existing_cols(where={'lang" OR 1=1 --': "x"})
        with pytest.raises(ValueError, match="unknown column"):
            duck.search_text("nope", "x")


def test_corrupt_file_breaks_only_queries_that_read_it(lake):
    bad = lake.part_file(OTHER, "job-corrupt")
    bad.write_bytes(b"PAR1 this is not parquet")
    with DuckDBClient(lake.base) as duck:
        df = duck.retrieve_with_existing_cols(providers="acme", tasks="ocr", variants="base")
        assert len(df) == 3
        hits = duck.search_text("ocr_result", "invoice", providers="acme")
        assert len(hits) == 1
        with pytest.raises(CatalogError, match="part-job-corrupt.parquet"):
            duck.retrieve_with_existing_cols()
        with pytest.raises(CatalogError, match="part-job-corrupt.parquet"):
            duck.search_text("ocr_result", "invoice")


def test_search_contains_is_case_insensitive_with_snippet(lake):
    with DuckDBClient(lake.base) as duck:
        df = duck.search_text("ocr_result", "invoice")
        assert sorted(df["provider"]) == ["acme", "globex"]
        assert all("invoice" in s.lower() for s in df["matched_snippet"])
        long = duck.search_text("note", "students")
        assert list(long["matched_snippet"]) == ["drop table students; ' OR 1=1 -- here"]


def test_sql_looking_text_is_matched_literally(lake):
    with DuckDBClient(lake.base) as duck:
        df = duck.search_text("note", "' OR 1=1 --")
        assert len(df) == 1 and "' OR 1=1 --" in df["matched_snippet"][0]
        assert len(duck.search_text("note", "%")) == 0
        assert len(duck.search_text("ocr_result", "' OR 1=1 --", json_path="$.words[*].text")) == 1


def test_json_path_search_only_looks_at_those_values(lake):
    with DuckDBClient(lake.base) as duck:
        # "bbox" is a key in every document but never a word text
        assert len(duck.search_text("ocr_result", "bbox")) == 5
        assert len(duck.search_text("ocr_result", "bbox", json_path="$.words[*].text")) == 0
        df = duck.search_text("ocr_result", "請求", json_path="$.words[*].text")
        assert list(df["variant"]) == ["ja"] and list(df["matched_snippet"]) == ["請求書"]
        lines = duck.search_text("ocr_result", "total invoice", json_path="$.lines[*].text")
        assert list(lines["matched_snippet"]) == ["Total INVOICE 2024"]


def test_regex_mode(lake):
    with DuckDBClient(lake.base) as duck:
        df = duck.search_text("ocr_result", r"\b20\d\d\b", json_path="$.words[*].text", mode="regex")
        assert list(df["matched_snippet"]) == ["2024"]
        assert len(duck.search_text("ocr_result", "invoice", mode="regex")) == 1  # case-sensitive
        assert len(duck.search_text("ocr_result", "(?i)invoice", mode="regex")) == 2
        with pytest.raises(ValueError, match="invalid regular expression"):
            duck.search_text("ocr_result", "(unclosed", mode="regex")


def test_search_rejects_non_text_column(lake):
    with DuckDBClient(lake.base) as duck:
        with pytest.raises(ValueError, match="text search needs a text"):
            duck.search_text("image_width", "1")


def test_empty_catalog_and_empty_selection(tmp_path, lake):
    with DuckDBClient(tmp_path / "empty") as duck:
        assert len(duck.retrieve_partitions()) == 0
        assert len(duck.retrieve_with_existing_cols()) == 0
        assert len(duck.sql("SELECT * FROM catalog")) == 0
    with DuckDBClient(lake.base) as duck:
        assert len(duck.retrieve_with_existing_cols(providers=[])) == 0
        assert len(duck.search_text("ocr_result", "zzz-not-there")) == 0


def test_sql_passthrough_with_params(lake):
    with DuckDBClient(lake.base) as duck:
        df = duck.sql("SELECT count(*) AS n FROM catalog WHERE lang = $lang", {"lang": "en"})
        assert int(df["n"][0]) == 3
        parts = duck.sql("SELECT sum(rows) AS n FROM partitions")
        assert int(parts["n"][0]) == 7


def test_client_accepts_duckdb_file_path(lake):
    from datalake_pipelines.core.catalog.refresh import refresh_duckdb

    refresh_duckdb(lake)
    with DuckDBClient(str(lake.duckdb_file)) as duck:
        assert duck.layout.base == lake.base
        assert int(duck.sql("SELECT count(*) AS n FROM hash_index")["n"][0]) == 0
        assert int(duck.sql("SELECT sum(rows) AS n FROM partitions")["n"][0]) == 7
        assert len(duck.retrieve_with_existing_cols(providers="globex")) == 1

"""Metadata of a ``catalog_partition`` materialization: what the run did, and what the partition now holds.

Figures carry units (``core/figures.py``): ``bytes_stored`` stays an int for Dagster's plots with
``bytes_stored_human`` beside it; the dedup ratio is ``dedup_ratio_pct``, a percentage with two decimals.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from ...core.catalog.parts import iter_partition_batches, partition_files, read_partition_metadata
from ...core.figures import format_bytes, percent
from ...core.ingest.processing import BatchResult
from ...core.lake.layout import LakeLayout, PartitionRef
from ...core.preview.columns import file_columns, preview_columns, preview_records
from ...lib.asset_info import column_description

PREVIEW_ROWS = 5


def batch_lineage_table(results: list[BatchResult], run_id: str | None) -> dg.TableMetadataValue:
    """``batch_lineage``: one row per batch of the run linking it to its source and this run (batch id, status,
    method, source file or URL, its sha256, who staged it, run id); ``datalake lineage <batch>`` says more."""
    columns = ("batch_id", "status", "method", "source", "sha256", "staged_by", "run_id")
    records = []
    for r in results:
        src = r.source or {}
        records.append(
            dg.TableRecord(
                {
                    "batch_id": r.job_id,
                    "status": r.status,
                    "method": str(src.get("method") or ""),
                    "source": str(src.get("url") or src.get("path") or src.get("kind") or ""),
                    "sha256": str(src.get("sha256") or ""),
                    "staged_by": f"{src.get('user') or '?'}@{src.get('host') or '?'}" if src else "",
                    "run_id": run_id or "",
                }
            )
        )
    schema = dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns])
    return dg.MetadataValue.table(records=records, schema=schema)


def run_metadata(results: list[BatchResult], run_id: str | None = None) -> dict[str, Any]:
    """What the run's batches did: rows added/duplicate/rejected, images new/deduplicated, bytes stored, and
    ``batch_lineage`` (each batch's source and this run: :func:`batch_lineage_table`)."""
    images_new = sum(r.images_new for r in results)
    images_dedup = sum(r.images_deduplicated for r in results)
    stored = sum(r.bytes_stored for r in results)
    return {
        "batches": dg.MetadataValue.json([r.job_id for r in results]),
        "rows_added": sum(r.rows_added for r in results),
        "rows_duplicate": sum(r.rows_duplicate for r in results),
        "rows_rejected": sum(r.rows_rejected for r in results),
        "images_new": images_new,
        "images_deduplicated": images_dedup,
        "dedup_ratio_pct": percent(images_dedup, images_new + images_dedup),
        "bytes_stored": stored,
        "bytes_stored_human": format_bytes(stored),
        "files_skipped": sum(r.staging_report.get("skipped_count", 0) for r in results),  # listed in job records
        "batch_lineage": batch_lineage_table(results, run_id),
    }


def _described(name: str, files: set[str], meta_fields: set[str], promoted: list[str]) -> str:
    own = column_description(name, files)
    if own is None:
        own = "Meta field of the upload: one value per batch." if name in meta_fields else "A column of the data."
    return own + (" Promoted: " + "; ".join(promoted) + "." if promoted else "")


def column_schema(schema: pa.Schema, doc: Mapping[str, Any]) -> dg.TableSchema:
    """``dagster/column_schema``: every column of the partition's contract, with its type, nullability and a
    description (the lake's own columns say what they hold; each promotion, e.g. ``k: int32 -> int64 (batch
    <job>)``, is named). ``doc`` is the partition's ``_metadata.json``."""
    promoted: dict[str, list[str]] = {}
    for p in doc.get("contract", {}).get("promotions", []):
        top = p["column"].split(".")[0].split("[")[0]
        promoted.setdefault(top, []).append(f"{p['column']}: {p['from']} -> {p['to']} (batch {p.get('job_id')})")
    files = set(file_columns(schema.names))
    meta_fields = set(doc.get("meta") or {})
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                f.name,
                str(f.type),
                description=_described(f.name, files, meta_fields, promoted.get(f.name, [])),
                constraints=dg.TableColumnConstraints(nullable=f.nullable),
            )
            for f in schema
        ]
    )


def preview_table(table: pa.Table, doc: Mapping[str, Any]) -> dg.TableMetadataValue:
    """The first rows of ``table`` as a Dagster table: ids, labels and text first, hashes last (at most 24
    columns, long values cut: ``core/preview/columns.py``)."""
    columns = preview_columns(table.schema.names)
    schema = column_schema(table.schema, doc)
    by_name = {c.name: c for c in schema.columns}
    records = preview_records(table.select(columns).to_pylist(), columns)
    return dg.MetadataValue.table(
        records=[dg.TableRecord(r) for r in records],
        schema=dg.TableSchema(columns=[by_name[c] for c in columns]),
    )


def partition_metadata(
    layout: LakeLayout, ref: PartitionRef, shown_path: str | None = None, doc: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``catalog_path``, ``part_files``, ``dagster/row_count``, ``dagster/column_schema``, ``schema_promotions``
    and ``preview`` of partition ``ref`` as ``layout`` holds it; ``doc`` is its ``_metadata.json`` (read when
    not given)."""
    doc = read_partition_metadata(layout, ref) if doc is None else doc
    files = partition_files(layout, ref)
    meta: dict[str, Any] = {
        "catalog_path": dg.MetadataValue.path(shown_path or str(layout.partition_dir(ref))),
        "part_files": len(files),
        "dagster/row_count": sum(pq.ParquetFile(f).metadata.num_rows for f in files),
    }
    first = next(iter_partition_batches(layout, ref, batch_size=PREVIEW_ROWS), None) if files else None
    if first is not None:  # rows are read in the partition's schema contract (see core/schema_contract.py)
        meta["dagster/column_schema"] = column_schema(first.schema, doc)
        meta["schema_promotions"] = dg.MetadataValue.json(doc.get("contract", {}).get("promotions", []))
        meta["preview"] = preview_table(first.slice(0, PREVIEW_ROWS), doc)
    return meta

"""``catalog_partition``: one catalog partition, materialized from the batches claimed for it."""

from typing import Any

import dagster as dg
import pyarrow.parquet as pq
from dagster_aws.s3 import S3Resource

from ...core.catalog.parts import iter_partition_batches, partition_files, read_partition_metadata
from ...core.ingest.processing import BatchResult
from ...core.lake.layout import PartitionRef
from ...core.preview.markdown import markdown_table
from ...lib.partitions import JOB_IDS_TAG, LakePartitionKey, lake_partitions
from ...lib.resources import LakeResource
from .preview import preview_metadata

PREVIEW_ROWS = 5


def run_job_ids(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> list[str]:
    raw = context.run.tags.get(JOB_IDS_TAG, "")
    return [j for j in raw.split(",") if j]


@dg.asset(
    partitions_def=lake_partitions,
    group_name="ingest",
    kinds={"parquet", "python"},
    description=(
        "One catalog partition (provider/dataset/task/variant). A run started by the staging sensor processes "
        "the batches named in its `datalake/job_ids` tag; a run without it (UI, backfill, CLI) rebuilds the "
        "partition from its stored part files: compaction and re-validation, idempotently."
    ),
)
def catalog_partition(context: dg.AssetExecutionContext, lake: LakeResource, s3: S3Resource) -> dg.MaterializeResult:
    ref = LakePartitionKey.parse(context.partition_key).ref
    job_ids = run_job_ids(context)
    the_lake = lake.lake(s3)
    catalog_uri = the_lake.catalog_uri(ref)
    # The metadata is read from the view the run worked in (on S3 a work lake holding the whole partition).
    with the_lake.work_view((job_ids or [f"rebuild-{ref.provider}"])[0]) as view:
        if not job_ids:
            rebuild = the_lake.rebuild_partition(ref, lake.batch_size, view)
            context.log.info(f"rebuilt {ref.key}: {rebuild.rows} rows from {rebuild.files_before} files")
            return dg.MaterializeResult(
                metadata={
                    "mode": "rebuild",
                    "files_compacted": rebuild.files_before,
                    "duplicates_dropped": rebuild.duplicates_dropped,
                    **partition_metadata(view, ref, catalog_uri),
                    **preview_metadata(view, ref, None, context.log),
                }
            )
        run_info = {"run_id": context.run.run_id, "step": "catalog_partition"}
        results = the_lake.process(job_ids, lake.process_options(), run_info, view, context.log)
        metadata = {**run_metadata(results), **partition_metadata(view, ref, catalog_uri)}
        metadata.update(preview_metadata(view, ref, results, context.log))
    failed = [r for r in results if r.status != "done"]
    if failed:
        raise dg.Failure(
            description="; ".join(f"batch {r.job_id} failed: {r.error}" for r in failed)
            + " (originals kept in staging/failed/<job_id>/ with error.json)",
            metadata=metadata,
        )
    return dg.MaterializeResult(metadata=metadata)


def run_metadata(results: list[BatchResult]) -> dict[str, Any]:
    images_new = sum(r.images_new for r in results)
    images_dedup = sum(r.images_deduplicated for r in results)
    images = images_new + images_dedup
    rejected = [{"job_id": r.job_id, **x} for r in results for x in r.rejected][:50]
    return {
        "batches": dg.MetadataValue.json([r.job_id for r in results]),
        "rows_added": sum(r.rows_added for r in results),
        "rows_duplicate": sum(r.rows_duplicate for r in results),
        "rows_rejected": sum(r.rows_rejected for r in results),
        "images_new": images_new,
        "images_deduplicated": images_dedup,
        "dedup_ratio": round(images_dedup / images, 4) if images else 0.0,
        "bytes_stored": sum(r.bytes_stored for r in results),
        "files_skipped": sum(r.staging_report.get("skipped_count", 0) for r in results),  # listed in job records
        "rejected_files": dg.MetadataValue.md(_md_table(rejected, ["job_id", "row", "column", "source", "reason"]))
        if rejected
        else "none",
    }


def partition_metadata(layout, ref: PartitionRef, shown_path: str | None = None) -> dict[str, Any]:
    files = partition_files(layout, ref)
    meta: dict[str, Any] = {
        "catalog_path": dg.MetadataValue.path(shown_path or str(layout.partition_dir(ref))),
        "part_files": len(files),
    }
    if not files:
        meta["dagster/row_count"] = 0
        return meta
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    meta["dagster/row_count"] = rows
    first = next(iter_partition_batches(layout, ref, batch_size=PREVIEW_ROWS), None)
    if first is not None:
        schema = first.schema  # rows are read in the partition's schema contract (see core/schema_contract.py)
        promotions = read_partition_metadata(layout, ref).get("contract", {}).get("promotions", [])
        history: dict[str, list[str]] = {}
        for p in promotions:
            history.setdefault(p["column"].split(".")[0].split("[")[0], []).append(
                f"{p['column']}: {p['from']} -> {p['to']} (batch {p.get('job_id')})"
            )
        meta["dagster/column_schema"] = dg.TableSchema(
            columns=[
                dg.TableColumn(
                    f.name,
                    str(f.type),
                    description="schema contract; promoted " + "; ".join(history[f.name])
                    if f.name in history
                    else "schema contract",
                    constraints=dg.TableColumnConstraints(nullable=f.nullable),
                )
                for f in schema
            ]
        )
        meta["schema_promotions"] = dg.MetadataValue.json(promotions)
        preview = first.slice(0, PREVIEW_ROWS).to_pylist()
        meta["preview"] = dg.MetadataValue.md(_md_table(preview, schema.names))
    return meta


def _md_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    return markdown_table(rows, columns)  # escaped, one line per cell, at most 12 columns (core/preview/markdown.py)

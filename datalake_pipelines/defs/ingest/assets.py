"""``catalog_partition``: one catalog partition, materialized from the batches claimed for it.

A graph-backed asset: ``plan_chunks`` splits the run's files into chunks, one ``store_chunk`` step each (dynamic
mapping: on any worker of the run's executor), and ``commit`` writes the partition, the one writer
(``core/ingest/chunks.py``). A small run or a rebuild plans no chunk and is plan + commit. Steps pass each other
only small picklable values; what a chunk stored is recorded in the lake.

Its checks run in the commit step (``check_specs``, ``checks.py``); its metadata says what the run did
(``metadata.py``), which files it rejected and which the partition ever rejected (``rejections.py``), and shows
a contact sheet and profile (``preview.py``).
"""

import time
from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource

from ...core.catalog.parts import read_partition_metadata
from ...core.ingest.chunks import Chunk
from ...lib.asset_info import asset_info
from ...lib.partitions import JOB_IDS_TAG, LakePartitionKey, lake_partitions
from ...lib.resources import LakeResource
from ...settings import load as load_settings
from .checks import CHECK_OUTS, CHECK_SPECS, integrity_checks
from .metadata import partition_metadata, run_metadata
from .preview import preview_metadata
from .rejections import log_rejections, rejection_check, rejection_metadata, run_rejections


def run_job_ids(context: dg.OpExecutionContext | dg.AssetCheckExecutionContext) -> list[str]:
    raw = context.run.tags.get(JOB_IDS_TAG, "")
    return [j for j in raw.split(",") if j]


# No s3 resource here: Dagster builds a resource's boto3 client for every step that asks for it (0.3-0.7 s), and
# this step runs in every ingest run; on an S3 lake it lists and reads through the lake's own client (the CLI's).
@dg.op(out=dg.DynamicOut(Chunk))
def plan_chunks(context: dg.OpExecutionContext, lake: LakeResource):
    """The run's chunk steps: the files its batches reference, ``DATALAKE_CHUNK_FILES`` per chunk; none for a
    rebuild or when they fit in one chunk (the commit then stores them itself)."""
    job_ids = run_job_ids(context)
    chunks = lake.lake().plan_chunks(job_ids, load_settings().chunk_files) if job_ids else []
    if chunks:
        context.log.info(f"{sum(c.files for c in chunks)} files in {len(chunks)} chunks")
    for chunk in chunks:
        yield dg.DynamicOutput(chunk, mapping_key=chunk.mapping_key)


# A worker that died mid-chunk is retried; any other failure is logged and left to the commit, which stores every
# file no chunk recorded: a chunk never fails the run.
@dg.op(retry_policy=dg.RetryPolicy(max_retries=2, delay=2))
def store_chunk(context: dg.OpExecutionContext, lake: LakeResource, s3: S3Resource, chunk: Chunk) -> dict[str, Any]:
    """Hashes, checks and publishes one chunk's files and records what it did (idempotent, on any worker)."""
    try:
        summary = lake.lake(s3).store_chunk(chunk, lake.process_options())
    except Exception as exc:  # noqa: BLE001 - the commit stores what this chunk did not record
        context.log.warning(f"chunk {chunk.n} of batch {chunk.job_id} not stored ({type(exc).__name__}: {exc})")
        return {"job_id": chunk.job_id, "chunk": chunk.n, "error": str(exc)}
    context.log.info(f"chunk {chunk.n} of batch {chunk.job_id}: {summary['files']} files, {summary['new']} new")
    return summary


@dg.op(out={"result": dg.Out(dg.Nothing), **{name: dg.Out(dg.Nothing, is_required=False) for name in CHECK_OUTS}})
def commit(context: dg.OpExecutionContext, lake: LakeResource, s3: S3Resource, stored: list[dict[str, Any]]):
    """Writes the partition (every batch's rows, its part file and index rows: the one writer), reusing what the
    chunk steps stored; then its metadata, previews and checks."""
    ref = LakePartitionKey.parse(context.partition_key).ref
    job_ids = run_job_ids(context)
    the_lake = lake.lake(s3)
    seconds = Stopwatch()
    # Everything is read from the view the run worked in (on S3 a work lake, filled with the whole partition).
    with the_lake.work_view((job_ids or [f"rebuild-{ref.provider}"])[0]) as view:
        metadata: dict[str, Any]
        if job_ids:
            run_info = {"run_id": context.run.run_id, "step": "catalog_partition"}
            chunks = bool(stored)  # the chunk steps stored files: reuse their records (core/ingest/chunks.py)
            results = the_lake.process(job_ids, lake.process_options(), run_info, view, context.log, chunks)
            the_lake.fill_view(view, ref)  # on S3 processing fetched only _metadata.json; the reports read every row
            metadata = {"mode": "ingest", "chunks": len(stored), **run_metadata(results, context.run.run_id)}
        else:
            results = []
            rebuild = the_lake.rebuild_partition(ref, lake.batch_size, view)
            context.log.info(f"rebuilt {ref.key}: {rebuild.rows} rows from {rebuild.files_before} files")
            metadata = {
                "mode": "rebuild",
                "files_compacted": rebuild.files_before,
                "duplicates_dropped": rebuild.duplicates_dropped,
            }
        seconds.lap("process" if job_ids else "rebuild")
        # the catalog version this materialization recorded: as_of=<it> reads the catalog as it was then
        published = [r.catalog_version for r in results if r.catalog_version] if job_ids else [rebuild.catalog_version]
        if published and published[-1]:
            metadata["catalog_version"] = dg.MetadataValue.text(published[-1])
        rejected = run_rejections(results)
        log_rejections(context.log, rejected)
        doc = read_partition_metadata(view, ref)
        metadata.update(rejection_metadata(rejected, doc, the_lake.base))
        metadata.update(partition_metadata(view, ref, the_lake.catalog_uri(ref), doc))
        seconds.lap("metadata")
        metadata.update(preview_metadata(view, ref, results if job_ids else None, context.log))
        seconds.lap("preview")
        failed = [r for r in results if r.status != "done"]
        if failed:
            # A summary first, each batch's reason on a line of its own: a terminal shows the first line only
            # (lib/terminal_log.py), after the batch's own log line that already gave its reason.
            raise dg.Failure(
                description=f"{len(failed)} of {len(results)} batch(es) failed; originals kept in "
                "staging/failed/<job_id>/ with error.json\n"
                + "\n".join(f"batch {r.job_id} failed: {r.error}" for r in failed),
                metadata=metadata,
            )
        checks = [rejection_check(rejected, doc), *integrity_checks(the_lake, view, ref, job_ids or None)]
        seconds.lap("checks")
    metadata["step_seconds"] = dg.MetadataValue.json(seconds.laps)
    yield dg.Output(None, "result", metadata=metadata)
    yield from checks


@dg.graph_asset(
    key="catalog_partition",
    partitions_def=lake_partitions,
    group_name="ingest",
    kinds={"parquet", "python"},
    check_specs=CHECK_SPECS,
    description=(
        "One catalog partition (provider/dataset/task/variant). A run started by the staging sensor processes "
        "the batches named in its `datalake/job_ids` tag; a run without it (UI, backfill, CLI) rebuilds the "
        "partition from its stored part files: compaction and re-validation, idempotently. Rejected files are "
        "listed in `rejected_files` (this run) and `rejection_history` (the partition's), and turn the "
        "`no_rejected_files` check into a warning."
    ),
    **asset_info().asset_kwargs(),
)
def catalog_partition():
    """plan_chunks -> store_chunk (one step per chunk, dynamic) -> commit, the partition's one writer."""
    outputs = commit(plan_chunks().map(store_chunk).collect())
    return dict(zip(["result", *CHECK_OUTS], outputs))


class Stopwatch:
    """Seconds spent in each part of the step (``step_seconds`` in the metadata: where a slow run went)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 3)
        self._last = now

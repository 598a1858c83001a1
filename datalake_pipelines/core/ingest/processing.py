"""Processing one claimed batch: validate, hash, deduplicate, store assets, write the catalog part.

Bad rows are quarantined, not fatal: a row whose file is unusable (corrupt, truncated, a bomb,
missing, outside the batch) is dropped from the catalog and kept, with its files and a reason, in
``staging/failed/<job_id>-rejected/`` (a re-submittable batch). The whole batch fails instead when the
share of rejected rows exceeds ``max_reject_ratio`` (default 0.5), when nothing could be ingested, or
when the batch itself is invalid (manifest, meta, Parquet). A failed batch moves whole to
``staging/failed/<job_id>/`` with ``error.json``; no catalog part and no half-written asset remain.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ...settings import load as load_settings
from ..arrow.cast import cast_table
from ..arrow.column_names import check_column_names
from ..arrow.normalize import normalize_batch, normalize_schema
from ..catalog.parts import (
    ROW_HASH,
    PartWriter,
    conform_parts,
    contract_differs,
    partition_contract,
    record_batch_in_partition,
)
from ..catalog.schema_contract import merge_contract, part_schema
from ..errors import BatchError, DatalakeError, ValidationError
from ..lake.changes import partition_writer
from ..lake.layout import BATCH_DATA, LakeLayout, PartitionRef
from ..lake.queue import discard_batch, fail_batch, purge_discarded, scan_pending
from ..lake.schema import SchemaConfig, load_schema
from ..storage.files import utc_now, utc_now_iso, write_json_atomic
from .asset_store import StoredFile, StoreOptions, known_references, lacks_phash, store_files
from .batch_result import BatchResult
from .catalog_rows import catalog_rows, catalog_schema
from .file_accounting import FILE_COLUMN, IMAGE_COLUMN, regular_files, scan_folder
from .first_store import settle_new
from .hand_drop import keep_unreferenced, resolve_hand_drop_columns
from .hash_index import HashIndex
from .images import max_pixels_from_env
from .index_store import open_hash_index
from .known_content import manifest_hashes
from .manifest import BatchManifest, load_manifest
from .pg_rows import open_row_index
from .provenance import batch_source
from .quarantine import quarantine_rows
from .references import BatchFiles, absent_files
from .rejections import record_rejections
from .row_identity import RowIdentity
from .row_index import BatchSeen, LocalRowDedup, RowDedup

STORE_CHUNK = 64  # files per worker task: amortizes the pool overhead and batches the index lookup


@dataclass
class ProcessOptions:
    num_proc: int = field(default_factory=lambda: load_settings().num_proc)  # $DATALAKE_NUM_PROC or CPU count
    batch_size: int = 1000
    max_reject_ratio: float = 0.5
    max_pixels: int = field(default_factory=max_pixels_from_env)  # $DATALAKE_MAX_IMAGE_PIXELS or 89,478,485
    optimize_images: bool = False
    full_decode: bool = False

    def store_options(self) -> StoreOptions:
        return StoreOptions(self.max_pixels, self.optimize_images, self.full_decode)


def claim_batch(layout: LakeLayout, job_id: str) -> bool:
    """Atomically move ``pending/<job_id>`` to ``processing/<job_id>``; False if someone else got it."""
    try:
        os.rename(layout.pending_batch(job_id), layout.processing_batch(job_id))
    except (FileNotFoundError, OSError):
        return False
    return True


def write_job_record(layout: LakeLayout, result: BatchResult, extra: dict[str, Any] | None = None) -> None:
    write_json_atomic(layout.job_record(result.job_id), {**result.to_json(), **(extra or {})})


class BatchProcessor:
    """Runs the processing steps for one batch already in ``staging/processing/<job_id>``."""

    def __init__(
        self,
        layout: LakeLayout,
        options: ProcessOptions,
        schema: SchemaConfig | None = None,
        index: HashIndex | None = None,
        rows: RowDedup | None = None,
        fetch_parts: Callable[[PartitionRef], object] | None = None,
        fetch_files: Callable[[list[str]], object] | None = None,
    ):
        # rows: the row index (default: the lake's own); fetch_parts: brings older parts into an S3 work lake;
        # fetch_files: brings staged files a chunk stored (not downloaded) into it, for the quarantine
        self.layout = layout
        self.options = options
        self.schema = schema or load_schema(layout)
        self.index = index or open_hash_index(layout)
        self.rows: RowDedup = rows or LocalRowDedup(layout, open_row_index(self.index))
        self.fetch_parts = fetch_parts
        self.fetch_files = fetch_files
        self.precomputed: Mapping[tuple[str, str], StoredFile] = {}
        self.store_options = options.store_options()
        purge_discarded(layout)

    # entry point -----------------------------------------------------------------
    def process(
        self,
        job_id: str,
        run_info: dict[str, Any] | None = None,
        precomputed: Mapping[tuple[str, str], StoredFile] | None = None,
    ) -> BatchResult:
        """``precomputed``: (kind, staged path) -> what a chunk step stored (``chunks.py``), reused as it is."""
        started = time.perf_counter()
        self.precomputed = precomputed or {}
        result = BatchResult(job_id)
        batch_dir = self.layout.processing_batch(job_id)
        writer: PartWriter | None = None
        try:
            if not batch_dir.is_dir():
                raise BatchError(f"batch {job_id} is not in staging/processing")
            manifest = load_manifest(batch_dir, job_id).validate(self.schema)
            result.partition = manifest.partition.key
            result.source = batch_source(batch_dir, manifest)
            with partition_writer(self.layout, manifest.partition):
                writer = PartWriter(self.layout.part_file(manifest.partition, job_id))
                rejected_rows = self._ingest(batch_dir, manifest, writer, result)
                self._check_thresholds(result)
                published = writer.commit()
                writer = None
                result.part_file = str(published) if published else None
                if self.fetch_parts and published and contract_differs(self.layout, manifest.partition, self._contract):
                    self.fetch_parts(manifest.partition)  # an S3 work lake held only _metadata.json and new parts
                record_batch_in_partition(
                    self.layout,
                    manifest.partition,
                    job_id,
                    result.rows_added,
                    self._contract if published else None,
                    manifest.to_json(),
                    [{"job_id": job_id, **p} for p in self._promotions] if published else [],
                )
                # older parts take any widened type (also after a crash here): one type per column
                conformed = (
                    conform_parts(self.layout, manifest.partition, self._contract, self.options.batch_size)
                    if published
                    else []
                )
                result.conformed_parts = [str(p) for p in conformed]
                # after the part's rename, never before: see row_index (a crash before this is caught on next use)
                self.rows.committed(manifest.partition, conformed)
                if rejected_rows:  # quarantined, and named in the partition's history (still under the lock)
                    if self.fetch_files is not None:
                        self.fetch_files(absent_files(batch_dir, self._files, rejected_rows, manifest))
                    quarantine = quarantine_rows(self.layout, batch_dir, manifest, rejected_rows, result)
                    result.rejected_dir = str(quarantine)
                    record_rejections(self.layout, manifest.partition, job_id, result.rejected, quarantine, run_info)
            if manifest.hand_drop:  # nothing a user wrote is deleted with the batch (core/hand_drop.py)
                kept = keep_unreferenced(
                    self.layout,
                    batch_dir,
                    job_id,
                    self._referenced,
                    result.staging_report.get("skipped", []),
                    (batch_dir / BATCH_DATA).exists(),
                )
                if kept:
                    result.staging_report = {**result.staging_report, "kept": kept}
            discard_batch(batch_dir)
            result.status = "done"
        except Exception as exc:  # noqa: BLE001 - every failure must land the batch in failed/
            if writer is not None:
                writer.abort()
            result.status = "failed"
            result.error = str(exc) if isinstance(exc, DatalakeError) else f"{type(exc).__name__}: {exc}"
            if result.rows_added:  # counted while ingesting, but the part file was never published
                result.error += f" (nothing was added to the catalog; {result.rows_added} row(s) would have been)"
            result.rows_added = 0
            details = exc.details if isinstance(exc, BatchError) else {}
            failed_dir = fail_batch(
                self.layout,
                job_id,
                {
                    "error": result.error,
                    "error_type": type(exc).__name__,
                    "partition": result.partition,
                    "rejected": result.rejected,
                    **details,
                    **(run_info or {}),
                },
            )
            result.rejected_dir = str(failed_dir)
        result.finished_at = utc_now_iso()
        result.seconds = round(time.perf_counter() - started, 3)
        write_job_record(self.layout, result, run_info)
        return result

    # steps -----------------------------------------------------------------------
    def _source(self, batch_dir: Path, manifest: BatchManifest) -> tuple[pa.Schema, Any]:
        if manifest.hand_drop and not (batch_dir / BATCH_DATA).exists():
            scan = scan_folder(batch_dir, hand_drop=True, workers=self.options.num_proc)
            table = scan.table()
            manifest.image_columns = manifest.image_columns or [IMAGE_COLUMN]
            manifest.file_columns = manifest.file_columns or [FILE_COLUMN]
            manifest.staging_report = {**scan.report(), "image_columns": {IMAGE_COLUMN: "identified by content"}}
            return table.schema, iter(table.to_batches(self.options.batch_size))
        data_path = batch_dir / BATCH_DATA
        if data_path.is_symlink() or not data_path.is_file():
            raise ValidationError(f"{data_path}: the batch has no {BATCH_DATA}")
        try:
            pf = pq.ParquetFile(data_path)
            schema = normalize_schema(pf.schema_arrow)  # a hand drop's data.parquet never passed through staging
            if manifest.hand_drop:  # its image columns by the upload rules, relative to the batch folder
                report = resolve_hand_drop_columns(data_path, batch_dir, manifest.image_columns or None)
                manifest.image_columns = list(report["image_columns"])
                manifest.staging_report = {**manifest.staging_report, **report}
        except (pa.ArrowException, OSError) as exc:
            raise ValidationError(f"{data_path}: malformed Parquet: {exc}") from None

        def batches():
            try:
                for batch in pf.iter_batches(batch_size=self.options.batch_size):
                    yield from normalize_batch(batch, schema).to_batches()
            except (pa.ArrowException, OSError) as exc:
                raise ValidationError(f"{data_path}: malformed Parquet: {exc}") from None

        return schema, batches()

    def _check_columns(self, schema: pa.Schema, manifest: BatchManifest) -> None:
        names = set(schema.names)
        missing = [c for c in manifest.image_columns + manifest.file_columns if c not in names]
        if missing:
            raise ValidationError(f"file columns {missing} are not in the data (columns: {sorted(names)})")
        check_column_names(
            schema, manifest.image_columns, manifest.file_columns, manifest.meta, f"batch {manifest.job_id}"
        )

    def _check_contract(self, schema: pa.Schema, manifest: BatchManifest, writer: PartWriter) -> None:
        """Refuse, before any file is stored, a batch whose types the partition's contract cannot take."""
        contract = partition_contract(self.layout, manifest.partition, exclude=writer.target)
        self._contract, self._promotions = merge_contract(
            contract, catalog_schema(schema, manifest), manifest.partition.key
        )

    def _ingest(
        self, batch_dir: Path, manifest: BatchManifest, writer: PartWriter, result: BatchResult
    ) -> list[pa.Table]:
        schema, batches = self._source(batch_dir, manifest)
        result.staging_report = manifest.staging_report  # file accounting and image columns, for the job record
        self._check_columns(schema, manifest)
        self._check_contract(schema, manifest, writer)
        self._identity = RowIdentity()  # occurrences of identical rows are counted batch-wide
        self._sources = {f.get("path"): f.get("source") for f in manifest.files if isinstance(f, dict)}
        self._hashes = manifest_hashes(manifest)  # the upload's hashes: known content needs no read (known_content)
        # with the files a chunk stored: an S3 work lake does not download them (they are in the batch's listing)
        self._files = BatchFiles(batch_dir, regular_files(batch_dir) | {rel for _kind, rel in self.precomputed})
        self._reused: set[str] = set()  # asset paths of the precomputed outcomes already given to a row
        self._referenced: set[str] = set()  # batch files some row names (kept with the rows or stored)
        self.rows.prepare(manifest.partition)
        seen = BatchSeen(self.rows, manifest.partition, writer.target.name)
        ingested_at = utc_now()
        rejected_tables: list[pa.Table] = []
        offset = 0
        workers = max(1, int(self.options.num_proc))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for record_batch in batches:
                table = pa.Table.from_batches([record_batch])
                out, rejected_idx = self._ingest_table(
                    table, offset, batch_dir, manifest, pool, seen, ingested_at, result
                )
                if out is not None and out.num_rows:
                    writer.write(out)
                if rejected_idx:
                    rejected_tables.append(table.take(rejected_idx))
                offset += table.num_rows
        if result.rows_in == 0:
            raise BatchError("empty batch: it has no rows (nothing to ingest)")
        return rejected_tables

    def _ingest_table(
        self,
        table: pa.Table,
        offset: int,
        batch_dir: Path,
        manifest: BatchManifest,
        pool: ThreadPoolExecutor,
        seen: BatchSeen,
        ingested_at: Any,
        result: BatchResult,
    ) -> tuple[pa.Table | None, list[int]]:
        n = table.num_rows
        result.rows_in += n
        kinds = {**{c: "file" for c in manifest.file_columns}, **{c: "image" for c in manifest.image_columns}}
        image_cols = list(kinds)
        stored: dict[str, list[StoredFile | None]] = {}
        errors: dict[int, list[dict[str, Any]]] = {}
        for col in image_cols:
            values = table.column(col).to_pylist()
            jobs: list[tuple[int, str]] = []
            refs: list[tuple[int, str]] = []  # (row, sha256) of content the upload found in the lake
            batch_root = str(batch_dir)
            outcomes: list[StoredFile | None] = [None] * n
            for i, value in enumerate(values):
                if value is None:
                    continue
                # content the upload found in the lake, unless a chunk step of this run stored the file (a chunk
                # writes no index row: only the commit does, so the lookup would miss it)
                if value in self._hashes and (kinds[col], value) not in self.precomputed:
                    refs.append((i, self._hashes[value]))
                    continue
                rel, reason = self._files.resolve(value)
                if rel is None:
                    errors.setdefault(i, []).append({"column": col, "file": value, "reason": reason})
                    continue
                self._referenced.add(rel)
                done = self.precomputed.get((kinds[col], rel))  # a chunk step stored it (ingest/chunks.py)
                if done is not None:  # a second file or reference with the content wrote nothing, as in store_files
                    again = done.entry is not None and done.entry.path in self._reused
                    outcomes[i] = replace(done, bytes_written=0) if again else done
                    self._reused.add(done.entry.path if done.entry is not None else rel)
                else:
                    jobs.append((i, os.path.join(batch_root, rel)))
            found = known_references(self.layout, self.index, [sha for _i, sha in refs], kinds[col], self.store_options)
            for (i, _sha), ref in zip(refs, found):
                # gone from the lake, or a hit whose pHash is wanted: from the staged file when the batch has it
                if values[i] in self._files.files and (ref.error or lacks_phash(ref, kinds[col], self.store_options)):
                    self._referenced.add(values[i])
                    jobs.append((i, os.path.join(batch_root, values[i])))
                else:
                    outcomes[i] = ref
            chunks = [jobs[k : k + STORE_CHUNK] for k in range(0, len(jobs), STORE_CHUNK)]
            futures = pool.map(
                lambda chunk, kind=kinds[col]: store_files(
                    self.layout,
                    self.index,
                    [path for _i, path in chunk],
                    manifest.provider,
                    manifest.dataset,
                    manifest.job_id,
                    kind,
                    self.store_options,
                ),
                chunks,
            )
            for (i, _path), stored_now in zip(jobs, (o for chunk in futures for o in chunk)):
                outcomes[i] = stored_now
            for i, done in enumerate(outcomes):
                if done is not None and done.error:
                    errors.setdefault(i, []).append(
                        {"column": col, "file": values[i], "reason": done.error, "sha256": done.sha256}
                    )
            settle_new(self.layout, self.index, outcomes)  # before the rows: a lost race takes the winner's asset
            stored[col] = outcomes
        for i, problems in sorted(errors.items()):
            for problem in problems:
                source = self._sources.get(problem["file"])
                result.rejected.append({"row": offset + i, **problem, **({"source": source} if source else {})})
        # Count image outcomes only for rows that are kept.
        keep_idx = [i for i in range(n) if i not in errors]
        for col in image_cols:
            for i in keep_idx:
                kept = stored[col][i]
                if kept is None:
                    continue
                if kept.new and kept.bytes_written:
                    result.images_new += 1
                    result.bytes_stored += kept.bytes_written
                else:
                    result.images_deduplicated += 1
        result.rows_rejected += len(errors)
        if not keep_idx:
            return None, sorted(errors)
        out = catalog_rows(table, keep_idx, stored, manifest, ingested_at, self._identity)
        target = part_schema(out.schema, self._contract)
        if not out.schema.equals(target):
            out = cast_table(out, target)  # a promotion the contract recorded (int32 -> int64, ...)
        # Each occurrence of a content has its own row_hash: a hit means the row is already in the partition.
        hashes = out.column(ROW_HASH).to_pylist()
        known = seen.lookup(hashes)
        fresh = []
        for j, h in enumerate(hashes):
            if h in known:
                result.rows_duplicate += 1
                continue
            known.add(h)
            seen.add(h)
            fresh.append(j)
        result.rows_added += len(fresh)
        return (out.take(pa.array(fresh, pa.int64())) if len(fresh) != out.num_rows else out), sorted(errors)

    def _check_thresholds(self, result: BatchResult) -> None:
        details = {"rejected": result.rejected}
        if result.rows_rejected and result.rows_rejected == result.rows_in:
            raise BatchError(f"every row of the batch was rejected ({result.rows_rejected} rows)", details)
        ratio = result.rows_rejected / result.rows_in if result.rows_in else 0.0
        if ratio > self.options.max_reject_ratio:
            raise BatchError(
                f"{result.rows_rejected} of {result.rows_in} rows rejected ({ratio:.0%}), above the "
                f"max_reject_ratio of {self.options.max_reject_ratio:.0%}",
                details,
            )


def process_batch(
    layout: LakeLayout, job_id: str, options: ProcessOptions | None = None, run_info: dict[str, Any] | None = None
) -> BatchResult:
    """Process one batch already claimed into ``staging/processing/<job_id>``."""
    return BatchProcessor(layout, options or ProcessOptions()).process(job_id, run_info)


def list_pending(layout: LakeLayout) -> list[str]:
    """Job ids in ``pending/`` in staging order (``created_at``, then job id: see :func:`queue.scan_pending`)."""
    return [b.job_id for b in scan_pending(layout)]


def process_pending(layout: LakeLayout, options: ProcessOptions | None = None) -> list[BatchResult]:
    """Claim and process every pending batch in-process (no Dagster), in staging order; one result per batch."""
    processor = BatchProcessor(layout, options or ProcessOptions())
    results = []
    for job_id in list_pending(layout):
        if claim_batch(layout, job_id):
            results.append(processor.process(job_id))
    return results

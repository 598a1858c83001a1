"""Processing one claimed batch: validate, hash, deduplicate, store assets, write the catalog part.

Bad rows are quarantined, not fatal: a row whose file is unusable (corrupt, truncated, a bomb,
missing, outside the batch) is dropped from the catalog and kept, with its files and a reason, in
``staging/failed/<job_id>-rejected/`` (a re-submittable batch). The whole batch fails instead when the
share of rejected rows exceeds ``max_reject_ratio`` (default 0.5), when nothing could be ingested, or
when the batch itself is invalid (manifest, meta, Parquet). A failed batch moves whole to
``staging/failed/<job_id>/`` with ``error.json``; no catalog part and no half-written asset remain.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .catalog import (
    BATCH_ID,
    INGESTED_AT,
    INGESTED_AT_TYPE,
    RESERVED_COLUMNS,
    ROW_HASH,
    PartWriter,
    existing_row_hashes,
    file_fields,
    image_fields,
    record_batch_in_partition,
)
from .errors import BatchError, DatalakeError, ValidationError
from .files import UnsafePathError, safe_join, utc_now, utc_now_iso, write_json_atomic
from .hash_index import HashIndex
from .images import DEFAULT_MAX_PIXELS
from .layout import BATCH_DATA, BATCH_MANIFEST, ERROR_FILE, LakeLayout
from .locks import exclusive_lock
from .manifest import BatchManifest, load_manifest
from .schema import SchemaConfig, load_schema
from .store import StoredFile, StoreOptions, store_files

HAND_DROP_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".mpo", ".tga", ".ppm", ".pgm", ".ico"}
)
STORE_CHUNK = 64  # files per worker task: amortizes the pool overhead and batches the index lookup
CONTROL_FILES = frozenset({BATCH_MANIFEST, BATCH_DATA, ERROR_FILE, "manifest.yaml"})


@dataclass
class ProcessOptions:
    num_proc: int = max(1, (os.cpu_count() or 2))
    batch_size: int = 1000
    max_reject_ratio: float = 0.5
    max_pixels: int = DEFAULT_MAX_PIXELS
    optimize_images: bool = False
    full_decode: bool = False


@dataclass
class BatchResult:
    """What processing one batch did; serialisable for job records, CLI output and Dagster metadata."""

    job_id: str
    partition: str | None = None
    status: str = "processing"
    rows_in: int = 0
    rows_added: int = 0
    rows_duplicate: int = 0
    rows_rejected: int = 0
    images_new: int = 0
    images_deduplicated: int = 0
    bytes_stored: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    part_file: str | None = None
    rejected_dir: str | None = None
    error: str | None = None
    started_at: str = field(default_factory=utc_now_iso)
    finished_at: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def claim_batch(layout: LakeLayout, job_id: str) -> bool:
    """Atomically move ``pending/<job_id>`` to ``processing/<job_id>``; False if someone else got it."""
    try:
        os.rename(layout.pending_batch(job_id), layout.processing_batch(job_id))
    except (FileNotFoundError, OSError):
        return False
    return True


def fail_batch(layout: LakeLayout, job_id: str, error: dict[str, Any]) -> Path:
    """Move a batch from ``processing/`` to ``failed/`` with ``error.json``; its files stay intact."""
    source = layout.processing_batch(job_id)
    target = layout.failed_batch(job_id)
    if target.exists():
        target = target.with_name(f"{job_id}-{utc_now():%Y%m%dT%H%M%S%f}")
    if source.exists():
        os.rename(source, target)
    else:
        target.mkdir(parents=True, exist_ok=True)
    write_json_atomic(target / ERROR_FILE, {"job_id": job_id, "failed_at": utc_now_iso(), **error})
    return target


def discard_batch(batch_dir: Path) -> None:
    """Remove a processed batch: an instant rename to a hidden name, the deletion in the background."""
    done = batch_dir.with_name(f".done-{batch_dir.name}-{uuid.uuid4().hex[:6]}")
    os.rename(batch_dir, done)
    threading.Thread(target=shutil.rmtree, args=(done,), kwargs={"ignore_errors": True}).start()


def purge_discarded(layout: LakeLayout) -> None:
    """Delete processed batches whose background deletion was interrupted (process killed)."""
    for path in layout.processing.glob(".done-*"):
        shutil.rmtree(path, ignore_errors=True)


def write_job_record(layout: LakeLayout, result: BatchResult, extra: dict[str, Any] | None = None) -> None:
    write_json_atomic(layout.job_record(result.job_id), {**result.to_json(), **(extra or {})})


def row_fingerprint(values: dict[str, Any]) -> str:
    """SHA-256 of a row's content (images by hash; batch bookkeeping excluded), for row dedup."""
    blob = json.dumps(values, sort_keys=True, ensure_ascii=False, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"sha256": hashlib.sha256(bytes(value)).hexdigest()}
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def regular_files(folder: Path) -> set[str]:
    """Relative paths of the regular files under ``folder``; symlinks (to files or folders) are left out."""
    found: set[str] = set()
    stack = [("", folder)]
    while stack:
        prefix, current = stack.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                rel = f"{prefix}{entry.name}"
                if entry.is_dir(follow_symlinks=False):
                    stack.append((f"{rel}/", Path(entry.path)))
                elif entry.is_file(follow_symlinks=False):
                    found.add(rel)
    return found


def hand_drop_table(batch_dir: Path) -> pa.Table:
    """Rows for a hand-dropped folder: one per image file (by extension), path relative to the batch."""
    paths = []
    for root, dirs, files in os.walk(batch_dir, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name in CONTROL_FILES:
                continue
            if Path(name).suffix.lower() in HAND_DROP_EXTENSIONS:
                paths.append(os.path.relpath(os.path.join(root, name), batch_dir))
    return pa.table({"image": pa.array(paths, pa.string()), "file_name": pa.array(paths, pa.string())})


class BatchProcessor:
    """Runs the processing steps for one batch already in ``staging/processing/<job_id>``."""

    def __init__(
        self,
        layout: LakeLayout,
        options: ProcessOptions,
        schema: SchemaConfig | None = None,
        index: HashIndex | None = None,
    ):
        self.layout = layout
        self.options = options
        self.schema = schema or load_schema(layout)
        self.index = index or HashIndex(layout.hash_index)
        self.store_options = StoreOptions(options.max_pixels, options.optimize_images, options.full_decode)
        purge_discarded(layout)

    # entry point -----------------------------------------------------------------
    def process(self, job_id: str, run_info: dict[str, Any] | None = None) -> BatchResult:
        started = time.perf_counter()
        result = BatchResult(job_id)
        batch_dir = self.layout.processing_batch(job_id)
        writer: PartWriter | None = None
        try:
            if not batch_dir.is_dir():
                raise BatchError(f"batch {job_id} is not in staging/processing")
            manifest = load_manifest(batch_dir, job_id).validate(self.schema)
            result.partition = manifest.partition.key
            with exclusive_lock(self.layout.partition_lock(manifest.partition)):
                writer = PartWriter(self.layout.part_file(manifest.partition, job_id))
                rejected_rows = self._ingest(batch_dir, manifest, writer, result)
                self._check_thresholds(result)
                published = writer.commit()
                writer = None
                result.part_file = str(published) if published else None
                record_batch_in_partition(
                    self.layout,
                    manifest.partition,
                    job_id,
                    result.rows_added,
                    _schema_of(published),
                    manifest.to_json(),
                )
            if rejected_rows:
                result.rejected_dir = str(self._quarantine(batch_dir, manifest, rejected_rows, result))
            discard_batch(batch_dir)
            result.status = "done"
        except Exception as exc:  # noqa: BLE001 - every failure must land the batch in failed/
            if writer is not None:
                writer.abort()
            result.status = "failed"
            result.error = str(exc) if isinstance(exc, DatalakeError) else f"{type(exc).__name__}: {exc}"
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
            table = hand_drop_table(batch_dir)
            if not manifest.image_columns:
                manifest.image_columns = ["image"]
            return table.schema, iter(table.to_batches(self.options.batch_size))
        data_path = batch_dir / BATCH_DATA
        if data_path.is_symlink() or not data_path.is_file():
            raise ValidationError(f"{data_path}: the batch has no {BATCH_DATA}")
        try:
            pf = pq.ParquetFile(data_path)
            schema = pf.schema_arrow
        except (pa.ArrowException, OSError) as exc:
            raise ValidationError(f"{data_path}: malformed Parquet: {exc}") from None

        def batches():
            try:
                yield from pf.iter_batches(batch_size=self.options.batch_size)
            except (pa.ArrowException, OSError) as exc:
                raise ValidationError(f"{data_path}: malformed Parquet: {exc}") from None

        return schema, batches()

    def _check_columns(self, schema: pa.Schema, manifest: BatchManifest) -> None:
        names = set(schema.names)
        missing = [c for c in manifest.image_columns + manifest.file_columns if c not in names]
        if missing:
            raise ValidationError(f"file columns {missing} are not in the data (columns: {sorted(names)})")
        generated = {f.name for c in manifest.image_columns for f in image_fields(c)[1:]}
        generated |= {f.name for c in manifest.file_columns for f in file_fields(c)[1:]}
        clash = sorted((names & RESERVED_COLUMNS) | (names & generated) | (names & set(manifest.meta)))
        if clash:
            raise ValidationError(
                f"columns {clash} clash with names the catalog reserves (partition levels, batch_id, ingested_at, "
                "row_hash, <image>_sha256/_width/_height/_format/_mode/_orientation, meta fields); rename them"
            )

    def _ingest(
        self, batch_dir: Path, manifest: BatchManifest, writer: PartWriter, result: BatchResult
    ) -> list[pa.Table]:
        schema, batches = self._source(batch_dir, manifest)
        self._check_columns(schema, manifest)
        self._sources = {f.get("path"): f.get("source") for f in manifest.files if isinstance(f, dict)}
        self._batch_files = regular_files(batch_dir)
        seen = existing_row_hashes(self.layout, manifest.partition, exclude=writer.target)
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
        seen: set[str],
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
            batch_root = str(batch_dir)
            outcomes: list[StoredFile | None] = [None] * n
            for i, value in enumerate(values):
                if value is None:
                    continue
                if value in self._batch_files:  # a regular file inside the batch, reached without symlinks
                    jobs.append((i, os.path.join(batch_root, value)))
                    continue
                try:
                    path = safe_join(batch_dir, value)
                    if os.path.relpath(path, batch_dir) in self._batch_files:  # e.g. "./files/a.jpg"
                        jobs.append((i, str(path)))
                        continue
                    reason = f"file {value!r} is missing from the batch"
                except UnsafePathError as exc:
                    reason = str(exc)
                errors.setdefault(i, []).append({"column": col, "file": value, "reason": reason})
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
            for (i, _path), outcome in zip(jobs, (o for chunk in futures for o in chunk)):
                outcomes[i] = outcome
                if outcome.error:
                    errors.setdefault(i, []).append(
                        {"column": col, "file": values[i], "reason": outcome.error, "sha256": outcome.sha256}
                    )
            new_entries = [o.entry for o in outcomes if o is not None and o.new and o.entry is not None]
            self.index.add_many(new_entries)
            stored[col] = outcomes
        for i, problems in sorted(errors.items()):
            for problem in problems:
                source = self._sources.get(problem["file"])
                result.rejected.append({"row": offset + i, **problem, **({"source": source} if source else {})})
        # Count image outcomes only for rows that are kept.
        keep_idx = [i for i in range(n) if i not in errors]
        for col in image_cols:
            for i in keep_idx:
                outcome = stored[col][i]
                if outcome is None:
                    continue
                if outcome.new and outcome.bytes_written:
                    result.images_new += 1
                    result.bytes_stored += outcome.bytes_written
                else:
                    result.images_deduplicated += 1
        result.rows_rejected += len(errors)
        if not keep_idx:
            return None, sorted(errors)
        out = self._catalog_rows(table, keep_idx, stored, manifest, ingested_at)
        hashes = out.column(ROW_HASH).to_pylist()
        fresh = []
        for j, h in enumerate(hashes):
            if h in seen:
                result.rows_duplicate += 1
                continue
            seen.add(h)
            fresh.append(j)
        result.rows_added += len(fresh)
        return (out.take(pa.array(fresh, pa.int64())) if len(fresh) != out.num_rows else out), sorted(errors)

    def _catalog_rows(
        self,
        table: pa.Table,
        keep_idx: list[int],
        stored: dict[str, list[StoredFile | None]],
        manifest: BatchManifest,
        ingested_at: Any,
    ) -> pa.Table:
        kept = table.take(keep_idx)
        columns: dict[str, pa.Array] = {}
        fields: list[pa.Field] = []
        content: list[dict[str, Any]] = [{} for _ in keep_idx]
        for fld in table.schema:
            if fld.name in stored:
                entries = [stored[fld.name][i] for i in keep_idx]
                values = [
                    [e.entry.path if e else None for e in entries],
                    [e.entry.stored_sha256 if e else None for e in entries],
                ]
                if fld.name in manifest.file_columns:
                    img_fields = file_fields(fld.name)
                    values.append([e.entry.size if e else None for e in entries])
                else:
                    img_fields = image_fields(fld.name)
                    values += [
                        [e.entry.width if e else None for e in entries],
                        [e.entry.height if e else None for e in entries],
                        [e.entry.format if e else None for e in entries],
                        [e.entry.mode if e else None for e in entries],
                        [(e.entry.orientation or None) if e else None for e in entries],  # 0 = no tag
                    ]
                for f, v in zip(img_fields, values):
                    columns[f.name] = pa.array(v, f.type)
                    fields.append(f)
                for row, e in zip(content, entries):
                    row[fld.name] = e.sha256 if e else None
            else:
                column = kept.column(fld.name)
                columns[fld.name] = column
                fields.append(fld)
                for row, value in zip(content, column.to_pylist()):
                    row[fld.name] = value
        for key, value in manifest.meta.items():
            columns[key] = pa.array([value] * len(keep_idx))
            fields.append(pa.field(key, columns[key].type))
            for row in content:
                row[key] = value
        columns[BATCH_ID] = pa.array([manifest.job_id] * len(keep_idx), pa.string())
        columns[INGESTED_AT] = pa.array([ingested_at] * len(keep_idx), INGESTED_AT_TYPE)
        columns[ROW_HASH] = pa.array([row_fingerprint(row) for row in content], pa.string())
        fields += [
            pa.field(BATCH_ID, pa.string()),
            pa.field(INGESTED_AT, INGESTED_AT_TYPE),
            pa.field(ROW_HASH, pa.string()),
        ]
        return pa.Table.from_arrays([columns[f.name] for f in fields], schema=pa.schema(fields))

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

    def _quarantine(
        self, batch_dir: Path, manifest: BatchManifest, rejected: list[pa.Table], result: BatchResult
    ) -> Path:
        """Keep rejected rows and their files as a re-submittable batch in ``failed/<job_id>-rejected``."""
        target = self.layout.rejected_batch(manifest.job_id)
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        table = pa.concat_tables(rejected)
        files = []
        for col in manifest.image_columns + manifest.file_columns:
            for value in table.column(col).to_pylist():
                if not value:
                    continue
                try:
                    source = safe_join(batch_dir, value)
                except UnsafePathError:
                    continue
                if source.is_file():
                    dest = tmp / value
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, dest)
                    files.append({"path": value, "size": dest.stat().st_size})
        if not manifest.hand_drop or (batch_dir / BATCH_DATA).exists():
            pq.write_table(table, tmp / BATCH_DATA)
        doc = manifest.to_json()
        doc.update(job_id=f"{manifest.job_id}-rejected", row_count=table.num_rows, files=files)
        if manifest.hand_drop:
            doc = {k: doc[k] for k in ("provider", "dataset", "task", "variant", "meta", "description")}
        write_json_atomic(tmp / BATCH_MANIFEST, doc)
        write_json_atomic(
            tmp / ERROR_FILE,
            {
                "job_id": manifest.job_id,
                "error": f"{result.rows_rejected} rows were rejected and quarantined; the rest was ingested",
                "rejected": result.rejected,
                "failed_at": utc_now_iso(),
            },
        )
        shutil.rmtree(target, ignore_errors=True)
        os.rename(tmp, target)
        return target


def _schema_of(path: Path | None) -> pa.Schema | None:
    return pq.read_schema(path) if path else None


def process_batch(
    layout: LakeLayout, job_id: str, options: ProcessOptions | None = None, run_info: dict[str, Any] | None = None
) -> BatchResult:
    """Process one batch already claimed into ``staging/processing/<job_id>``."""
    return BatchProcessor(layout, options or ProcessOptions()).process(job_id, run_info)


def list_pending(layout: LakeLayout) -> list[str]:
    """Job ids of complete batches waiting in ``staging/pending`` (hidden temp folders excluded)."""
    return sorted(p.name for p in layout.pending.iterdir() if p.is_dir() and not p.name.startswith("."))


def process_pending(layout: LakeLayout, options: ProcessOptions | None = None) -> list[BatchResult]:
    """Claim and process every pending batch in-process (no Dagster); return one result per batch."""
    processor = BatchProcessor(layout, options or ProcessOptions())
    results = []
    for job_id in list_pending(layout):
        if claim_batch(layout, job_id):
            results.append(processor.process(job_id))
    return results

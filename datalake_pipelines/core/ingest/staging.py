"""Staging a batch: copy the data and every referenced file into ``staging/pending/<job_id>`` atomically.

The batch is written under a hidden ``.tmp-<job_id>`` folder and renamed into place only when complete,
so a reader of ``pending/`` never sees a half-written batch. A staged batch is self-contained: image
columns in its ``data.parquet`` hold paths relative to the batch folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from ...settings import load as load_settings
from ..arrow.column_names import check_column_names
from ..arrow.normalize import normalize_table, table_from_pandas
from ..errors import ValidationError
from ..lake.batches import check_job_id_free
from ..lake.layout import BATCH_DATA, BATCH_FILES_DIR, BATCH_MANIFEST, LakeLayout
from ..lake.schema import SchemaConfig, load_schema
from ..storage.backends import LocalStorage
from ..storage.files import copy_file, write_json_atomic
from .file_accounting import FILE_COLUMN, IMAGE_COLUMN, FolderScan, scan_folder
from .image_columns import (
    IMAGE_NAME_HINTS,  # noqa: F401 - re-exported (remote_batch)
    RESOLVED,
    is_url,
    missing_file_reason,
    resolve_image_columns,
    resolve_path,
)
from .known_content import KnownContent, hash_source, write_new
from .manifest import BatchManifest, check_job_id, new_job_id
from .provenance import upload_source


@dataclass
class StagedBatch:
    staging_dir: Path
    job_id: str
    manifest: BatchManifest


def detect_image_columns(table: pa.Table, base_dir: Path | None = None) -> list[str]:
    """Image columns of ``table`` when none are named: see :mod:`datalake_pipelines.core.ingest.image_columns`."""
    return list(resolve_image_columns(table, base_dir or Path.cwd()).image_columns)


# A data path is a Parquet file or a folder: text tables carry no types, and guessing them (ids that look like
# numbers, dates, empty cells) would change values silently, so the user chooses them in pandas or Arrow.
COPY_CHUNK = 64  # files per upload task

TEXT_TABLE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".txt")
TEXT_TABLE_HINT = (
    "; a CSV or JSON lines file is not read directly (its column types would be guessed): read it with pandas "
    "(pd.read_csv / pd.read_json(lines=True)) and pass the DataFrame to the Python client, or save it as "
    "Parquet (DataFrame.to_parquet) for --data"
)


class BatchStager:
    """Builds one batch folder from a DataFrame, a Parquet file or a folder of files."""

    def __init__(
        self,
        layout: LakeLayout,
        num_proc: int | None = None,
        batch_size: int = 1000,
        progress: bool = True,
        known: KnownContent | None = None,
    ):
        self.layout = layout
        self.num_proc = max(1, num_proc or load_settings().num_proc)  # default: $DATALAKE_NUM_PROC or CPU count
        self.batch_size = batch_size
        self.progress = progress
        self._scan: FolderScan | None = None  # set by a folder upload
        self._detected: set[str] = set()
        self._made_dirs: set[Path] = set()  # folders of this upload's batch that exist
        self.method = "client"  # recorded in the manifest's source (core/ingest/provenance.py); the CLI says "cli"
        self._origin: Any = None
        self.known = known  # the lake's hash index: content it holds is not staged (core/ingest/known_content.py)

    def stage(
        self,
        data_file: Any,
        manifest: BatchManifest,
        image_columns: list[str] | None,
        schema: SchemaConfig | None = None,
        file_columns: list[str] | None = None,
    ) -> StagedBatch:
        schema = schema or load_schema(self.layout)
        manifest.validate(schema)
        self._check_job_id_free(manifest.job_id)
        self._scan = None
        self._origin = data_file
        source_table, base_dir = self._open_source(data_file)
        file_columns = list(file_columns or [])
        if self._scan is not None:  # a folder upload: every file is a row (image or file) or listed as skipped
            if image_columns not in (None, [IMAGE_COLUMN]):
                raise ValidationError(
                    f"a folder upload makes the columns {self._scan.table().column_names}; its image column is "
                    f"{IMAGE_COLUMN!r} (omit image_columns), not {image_columns}"
                )
            image_columns = [IMAGE_COLUMN]
            file_columns = [FILE_COLUMN, *file_columns]
            report = {**self._scan.report(), "image_columns": {IMAGE_COLUMN: "identified by content"}}
        else:
            resolution = resolve_image_columns(source_table, base_dir, image_columns)
            image_columns = list(resolution.image_columns)
            report = {**_count_files(source_table, image_columns, file_columns), **resolution.report()}
        # Columns found by resolving their first values: every other value must resolve too (checked on copy).
        self._detected = {c for c, why in report["image_columns"].items() if why.startswith(RESOLVED)}
        missing = [c for c in image_columns + file_columns if c not in source_table.column_names]
        if missing:
            raise ValidationError(f"image columns {missing} are not in the data (columns: {source_table.column_names})")
        check_column_names(source_table.schema, image_columns, file_columns, manifest.meta, "the upload")
        manifest.image_columns = list(image_columns)
        manifest.file_columns = [c for c in file_columns if c not in manifest.image_columns]
        manifest.staging_report = report
        tmp = self.layout.pending_temp(manifest.job_id)
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / BATCH_FILES_DIR).mkdir(parents=True)
        try:
            self._write(source_table, base_dir, manifest, tmp)
            final = self.layout.pending_batch(manifest.job_id)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return StagedBatch(final, manifest.job_id, manifest)

    # sources -------------------------------------------------------------------
    def _open_source(self, data_file: Any) -> tuple[pa.Table, Path]:
        """The upload as a normalized table and the folder its relative file paths resolve against.

        Raises :class:`ValidationError` for a source of another kind, and for a table without rows or columns
        (nothing would be stored; refused here so nothing is staged).
        """
        if isinstance(data_file, (str, os.PathLike)):
            return self._open_path(Path(data_file).expanduser())
        table = arrow_table(data_file)
        _check_not_empty(table, "the upload")
        return normalize_table(table), Path.cwd()

    def _open_path(self, path: Path) -> tuple[pa.Table, Path]:
        if path.is_dir():
            return self._open_folder(path)
        if path.is_file():
            try:
                # Read in record batches: ``read_table`` decodes whole columns into scratch buffers and peaked at
                # 3.7x the table (+252 MB for a 68 MB text table, against +153 MB this way). The table is then
                # staged batch by batch; its image columns are resolved from its values, so it is held whole.
                pf = pq.ParquetFile(path)
                table = pa.Table.from_batches(list(pf.iter_batches(batch_size=64 * 1024)), schema=pf.schema_arrow)
            except (pa.ArrowException, OSError) as exc:
                hint = TEXT_TABLE_HINT if path.suffix.lower() in TEXT_TABLE_SUFFIXES else ""
                raise ValidationError(f"{path}: not a readable Parquet file: {exc}{hint}") from None
            _check_not_empty(table, str(path))
            return normalize_table(table), path.resolve().parent
        raise ValidationError(f"data file {path} does not exist")

    def _open_folder(self, path: Path) -> tuple[pa.Table, Path]:
        """One row per file of the folder (see :mod:`~datalake_pipelines.core.ingest.file_accounting`)."""
        self._scan = scan_folder(path, workers=self.num_proc)
        table = self._scan.table()
        if not table.num_rows:
            skipped = ", ".join(f"{s['path']} ({s['reason']})" for s in self._scan.skipped[:5]) or "nothing"
            raise ValidationError(f"folder {path} holds no files to upload (skipped: {skipped})")
        return table, path.resolve()

    def _check_job_id_free(self, job_id: str) -> None:
        check_job_id(job_id)
        check_job_id_free(LocalStorage(self.layout.base), job_id)  # the rule of every lake (core/lake/batches.py)

    # writing -------------------------------------------------------------------
    def _write(self, table: pa.Table, base_dir: Path, manifest: BatchManifest, tmp: Path) -> None:
        files: list[dict[str, Any]] = []
        writer: pq.ParquetWriter | None = None
        self._made_dirs = set()
        bar = tqdm(total=table.num_rows, unit="row", desc=f"staging {manifest.job_id}", disable=not self.progress)
        total_bytes = 0
        try:
            with ThreadPoolExecutor(self.num_proc) as pool:
                offset = 0
                for chunk in self._chunks(table):
                    out = chunk
                    for col in manifest.image_columns + manifest.file_columns:
                        values = chunk.column(col).to_pylist()
                        jobs = [(offset + i, col, v) for i, v in enumerate(values)]
                        # chunks, not one task per file: a task costs a lock round trip per file otherwise
                        parts = [jobs[k : k + COPY_CHUNK] for k in range(0, len(jobs), COPY_CHUNK)]
                        kind = "image" if col in manifest.image_columns else "file"
                        done = pool.map(lambda part, kind=kind: self._copy_chunk(part, kind, base_dir, tmp), parts)
                        staged = [s for part in done for s in part]
                        relpaths = [s[0] if s else None for s in staged]
                        for s in staged:
                            if s:
                                sha = {"sha256": s[3]} if s[3] else {}  # only to find known content (known_content)
                                files.append({"path": s[0], "size": s[1], "source": s[2], **sha})
                                total_bytes += s[1]
                        idx = out.schema.get_field_index(col)
                        out = out.set_column(idx, pa.field(col, pa.string()), pa.array(relpaths, pa.string()))
                    try:
                        if writer is None:
                            writer = pq.ParquetWriter(tmp / BATCH_DATA, out.schema)
                        writer.write_table(out)
                    except (pa.ArrowException, ValueError) as exc:
                        raise ValidationError(_unwritable(out, exc)) from None
                    offset += chunk.num_rows
                    bar.update(chunk.num_rows)
                    bar.set_postfix_str(f"{total_bytes / 1e6:.1f} MB")
            if writer is None:
                schema = table.schema
                for col in manifest.image_columns + manifest.file_columns:
                    schema = schema.set(schema.get_field_index(col), pa.field(col, pa.string()))
                writer = pq.ParquetWriter(tmp / BATCH_DATA, schema)
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        manifest.row_count = table.num_rows
        manifest.files = files
        if not manifest.source:  # a collection upload names its own
            manifest.source = upload_source(self._origin, self.method, tmp / BATCH_DATA)
        write_json_atomic(tmp / BATCH_MANIFEST, manifest.to_json(), indent=None if len(files) > 100 else 2)

    def _chunks(self, table: pa.Table) -> Iterator[pa.Table]:
        for start in range(0, table.num_rows, self.batch_size):
            yield table.slice(start, self.batch_size)

    def _mkdir(self, folder: Path) -> None:
        """Create a column's folder once per upload, not one mkdir call per file (threads: a race only repeats it)."""
        if folder not in self._made_dirs:
            folder.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(folder)

    def _copy_chunk(
        self, part: list[tuple[int, str, Any]], kind: str, base_dir: Path, tmp: Path
    ) -> list[tuple[str, int, str, str | None] | None]:
        """Stage a chunk of files: (relpath, size, original name, sha256 or None) each.

        When the chunk is probed (:mod:`.known_content`) each source is read and hashed, content the lake holds is
        not written at all, and the rest is written from the bytes just read; otherwise a kernel copy, unhashed.
        """
        if self.known is None or not self.known.probe():
            return [self._copy_one(job, base_dir, tmp) for job in part]
        targets = [self._target(job, base_dir, tmp) for job in part]
        files = {i: t[1] for i, t in enumerate(targets) if t and isinstance(t[1], Path)}
        hashed = {i: hash_source(source) for i, source in files.items()}
        in_lake = self.known.lookup([h[1] for h in hashed.values()], kind)
        out: list[tuple[str, int, str, str | None] | None] = []
        for i, target in enumerate(targets):
            if target is None or i not in hashed:
                out.append(self._copy_one(part[i], base_dir, tmp))
                continue
            rel, original = target[0], target[2]
            data, sha, size = hashed[i]
            if sha not in in_lake:
                dest = tmp / rel
                self._mkdir(dest.parent)
                size = copy_file(files[i], dest) if data is None else write_new(dest, data)
            out.append((rel, size, original, sha))
        return out

    def _copy_one(self, job: tuple[int, str, Any], base_dir: Path, tmp: Path) -> tuple[str, int, str, None] | None:
        """Copy (or write) one referenced file into the batch; return (relpath, size, original name, None)."""
        target = self._target(job, base_dir, tmp)
        if target is None:
            return None
        rel, source, original = target
        dest = tmp / rel
        self._mkdir(dest.parent)
        if isinstance(source, bytes):
            dest.write_bytes(source)
            return rel, dest.stat().st_size, original, None
        # a kernel copy (never a link: editing the source must not change the lake); not hashed here, see asset_store
        return rel, copy_file(source, dest), original, None

    def _target(self, job: tuple[int, str, Any], base_dir: Path, tmp: Path) -> tuple[str, Path | bytes, str] | None:
        """Where one referenced file goes in the batch and what it is: (relpath, source file or bytes, original
        name); None for an empty cell. ValidationError for a URL or a file that does not resolve."""
        row, col, value = job
        if value is None:
            return None
        if isinstance(value, dict):  # HuggingFace Image feature: {"bytes": ..., "path": ...}
            value = value.get("bytes") or value.get("path")
            if value is None:
                return None
        safe_col = "".join(c if c.isalnum() or c in "_-" else "_" for c in col)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return f"{BATCH_FILES_DIR}/{safe_col}/{row:08d}.bin", bytes(value), f"<bytes of row {row}>"
        if is_url(value):
            raise ValidationError(
                f"row {row}, column {col!r}: {value!r} is a URL; the lake does not fetch URLs: download the files "
                "and reference them by path, or leave the column out of image_columns to keep it as text"
            )
        source = resolve_path(str(value), base_dir)
        if source is None:
            hint = (
                f" (column {col!r} was detected as image paths from its values; name the image columns "
                "with image_columns=[...] to decide)"
                if col in self._detected
                else ""
            )
            raise ValidationError(f"row {row}, column {col!r}: {missing_file_reason(value, base_dir)}{hint}")
        suffix = source.suffix.lower()[:12]
        return f"{BATCH_FILES_DIR}/{safe_col}/{row:08d}{suffix}", source, str(value)


ACCEPTED_SOURCES = (
    "a pandas DataFrame, a pyarrow Table, RecordBatch or RecordBatchReader, any object with __arrow_c_stream__ "
    "or __arrow_c_array__ (Arrow PyCapsule interface), or the path of a Parquet file or a folder"
)


def arrow_table(source: Any) -> pa.Table:
    """An in-memory upload source as one Arrow table (a DataFrame through :func:`table_from_pandas`).

    Accepts the sources named in :data:`ACCEPTED_SOURCES`; raises :class:`ValidationError` listing them otherwise.
    """
    if isinstance(source, pd.DataFrame):
        return table_from_pandas(source)
    if isinstance(source, pa.Table):
        return source
    if isinstance(source, pa.RecordBatch):
        return pa.Table.from_batches([source])
    if isinstance(source, pa.RecordBatchReader):
        return source.read_all()
    if hasattr(source, "__arrow_c_stream__") or hasattr(source, "__arrow_c_array__"):
        try:
            return pa.table(source)  # the Arrow PyCapsule interface (polars, DuckDB relations, nanoarrow...)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise ValidationError(
                f"the upload ({type(source).__name__}) cannot be read as an Arrow table: {exc}"
            ) from None
    raise ValidationError(f"cannot upload a {type(source).__name__}: the data must be {ACCEPTED_SOURCES}")


def _check_not_empty(table: pa.Table, what: str) -> None:
    if not table.num_columns:
        raise ValidationError(f"{what} has no columns: there is nothing to store")
    if not table.num_rows:
        raise ValidationError(f"{what} has no rows: there is nothing to store (columns: {table.column_names})")


def _unwritable(table: pa.Table, exc: Exception) -> str:
    """Why ``table`` cannot be staged as Parquet, naming the first column Parquet refuses on its own."""
    for f in table.schema:
        try:
            pq.write_table(table.select([f.name]), pa.BufferOutputStream())
        except (pa.ArrowException, ValueError) as column_exc:
            return f"column {f.name!r} ({f.type}) cannot be stored as Parquet: {column_exc}"
    return f"the upload cannot be stored as Parquet (columns: {', '.join(table.column_names)}): {exc}"


def build_manifest(
    data_type: str,
    provider: str,
    dataset: str,
    task: str,
    variant: str,
    meta: dict[str, Any] | None = None,
    description: str = "",
    job_id: str | None = None,
) -> BatchManifest:
    return BatchManifest(
        job_id=job_id or new_job_id(),
        data_type=data_type,
        provider=provider,
        dataset=dataset,
        task=task,
        variant=variant,
        meta=dict(meta or {}),
        description=description,
    )


def _count_files(table: pa.Table, image_columns: list[str], file_columns: list[str]) -> dict[str, Any]:
    """The staging report's counts for tabular data: referenced images and other files (non-null values)."""

    def count(columns: list[str]) -> int:
        return sum(len(table.column(c)) - table.column(c).null_count for c in columns if c in table.column_names)

    return {"images": count(image_columns), "other_files": count(file_columns), "skipped_count": 0, "skipped": []}

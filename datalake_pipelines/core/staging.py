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

from .arrow_normalize import normalize_table, table_from_pandas
from .column_names import check_column_names
from .errors import ValidationError
from .files import write_json_atomic
from .layout import BATCH_DATA, BATCH_FILES_DIR, BATCH_MANIFEST, LakeLayout
from .manifest import BatchManifest, check_job_id, new_job_id
from .processing import HAND_DROP_EXTENSIONS
from .schema import SchemaConfig, load_schema

IMAGE_NAME_HINTS = ("image", "img", "picture", "photo")
SAMPLE_ROWS = 20


@dataclass
class StagedBatch:
    staging_dir: Path
    job_id: str
    manifest: BatchManifest


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)


def _is_hf_image(t: pa.DataType) -> bool:
    return pa.types.is_struct(t) and {t.field(i).name for i in range(t.num_fields)} >= {"bytes", "path"}


def detect_image_columns(table: pa.Table) -> list[str]:
    """Columns that hold images: bytes, HF-style ``{bytes, path}`` structs, or paths with image extensions."""
    found = []
    for fld in table.schema:
        if _is_binary(fld.type) or _is_hf_image(fld.type):
            if _is_binary(fld.type) and not any(h in fld.name.lower() for h in IMAGE_NAME_HINTS):
                continue
            found.append(fld.name)
        elif pa.types.is_string(fld.type) or pa.types.is_large_string(fld.type):
            # only string columns become Python objects here (a timestamp past year 9999 cannot)
            sample = [v for v in table.column(fld.name).slice(0, 200).to_pylist() if v is not None][:SAMPLE_ROWS]
            if sample and all(Path(str(v)).suffix.lower() in HAND_DROP_EXTENSIONS for v in sample):
                found.append(fld.name)
    return found


class BatchStager:
    """Builds one batch folder from a DataFrame, a Parquet file or a folder of files."""

    def __init__(self, layout: LakeLayout, num_proc: int = 4, batch_size: int = 1000, progress: bool = True):
        self.layout = layout
        self.num_proc = max(1, num_proc)
        self.batch_size = batch_size
        self.progress = progress

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
        source_table, base_dir = self._open_source(data_file)
        first = source_table.slice(0, SAMPLE_ROWS * 10)
        if image_columns is None and self._is_folder(data_file):
            image_columns = ["image"]  # a folder upload: the image column, plus the original file_name
        if image_columns is None:
            image_columns = detect_image_columns(first)
        file_columns = list(file_columns or [])
        missing = [c for c in image_columns + file_columns if c not in source_table.column_names]
        if missing:
            raise ValidationError(f"image columns {missing} are not in the data (columns: {source_table.column_names})")
        check_column_names(source_table.schema, image_columns, file_columns, manifest.meta, "the upload")
        manifest.image_columns = list(image_columns)
        manifest.file_columns = [c for c in file_columns if c not in manifest.image_columns]
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
        if isinstance(data_file, pd.DataFrame):
            return normalize_table(table_from_pandas(data_file)), Path.cwd()
        if isinstance(data_file, pa.Table):
            return normalize_table(data_file), Path.cwd()
        path = Path(data_file).expanduser()
        if path.is_dir():
            files = sorted(
                os.path.relpath(os.path.join(root, name), path)
                for root, _dirs, names in os.walk(path)
                for name in names
                if Path(name).suffix.lower() in HAND_DROP_EXTENSIONS and not name.startswith(".")
            )
            if not files:
                raise ValidationError(f"folder {path} holds no image files")
            return pa.table({"image": files, "file_name": files}), path.resolve()
        if path.is_file():
            try:
                # memory_map keeps the data file out of RSS; rows are then staged batch by batch.
                table = pq.read_table(path, memory_map=True)
            except (pa.ArrowException, OSError) as exc:
                raise ValidationError(f"{path}: not a readable Parquet file: {exc}") from None
            return normalize_table(table), path.resolve().parent
        raise ValidationError(f"data file {path} does not exist")

    @staticmethod
    def _is_folder(data_file: Any) -> bool:
        return isinstance(data_file, (str, os.PathLike)) and Path(data_file).expanduser().is_dir()

    def _check_job_id_free(self, job_id: str) -> None:
        check_job_id(job_id)
        places = [
            self.layout.pending_batch(job_id),
            self.layout.pending_temp(job_id),
            self.layout.processing_batch(job_id),
            self.layout.failed_batch(job_id),
            self.layout.job_record(job_id),
        ]
        if any(p.exists() for p in places):
            raise ValidationError(f"job id {job_id!r} is already used in this lake; pick another")

    # writing -------------------------------------------------------------------
    def _write(self, table: pa.Table, base_dir: Path, manifest: BatchManifest, tmp: Path) -> None:
        files: list[dict[str, Any]] = []
        writer: pq.ParquetWriter | None = None
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
                        staged = list(pool.map(lambda job: self._copy_one(job, base_dir, tmp), jobs))
                        relpaths = [s[0] if s else None for s in staged]
                        for s in staged:
                            if s:
                                files.append({"path": s[0], "size": s[1], "source": s[2]})
                                total_bytes += s[1]
                        idx = out.schema.get_field_index(col)
                        out = out.set_column(idx, pa.field(col, pa.string()), pa.array(relpaths, pa.string()))
                    if writer is None:
                        writer = pq.ParquetWriter(tmp / BATCH_DATA, out.schema)
                    writer.write_table(out)
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
        write_json_atomic(tmp / BATCH_MANIFEST, manifest.to_json())

    def _chunks(self, table: pa.Table) -> Iterator[pa.Table]:
        for start in range(0, table.num_rows, self.batch_size):
            yield table.slice(start, self.batch_size)

    def _copy_one(self, job: tuple[int, str, Any], base_dir: Path, tmp: Path) -> tuple[str, int, str] | None:
        """Copy (or write) one referenced file into the batch; return (relpath, size, original name)."""
        row, col, value = job
        if value is None:
            return None
        if isinstance(value, dict):  # HuggingFace Image feature: {"bytes": ..., "path": ...}
            value = value.get("bytes") or value.get("path")
            if value is None:
                return None
        safe_col = "".join(c if c.isalnum() or c in "_-" else "_" for c in col)
        if isinstance(value, (bytes, bytearray, memoryview)):
            rel = f"{BATCH_FILES_DIR}/{safe_col}/{row:08d}.bin"
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(bytes(value))
            return rel, dest.stat().st_size, f"<bytes of row {row}>"
        source = Path(str(value)).expanduser()
        if not source.is_absolute():
            source = base_dir / source
        if not source.is_file():
            raise ValidationError(f"row {row}, column {col!r}: file {value!r} does not exist ({source})")
        suffix = source.suffix.lower()[:12]
        rel = f"{BATCH_FILES_DIR}/{safe_col}/{row:08d}{suffix}"
        dest = tmp / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        return rel, dest.stat().st_size, str(value)


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

"""Download a catalog selection as Parquet, Arrow IPC or a HuggingFace dataset, streaming record batches.

Output goes to a hidden sibling of ``out_dir`` and is renamed into place only when complete, next to a
``download.json`` manifest (selection, format, rows, catalog snapshot, sha256 of every written file).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from ..catalog.parts import IMAGE_SUFFIXES, PARTITION_COLUMNS
from ..catalog.query import DuckDBClient, QueryPlan
from ..catalog.query_sql import limit_sql
from ..errors import DatalakeError
from ..lake.layout import LakeLayout
from ..lifecycle.as_of import pick as pick_as_of
from ..lifecycle.as_of import resolve as resolve_as_of
from ..storage.backends import open_storage
from ..storage.files import utc_now_iso, write_json_atomic
from .hf_types import hf_batch, hf_plan
from .output_guard import DOWNLOAD_MARKERS, staged_folder
from .source import LakeSource, open_source

FORMATS = ("parquet", "arrow", "hf")
MANIFEST = "download.json"


@dataclass
class Selection:
    """What to download: partitions (+ ``where``/``columns``), optionally narrowed by a text search."""

    providers: list[str] | str | None = None
    datasets: list[str] | str | None = None
    tasks: list[str] | str | None = None
    variants: list[str] | str | None = None
    where: dict[str, Any] | None = None
    columns: list[str] | None = None
    limit: int | None = None
    column: str | None = None  # text search: column, text, json_path, mode
    text: str | None = None
    json_path: str | None = None
    mode: str = "contains"
    as_of: str | datetime | None = None  # the catalog as it was then: a timestamp or a catalog version id
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def coerce(cls, value: Selection | dict[str, Any] | None) -> Selection:
        if value is None:
            return cls()
        if isinstance(value, Selection):
            return value
        known = {f.name for f in fields(cls)} - {"extra"}
        unknown = set(value) - known
        if unknown:
            raise ValueError(f"unknown selection key(s) {sorted(unknown)}; use {sorted(known)}")
        return cls(**value)

    @property
    def is_search(self) -> bool:
        return self.text is not None

    def partition_filters(self) -> dict[str, Any]:
        return {"providers": self.providers, "datasets": self.datasets, "tasks": self.tasks, "variants": self.variants}

    def plan(self, duck: DuckDBClient) -> QueryPlan:
        if self.text is not None:  # self.is_search, spelled out so that text narrows to str
            if not self.column:
                raise ValueError("a text search selection needs 'column' as well as 'text'")
            return duck.plan_search(
                self.column, self.text, self.json_path, mode=self.mode, columns=self.columns,
                where=self.where, limit=self.limit, as_of=self.as_of, **self.partition_filters(),
            )  # fmt: skip
        return duck.plan_retrieval(
            columns=self.columns, where=self.where, limit=self.limit, as_of=self.as_of, **self.partition_filters()
        )

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("extra")
        if isinstance(doc["as_of"], datetime):
            doc["as_of"] = doc["as_of"].isoformat()
        return doc


def image_columns(schema: pa.Schema) -> list[str]:
    """Columns holding a lake-relative image path (they have the ``<col>_sha256`` etc. siblings)."""
    names = set(schema.names)
    return [
        f.name for f in schema if pa.types.is_string(f.type) and all(f"{f.name}_{s}" in names for s in IMAGE_SUFFIXES)
    ]


class Meter:
    """Counts rows and bytes of the batches passing through, showing them on a tqdm bar."""

    def __init__(self, bar):
        self.bar = bar
        self.rows = 0
        self.bytes = 0

    def __call__(self, reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
        for batch in reader:
            self.rows += batch.num_rows
            self.bytes += batch.nbytes
            self.bar.update(batch.num_rows)
            self.bar.set_postfix_str(f"{self.bytes / 1e6:,.1f} MB", refresh=False)
            yield batch


def _write_parquet(reader: pa.RecordBatchReader, out: Path, hive: bool) -> None:
    if hive:
        keys = [c for c in PARTITION_COLUMNS if c in reader.schema.names]
        if not keys:
            raise ValueError("hive output needs the partition columns; do not drop them with 'columns'")
        pads.write_dataset(
            reader,
            out / "data",
            format="parquet",
            partitioning=keys,
            partitioning_flavor="hive",
            basename_template="part-{i}.parquet",
            file_options=pads.ParquetFileFormat().make_write_options(compression="zstd"),
            existing_data_behavior="error",
            create_dir=True,
        )
        (out / "data").mkdir(exist_ok=True)  # an empty selection still yields the folder
        return
    with pq.ParquetWriter(out / "data.parquet", reader.schema, compression="zstd") as writer:
        for batch in reader:
            writer.write_batch(batch)


def _write_arrow(reader: pa.RecordBatchReader, out: Path) -> None:
    with pa.OSFile(str(out / "data.arrow"), "wb") as sink, pa.ipc.new_file(sink, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)


def asset_reader(lake: LakeSource | LakeLayout | str):
    """``relpath -> bytes`` for lake-relative asset paths (local or S3); refuses absolute paths and ``..``."""
    return open_source(lake).read_asset


def _with_image_bytes(read, batch: pa.RecordBatch, columns: list[str], image_type) -> pa.Table:
    """Replace each image path column by the ``{bytes, path}`` struct of ``datasets.Image``."""
    table = pa.Table.from_batches([batch])
    for name in columns:
        cache: dict[str, bytes] = {}  # the same asset often backs several rows of a batch
        values: list[dict[str, Any] | None] = []
        for relpath in table.column(name).to_pylist():
            if relpath is None:
                values.append(None)
                continue
            if relpath not in cache:
                try:
                    cache[relpath] = read(relpath)
                except OSError as exc:
                    raise DatalakeError(f"cannot read asset {relpath!r} of column {name!r}: {exc}") from None
            values.append({"bytes": cache[relpath], "path": relpath})
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(values, image_type))
    return table


def _write_hf(
    lake: LakeSource | LakeLayout, reader: pa.RecordBatchReader, out: Path, progress: bool, batch_size: int
) -> list[dict[str, Any]]:
    """Write a ``save_to_disk`` dataset; return the type conversions made (see :mod:`.hf_types`).

    Columns ``datasets`` cannot hold are refused (``HfUnsupportedTypeError``) before anything is written."""
    try:
        import datasets
        from datasets.arrow_writer import ArrowWriter
    except ImportError:
        raise DatalakeError(
            "format 'hf' needs the HuggingFace 'datasets' package: pip install 'datalake_pipelines[hf]'"
        ) from None
    schema, conversions = hf_plan(reader.schema)
    images = image_columns(schema)
    features = datasets.Features.from_arrow_schema(schema)
    for name in images:
        features[name] = datasets.Image()
    image_type = datasets.Image().pa_type
    read = asset_reader(lake)
    scratch = out.with_name(f"{out.name}.hf-scratch")
    bars_were_enabled = False
    scratch.mkdir()
    try:
        cache = scratch / "rows.arrow"
        writer = ArrowWriter(features=features, path=str(cache), writer_batch_size=batch_size)
        try:
            for batch in reader:
                writer.write_table(_with_image_bytes(read, hf_batch(batch, schema), images, image_type))
            writer.finalize()
        finally:
            writer.close()
        dataset = datasets.Dataset.from_file(str(cache), info=datasets.DatasetInfo(features=features))
        bars_were_enabled = datasets.is_progress_bar_enabled()
        if not progress:
            datasets.disable_progress_bars()
        # an empty dataset saved with 0 shards cannot be loaded back: always write at least one
        dataset.save_to_disk(str(out), num_shards=1 if len(dataset) == 0 else None)
        del dataset
    finally:
        if bars_were_enabled:
            datasets.enable_progress_bars()
        shutil.rmtree(scratch, ignore_errors=True)
    return conversions


def _checksums(folder: Path) -> dict[str, dict[str, Any]]:
    sums = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        sums[path.relative_to(folder).as_posix()] = {"sha256": digest.hexdigest(), "bytes": path.stat().st_size}
    return sums


def download(
    lake: LakeSource | LakeLayout | str,
    selection: Selection | dict[str, Any] | None,
    format: str,
    out_dir: str | os.PathLike,
    batch_size: int = 10_000,
    progress: bool = True,
    hive: bool = False,
    overwrite: bool = False,
    exclude_near_duplicates: int | None = None,
    as_of: str | datetime | None = None,
) -> dict[str, Any]:
    """Write the selected rows of ``lake`` (a :class:`LakeLayout`, a folder or ``s3://bucket/prefix``) to the local
    folder ``out_dir`` in ``format`` (``parquet``, ``arrow`` or ``hf``); return the manifest.

    Data lands in ``data.parquet`` (``hive=True``: a hive-partitioned ``data/`` folder), ``data.arrow``, or the
    ``save_to_disk`` files of a HuggingFace dataset (``datasets.load_from_disk(out_dir)``). Memory stays
    bounded by ``batch_size`` rows whatever the selection size. Columns have the catalog's Arrow types
    (:mod:`.arrow_restore`); ``hf`` converts maps and records it under ``hf_conversions`` (:mod:`.hf_types`).

    ``out_dir`` is never replaced unless ``overwrite``: it is claimed first with ``os.mkdir`` (atomic), so of two
    downloads racing to one folder exactly one proceeds and the other raises ``FileExistsError``; the complete
    output is then renamed onto the claimed (empty) folder. ``out_dir`` may not be the lake, lie inside it or hold
    it, and ``overwrite`` replaces only a folder holding a ``download.json`` (or an empty one): else
    ``OutputPathError`` (:mod:`.output_guard`).

    ``exclude_near_duplicates=D`` keeps one row of each cluster of rows whose images are within ``D`` bits of
    pHash (:mod:`.neardup.exclude`; ``limit`` counts kept rows) and lists the others in
    ``near_duplicates.json``, summarized in the manifest.

    ``as_of`` (or the selection's ``as_of``): a timestamp or a catalog version id; the rows are the catalog as it
    was then (:mod:`..lifecycle.as_of`), ``catalog_snapshot_at`` is that time and ``partitions`` is empty (it
    describes the current catalog). Raises ``AsOfTooOldError`` when the retention no longer holds that time.

    Raises ``ValueError`` for a bad selection (unknown
    column or partition, a value not of its column's type, a type conflict between partitions),
    ``HfUnsupportedTypeError`` (code ``hf_unsupported_type``) for a column ``hf`` cannot hold.
    """
    from tqdm.auto import tqdm

    if format not in FORMATS:
        raise ValueError(f"unknown download format {format!r}; use one of {FORMATS}")
    selection = Selection.coerce(selection)
    source = open_source(lake)
    limit_sql(selection.limit)  # a negative limit is refused here, with or without exclude_near_duplicates
    snapshot_at = utc_now_iso()
    wanted = pick_as_of(as_of, selection.as_of)
    selection = replace(selection, as_of=None) if wanted is None else selection
    if wanted is not None:  # resolved once: every plan reads the same moment
        at = resolve_as_of(open_storage(source.base), wanted)
        selection, snapshot_at = replace(selection, as_of=at), at.isoformat()
    conversions: list[dict[str, Any]] = []
    # never the lake; only our own folder; claimed with mkdir, written aside and renamed into place
    with staged_folder(out_dir, overwrite, source, DOWNLOAD_MARKERS) as (tmp, out):
        # as_of: the current partitions say nothing of then (a deleted one is not even listed)
        refs = source.select(**selection.partition_filters()) if selection.as_of is None else []
        stats = source.stats(refs).to_pylist() if refs else []
        with DuckDBClient(base_path=source.base) as duck:
            exclusion = None
            if exclude_near_duplicates is None:
                reader = duck.stream(selection.plan(duck), batch_size)
            else:
                from ..neardup.exclude import excluding_reader

                def plan_for(columns):
                    return replace(selection, columns=columns, limit=None).plan(duck)

                reader, exclusion = excluding_reader(
                    duck, plan_for, selection.columns, selection.limit, exclude_near_duplicates, batch_size
                )
            exact = not (selection.where or selection.is_search or selection.as_of is not None)
            total = sum(s["rows"] for s in stats) if exact else None
            if selection.limit is not None and total is not None:
                total = min(total, selection.limit)
            with tqdm(total=total, unit="rows", disable=not progress, desc=f"download {format}") as bar:
                meter = Meter(bar)
                counted = pa.RecordBatchReader.from_batches(reader.schema, meter(reader))
                if format == "parquet":
                    _write_parquet(counted, tmp, hive)
                elif format == "arrow":
                    _write_arrow(counted, tmp)
                else:
                    conversions = _write_hf(source, counted, tmp, progress, batch_size)
                rows = meter.rows
            schema = [{"name": f.name, "type": str(f.type)} for f in reader.schema]
        if exclusion is not None:
            exclusion.write(tmp)
        manifest = {
            "format": format,
            "hive": hive if format == "parquet" else None,
            "selection": selection.to_dict(),
            "rows": rows,
            "columns": schema,
            "hf_conversions": conversions if format == "hf" else None,
            "near_duplicates": exclusion.summary() if exclusion is not None else None,
            "catalog_snapshot_at": snapshot_at,
            "completed_at": utc_now_iso(),
            "partitions": [
                {
                    "key": "/".join(s[c] for c in PARTITION_COLUMNS),
                    "rows": s["rows"],
                    "last_batch": s["last_batch"],
                    "last_ingested_at": s["last_ingested_at"],
                }
                for s in stats
            ],
            "files": _checksums(tmp),
        }
        write_json_atomic(tmp / MANIFEST, manifest)
    return {**manifest, "path": str(out)}

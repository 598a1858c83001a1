"""The hive-partitioned Parquet catalog: part files per batch, partition ``_metadata.json``, compaction."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..arrow.cast import cast_table
from ..errors import DatalakeError
from ..lake.layout import LakeLayout, PartitionRef
from ..storage.files import read_json, temp_sibling, utc_now_iso, write_json_atomic
from .schema_contract import (
    SchemaContractError,
    conform,
    contract_from_json,
    contract_json,
    fold_schemas,
    same_type,
)

BATCH_ID = "batch_id"
INGESTED_AT = "ingested_at"
ROW_HASH = "row_hash"
PARTITION_COLUMNS = ("provider", "dataset", "task", "variant")
RESERVED_COLUMNS = frozenset((*PARTITION_COLUMNS, BATCH_ID, INGESTED_AT, ROW_HASH))
IMAGE_SUFFIXES = ("sha256", "width", "height", "format", "mode")
INGESTED_AT_TYPE = pa.timestamp("us", tz="UTC")


class CatalogError(DatalakeError):
    """A catalog file cannot be read; the message names the file."""


def image_fields(column: str) -> list[pa.Field]:
    """Catalog fields that describe one image column: the lake-relative path plus its facts.

    ``<col>_width``/``<col>_height`` are the DISPLAYED size in pixels, after the EXIF orientation is applied
    (what browsers, ``ImageOps.exif_transpose`` and HF ``datasets`` show); ``<col>_orientation`` is the EXIF
    Orientation tag (274, values 1-8), null when the image has none. The stored bytes are never rotated.
    ``<col>_orientation`` is not in :data:`IMAGE_SUFFIXES`: partitions written before it existed lack it.
    ``<col>_phash`` is the 64-bit perceptual hash as a signed int64 (``core/neardup/phash.py``), null when not
    computed (``$DATALAKE_PHASH=0``, or rows written before it existed); not in :data:`IMAGE_SUFFIXES` either.
    """
    return [
        pa.field(column, pa.string()),
        pa.field(f"{column}_sha256", pa.string()),
        pa.field(f"{column}_width", pa.int32()),
        pa.field(f"{column}_height", pa.int32()),
        pa.field(f"{column}_format", pa.string()),
        pa.field(f"{column}_mode", pa.string()),
        pa.field(f"{column}_orientation", pa.int32()),
        pa.field(f"{column}_phash", pa.int64()),
    ]


def file_fields(column: str) -> list[pa.Field]:
    """Catalog fields that describe one non-image file column: lake-relative path, hash and size."""
    return [
        pa.field(column, pa.string()),
        pa.field(f"{column}_sha256", pa.string()),
        pa.field(f"{column}_size", pa.int64()),
    ]


def partition_files(layout: LakeLayout, ref: PartitionRef) -> list[Path]:
    """Parquet files of a partition (compacted ``data.parquet`` first, then part files)."""
    folder = layout.partition_dir(ref)
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_")))
    return sorted(files, key=lambda p: (p.name != "data.parquet", p.name))


def open_parquet(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise CatalogError(f"cannot read catalog file {path}: {exc}") from None


def read_column(path: Path, column: str) -> list[Any]:
    pf = open_parquet(path)
    if column not in pf.schema_arrow.names:
        return []
    try:
        return pf.read(columns=[column]).column(0).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise CatalogError(f"cannot read catalog file {path}: {exc}") from None


def existing_row_hashes(layout: LakeLayout, ref: PartitionRef, exclude: Path | None = None) -> set[str]:
    """Row hashes already in a partition (only the ``row_hash`` column is read)."""
    hashes: set[str] = set()
    for path in partition_files(layout, ref):
        if exclude is not None and path == exclude:
            continue
        hashes.update(h for h in read_column(path, ROW_HASH) if h)
    return hashes


class PartWriter:
    """Streams record batches into one part file; visible only after :meth:`commit` renames it."""

    def __init__(self, target: Path):
        self.target = target
        self.tmp = temp_sibling(target)
        self._writer: pq.ParquetWriter | None = None
        self.schema: pa.Schema | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0 and self._writer is not None:
            return
        if self._writer is None:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self.schema = table.schema
            self._writer = pq.ParquetWriter(self.tmp, self.schema, compression="zstd")
        elif table.schema != self.schema:
            table = cast_table(table, self.schema)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def commit(self) -> Path | None:
        """Publish the part file; with no rows written, publish nothing and return ``None``."""
        if self._writer is None:
            return None
        self._writer.close()
        self._writer = None
        if self.rows == 0:
            self.tmp.unlink(missing_ok=True)
            self._drop_empty_partition()
            return None
        self.tmp.replace(self.target)
        return self.target

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - the temp file is removed either way
                pass
            self._writer = None
        self.tmp.unlink(missing_ok=True)
        self._drop_empty_partition()

    def _drop_empty_partition(self) -> None:
        """Remove the partition folder :meth:`write` created when nothing was published into it: an empty folder
        is still a partition to ``list_partitions``, ``catalog.duckdb`` and verify. Only the partition's own folder,
        which its lock guards; parents may be shared with a concurrent run of a sibling partition."""
        with contextlib.suppress(OSError):  # not empty (or already gone): a partition with data stays
            self.target.parent.rmdir()


def schema_description(schema: pa.Schema) -> list[dict[str, str]]:
    return [{"name": f.name, "type": str(f.type)} for f in schema]


def read_partition_metadata(layout: LakeLayout, ref: PartitionRef) -> dict[str, Any]:
    path = layout.partition_metadata(ref)
    if not path.exists():
        return {}
    return read_json(path)


def record_batch_in_partition(
    layout: LakeLayout,
    ref: PartitionRef,
    job_id: str,
    rows: int,
    schema: pa.Schema | None,
    manifest: dict[str, Any],
    promotions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Update the partition's ``_metadata.json`` with one processed batch; return the new document.

    ``schema`` is the partition's schema contract after this batch (see ``schema_contract``) and ``promotions``
    the widenings this batch caused; both are recorded under ``contract``."""
    doc = read_partition_metadata(layout, ref) or {**ref.as_dict(), "created_at": utc_now_iso(), "batches": []}
    batches = [b for b in doc.get("batches", []) if b.get("job_id") != job_id]
    batches.append(
        {
            "job_id": job_id,
            "rows": rows,
            "created_at": manifest.get("created_at"),
            "ingested_at": utc_now_iso(),
            "description": manifest.get("description", ""),
        }
    )
    doc.update(
        data_type=manifest.get("data_type"),
        meta=manifest.get("meta", {}),
        description=manifest.get("description") or doc.get("description", ""),
        batches=batches,
        row_count=sum(b["rows"] for b in batches),
        updated_at=utc_now_iso(),
    )
    if schema is not None:
        doc["schema"] = schema_description(schema)
        recorded = doc.get("contract", {}).get("promotions", [])
        doc["contract"] = contract_json(schema, recorded + list(promotions or []))
    write_json_atomic(layout.partition_metadata(ref), doc)
    return doc


def partition_contract(layout: LakeLayout, ref: PartitionRef, exclude: Path | None = None) -> pa.Schema | None:
    """The partition's schema contract: the one in ``_metadata.json`` widened by every part file's schema (a part
    whose metadata update was interrupted, or a lake older than contracts); ``None`` for an empty partition.
    Raises :class:`SchemaContractError` when stored parts already disagree beyond promotion."""
    schemas = [(p, open_parquet(p).schema_arrow) for p in partition_files(layout, ref) if p != exclude]
    return fold_schemas(contract_from_json(read_partition_metadata(layout, ref)), schemas, ref.key)


def contract_differs(layout: LakeLayout, ref: PartitionRef, contract: pa.Schema) -> bool:
    """Whether ``contract`` differs from the one recorded in the partition's ``_metadata.json`` (or none is)."""
    recorded = contract_from_json(read_partition_metadata(layout, ref))
    return recorded is None or not recorded.equals(contract)


def contract_disagreements(layout: LakeLayout, ref: PartitionRef) -> list[str]:
    """One line per stored part-file column whose type differs from the partition's contract (empty when they all
    agree, or the partition has no contract). Readers that take each file's own schema (DuckDB's ``read_parquet``)
    see such a partition as holding two types for one column."""
    contract = contract_from_json(read_partition_metadata(layout, ref))
    if contract is None:
        return []
    problems = []
    for path in partition_files(layout, ref):
        for f in open_parquet(path).schema_arrow:
            if f.name in contract.names and not same_type(f.type, contract.field(f.name).type):
                problems.append(
                    f"{path.name}: column {f.name!r} is stored as {f.type} but the partition's contract says "
                    f"{contract.field(f.name).type} (run `datalake catalog compact` to rewrite it)"
                )
    return problems


def conform_parts(layout: LakeLayout, ref: PartitionRef, contract: pa.Schema, batch_size: int = 10_000) -> list[Path]:
    """Rewrite, in the contract's types, every part file of the partition holding a column of another type; return
    the rewritten files. Called after a batch widened the contract (int32 -> int64, list -> large_list, a decimal's
    precision, a new struct field, null -> a type), under the partition lock, so every part file always agrees with
    the contract and every reader gets one type per column. Each file is replaced atomically (rename); its rows,
    ``row_hash`` values and columns are unchanged (the casts are widenings the contract accepted)."""
    rewritten = []
    for path in partition_files(layout, ref):
        schema = open_parquet(path).schema_arrow
        if all(f.name not in contract.names or same_type(f.type, contract.field(f.name).type) for f in schema):
            continue
        target = pa.schema(
            [contract.field(f.name) if f.name in contract.names else f for f in schema], metadata=schema.metadata
        )
        writer = PartWriter(path)
        try:
            for batch in open_parquet(path).iter_batches(batch_size=batch_size):
                writer.write(cast_table(pa.Table.from_batches([batch], schema=schema), target))
            if writer.commit() is None:  # a part without rows (never published by processing): left as it is
                continue
        except BaseException:
            writer.abort()
            raise
        rewritten.append(path)
    return rewritten


def unified_schema(paths: list[Path]) -> pa.Schema:
    schemas = [open_parquet(p).schema_arrow for p in paths]
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowException, TypeError) as exc:
        raise CatalogError(f"part files of {paths[0].parent} have incompatible columns: {exc}") from None


def read_schema(layout: LakeLayout, ref: PartitionRef, paths: list[Path]) -> pa.Schema:
    """The schema every row of the partition is read in: its contract, or for parts that predate contracts and
    disagree beyond promotion, pyarrow's permissive unification (raises :class:`CatalogError` when even that fails)."""
    try:
        contract = partition_contract(layout, ref)
    except SchemaContractError:
        contract = None
    return contract if contract is not None else unified_schema(paths)


def iter_partition_batches(
    layout: LakeLayout, ref: PartitionRef, batch_size: int = 10_000, columns: list[str] | None = None
) -> Iterator[pa.Table]:
    """Every row of a partition, a record batch at a time, cast to the partition's contract schema."""
    paths = partition_files(layout, ref)
    if not paths:
        return
    schema = read_schema(layout, ref, paths)
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns if c in schema.names])
    for path in paths:
        pf = open_parquet(path)
        present = [n for n in schema.names if n in pf.schema_arrow.names]
        try:
            for batch in pf.iter_batches(batch_size=batch_size, columns=present):
                yield conform(pa.Table.from_batches([batch]), schema)
        except (pa.ArrowException, OSError) as exc:
            raise CatalogError(f"cannot read catalog file {path}: {exc}") from None


@dataclass
class CompactionResult:
    partition: str
    files_before: int
    rows: int
    duplicates_dropped: int
    path: Path | None
    rows_deleted: int = 0  # rows of ``drop_batches`` left out
    catalog_version: str | None = None  # the catalog version a published rebuild recorded (lifecycle/versions.py)


def compact_partition(
    layout: LakeLayout, ref: PartitionRef, batch_size: int = 10_000, drop_batches: frozenset[str] = frozenset()
) -> CompactionResult:
    """Merge every part file into ``data.parquet`` (streaming), in the partition's contract schema; idempotent.

    Rows are a multiset: identical rows have distinct ``row_hash`` values (occurrence numbers, see
    ``row_identity``), so only a row stored twice under one ``row_hash`` (a part file written again after an
    interrupted run) is dropped; repeats of one content are kept. Rows whose ``batch_id`` is in ``drop_batches``
    are left out (``datalake delete --batch``); with no row left, no ``data.parquet`` remains."""
    paths = partition_files(layout, ref)
    if not paths:
        return CompactionResult(ref.key, 0, 0, 0, None)
    target = layout.compacted_file(ref)
    writer = PartWriter(target)
    seen: set[str] = set()
    dropped = deleted = 0
    gone = pa.array(sorted(drop_batches), pa.string())
    try:
        for table in iter_partition_batches(layout, ref, batch_size):
            if drop_batches and BATCH_ID in table.column_names:
                keep_mask = pc.invert(pc.fill_null(pc.is_in(table.column(BATCH_ID), value_set=gone), False))
                kept = table.filter(keep_mask)
                deleted += table.num_rows - kept.num_rows
                table = kept
            if ROW_HASH in table.column_names:
                hashes = table.column(ROW_HASH).to_pylist()
                keep = []
                for i, h in enumerate(hashes):
                    if h is not None and h in seen:
                        dropped += 1
                        continue
                    seen.add(h)
                    keep.append(i)
                if len(keep) != table.num_rows:
                    table = table.take(pa.array(keep, pa.int64()))
            writer.write(table)
        if writer.schema is None:
            writer.write(pa.Table.from_batches([], schema=read_schema(layout, ref, paths)))
        published = writer.commit()  # None without rows (its temporary file removed)
    except BaseException:
        writer.abort()
        raise
    for path in paths:
        if path != target:
            path.unlink(missing_ok=True)
    if published is None:
        target.unlink(missing_ok=True)
    meta = read_partition_metadata(layout, ref)
    if meta:
        meta.update(row_count=writer.rows, compacted_at=utc_now_iso())
        if writer.schema is not None:
            meta["schema"] = schema_description(writer.schema)
            meta["contract"] = contract_json(writer.schema, meta.get("contract", {}).get("promotions", []))
        write_json_atomic(layout.partition_metadata(ref), meta)
    return CompactionResult(ref.key, len(paths), writer.rows, dropped, published, deleted)

"""Catalog rows of one chunk of a batch: user columns, image/file facts, meta fields, bookkeeping, ``row_hash``."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from ..catalog.parts import BATCH_ID, INGESTED_AT, INGESTED_AT_TYPE, ROW_HASH, file_fields, image_fields
from .asset_store import StoredFile
from .hash_index import IndexEntry
from .manifest import BatchManifest
from .row_identity import RowIdentity

BOOKKEEPING_FIELDS = [
    pa.field(BATCH_ID, pa.string()),
    pa.field(INGESTED_AT, INGESTED_AT_TYPE),
    pa.field(ROW_HASH, pa.string()),
]


def _entry_of(outcome: StoredFile | None) -> IndexEntry | None:
    """The index entry of a kept row's file (``None``: the cell names no file). A kept row has no file error, so
    each of its files was stored or found and carries its entry; raises ``ValueError`` if one does not."""
    if outcome is None:
        return None
    if outcome.entry is None:
        raise ValueError(f"stored file {outcome.sha256} has no index entry ({outcome.error or 'no error'})")
    return outcome.entry


def _file_column_fields(name: str, manifest: BatchManifest) -> list[pa.Field]:
    return file_fields(name) if name in manifest.file_columns else image_fields(name)


def meta_array(value: Any, n: int) -> pa.Array:
    """A meta field's value repeated for ``n`` rows (type inferred by pyarrow from the value)."""
    return pa.array([value] * n)


def schema_metadata(schema: pa.Schema) -> dict[bytes, bytes] | None:
    """The upload's schema-level metadata the catalog keeps (e.g. GeoParquet's ``geo``). ``pandas`` is left out:
    it describes the uploaded DataFrame's columns and index, not the catalog's."""
    kept = {k: v for k, v in (schema.metadata or {}).items() if k != b"pandas"}
    return kept or None


def catalog_schema(schema: pa.Schema, manifest: BatchManifest) -> pa.Schema:
    """The schema the batch's catalog rows will have, known before any file is stored (for the schema contract)."""
    files = set(manifest.image_columns) | set(manifest.file_columns)
    fields: list[pa.Field] = []
    for fld in schema:
        fields += _file_column_fields(fld.name, manifest) if fld.name in files else [fld]
    fields += [pa.field(key, meta_array(value, 1).type) for key, value in manifest.meta.items()]
    return pa.schema(fields + BOOKKEEPING_FIELDS, metadata=schema_metadata(schema))


def catalog_rows(
    table: pa.Table,
    keep_idx: list[int],
    stored: dict[str, list[StoredFile | None]],
    manifest: BatchManifest,
    ingested_at: Any,
    identity: RowIdentity,
) -> pa.Table:
    """The kept rows of ``table`` as catalog rows. ``row_hash`` comes from ``identity`` (see ``row_identity``) over
    the content: user columns with each image/file replaced by its upload's SHA-256, plus the meta fields."""
    n = len(keep_idx)
    kept = table.take(pa.array(keep_idx, pa.int64()))
    columns: dict[str, pa.Array] = {}
    content: dict[str, Any] = {}
    fields: list[pa.Field] = []
    for fld in table.schema:
        if fld.name in stored:
            entries = [_entry_of(stored[fld.name][i]) for i in keep_idx]
            values: list[list[Any]] = [
                [e.path if e else None for e in entries],
                [e.stored_sha256 if e else None for e in entries],
            ]
            if fld.name in manifest.file_columns:
                values.append([e.size if e else None for e in entries])
            else:
                values += [
                    [e.width if e else None for e in entries],
                    [e.height if e else None for e in entries],
                    [e.format if e else None for e in entries],
                    [e.mode if e else None for e in entries],
                    [(e.orientation or None) if e else None for e in entries],  # 0 = no tag
                    [e.phash if e else None for e in entries],
                ]
            for f, v in zip(_file_column_fields(fld.name, manifest), values):
                columns[f.name] = pa.array(v, f.type)
                fields.append(f)
            content[fld.name] = pa.array([e.sha256 if e else None for e in entries], pa.string())
        else:
            columns[fld.name] = content[fld.name] = kept.column(fld.name)
            fields.append(fld)
    for key, value in manifest.meta.items():
        columns[key] = content[key] = meta_array(value, n)
        fields.append(pa.field(key, columns[key].type))
    columns[BATCH_ID] = pa.array([manifest.job_id] * n, pa.string())
    columns[INGESTED_AT] = pa.array([ingested_at] * n, INGESTED_AT_TYPE)
    columns[ROW_HASH] = pa.array(identity.row_hashes(pa.table(content)), pa.string())
    fields += BOOKKEEPING_FIELDS
    schema = pa.schema(fields, metadata=schema_metadata(table.schema))
    return pa.Table.from_arrays([columns[f.name] for f in fields], schema=schema)

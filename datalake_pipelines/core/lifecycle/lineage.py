"""Lineage: from a catalog row, an asset or a batch back to the source the batch was staged from.

The chain is row -> batch -> source (file or URL and its sha256, upload method, host and user, staged time) ->
run (run id, partition, part file). Rows are looked up with DuckDB over the catalog (:class:`DuckDBClient`, the
lake's query layer, both backends); batches through their job records (``logs/jobs/<batch>.json``, which hold
the manifest's ``source``: see :mod:`~datalake_pipelines.core.ingest.provenance`).

An identifier is tried as a ``row_hash``, then as an asset's sha256 (the ``<col>_sha256`` columns: every row and
dataset referencing it, what to check before a deletion request), then as a batch id.
"""

from __future__ import annotations

import io
import json
import re
from datetime import datetime
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..catalog.parts import BATCH_ID, INGESTED_AT, PARTITION_COLUMNS, ROW_HASH
from ..catalog.query import DuckDBClient
from ..catalog.query_sql import quote_identifier
from ..errors import DatalakeError
from ..ingest.manifest import JOB_ID_PATTERN
from ..ingest.verify import stored_file_columns
from ..lake import keys
from ..lake.batches import BatchReader, current_part_file, deletion_note, record_state
from .refs import DATA_FILE_BATCH_PREFIX

HEX64 = re.compile(r"^[0-9a-f]{64}$")
ROW_FIELDS = (*PARTITION_COLUMNS, BATCH_ID, ROW_HASH, INGESTED_AT)
BATCH_KEYS = (
    "batch_id",
    "status",
    "partition",
    "source",
    "run_id",
    "part_file",
    "rows_added",
    "finished_at",
    "deletion",
)


class LineageNotFound(DatalakeError):
    """The identifier is no row_hash, asset sha256 or batch id of the lake."""


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def catalog_rows(lake: Any, column_of: str, value: str) -> list[dict[str, Any]]:
    """Catalog rows where ``column_of`` equals ``value``: ``row_hash``/``batch_id`` (``column`` None), or
    ``"asset"``: every stored-file column whose ``<col>_sha256`` is ``value`` (``column`` and ``path`` set).
    Each row: partition columns, ``batch_id``, ``row_hash``, ``ingested_at`` (ISO 8601), ``column``, ``path``."""
    with DuckDBClient(base_path=lake.base) as db:
        plan = db.plan_retrieval()
        if plan.empty:
            return []
        names = list(db.describe(plan.files))
        fields = ", ".join(quote_identifier(c) for c in ROW_FIELDS if c in names)
        params: dict[str, Any] = {**plan.source_params, "value": value}
        if column_of != "asset":
            selects = [
                f'SELECT {fields}, NULL AS "column", NULL AS path FROM {plan.source} '
                f"WHERE {quote_identifier(column_of)} = $value"
            ]
        else:
            files = stored_file_columns(names)
            params.update({f"col{i}": col for i, col in enumerate(files)})  # names bound, never spliced in
            selects = [
                f'SELECT {fields}, $col{i} AS "column", {quote_identifier(col)} AS path FROM {plan.source} '
                f"WHERE {quote_identifier(col + '_sha256')} = $value"
                for i, col in enumerate(files)
            ]
        if not selects or column_of not in (*names, "asset"):
            return []
        sql = " UNION ALL ".join(selects) + f" ORDER BY {', '.join(c for c in ROW_FIELDS if c in names)}"
        rows = db.con.sql(sql, params=params).fetchall()
        columns = [c for c in ROW_FIELDS if c in names] + ["column", "path"]
    return [{k: _plain(v) for k, v in zip(columns, row)} for row in rows]


def retained_rows(lake: Any, row_hash: str) -> list[dict[str, Any]]:
    """The rows of ``row_hash`` in the retained catalog files of deletions (``catalog_retained/``, kept until
    GC's retention passes), one per partition, each with ``deletion_id`` of the deletion that removed it and
    the partition's keys (read from the retained file's hive path: the columns are not in the file).

    Every deletion retains the whole partition it touched, so a row kept by one deletion can be retained again
    by a later one; the deletion that removed it is the *latest* that retained it (ids sort by time): no later
    deletion can have copied a row already gone. A miss reads the ``row_hash`` column of each retained file:
    only on the not-found path."""
    found: dict[str, dict[str, Any]] = {}
    for obj in sorted(lake.storage.list(keys.RETAINED), key=lambda o: o.key):
        if not obj.key.endswith(".parquet"):
            continue
        deletion_id, _, rest = obj.key[len(keys.RETAINED) + 1 :].partition("/")
        hive = dict(part.split("=", 1) for part in rest.split("/")[:-1] if "=" in part)
        partition = "/".join(hive.get(c, "") for c in PARTITION_COLUMNS)
        if found.get(partition, {}).get("deletion_id", "") >= deletion_id:
            continue
        parquet = pq.ParquetFile(io.BytesIO(lake.storage.read_bytes(obj.key)))
        names = parquet.schema_arrow.names
        if ROW_HASH not in names or not pc.any(pc.equal(parquet.read([ROW_HASH])[ROW_HASH], row_hash)).as_py():
            continue
        table = parquet.read([c for c in ROW_FIELDS if c in names])
        hits = table.filter(pc.equal(table[ROW_HASH], row_hash))
        if hits.num_rows:
            row = {c: _plain(hits[c][0].as_py()) for c in ROW_FIELDS if c in hits.column_names}
            row.update({c: hive[c] for c in PARTITION_COLUMNS if c in hive})
            found[partition] = {**row, "column": None, "path": None, "deletion_id": deletion_id}
    return [found[k] for k in sorted(found)]


def batch_lineage(lake: Any, batch_id: str) -> dict[str, Any] | None:
    """A batch's link to its source and run from its job record, or its state when it has none yet (pending,
    claimed, failed before a run); None when the lake has no batch of that id."""
    try:
        record = json.loads(lake.storage.read_bytes(keys.job_record(batch_id)))
    except (OSError, ValueError):
        record = None
    if isinstance(record, dict):
        deleted = record.get("deleted") if isinstance(record.get("deleted"), dict) else None
        return {
            "batch_id": batch_id,
            "status": record_state(record) if deleted else record.get("status"),
            "partition": record.get("partition"),
            "source": record.get("source") or {},
            "run_id": record.get("run_id"),
            "part_file": current_part_file(lake.storage, record),  # None once deleted
            "rows_added": record.get("rows_added"),
            "finished_at": record.get("finished_at"),
            "deletion": deleted,
        }
    places = BatchReader(lake.storage, lake.kind == "local").where(batch_id)
    if not places:
        return None
    state = "processing" if "processing" in places else "pending" if "pending" in places else "failed"
    return {**dict.fromkeys(BATCH_KEYS), "batch_id": batch_id, "status": state, "source": {}}


def asset_entry(lake: Any, sha256: str) -> dict[str, Any] | None:
    """The hash index's entry of an asset (``path``, ``size``, ``kind``, ``provider``/``dataset`` and
    ``first_batch_id`` of its first upload, ``created_at``; ``method`` ``create_data_file`` when that upload
    was one), or None when the lake has not stored it."""
    with lake.hash_index() as index:
        entry = index.get(sha256) if index is not None else None
    if entry is None:
        return None
    first = entry.first_batch_id
    return {
        "sha256": entry.sha256,
        "path": entry.path,
        "size": entry.size,
        "kind": entry.kind,
        "provider": entry.provider,
        "dataset": entry.dataset,
        "first_batch_id": first,
        "created_at": entry.created_at,
        "method": "create_data_file" if str(first).startswith(DATA_FILE_BATCH_PREFIX) else None,
    }


def _with_batches(lake: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    batches: dict[str, dict[str, Any] | None] = {}
    for row in rows:
        batch_id = row.get(BATCH_ID)
        if batch_id and batch_id not in batches:
            batches[batch_id] = batch_lineage(lake, batch_id)
        row["batch"] = batches.get(batch_id) if batch_id else None
    return rows


def _partition(row: dict[str, Any]) -> str:
    return "/".join(str(row.get(c)) for c in PARTITION_COLUMNS)


def lineage(lake: Any, ident: str) -> dict[str, Any]:
    """The lineage of ``ident`` (a row_hash, an asset sha256 or a batch id) in ``lake`` (a ``core.lake`` Lake).

    Returns ``{"kind": "row" | "asset" | "batch", "id", "rows": [...], "batches": {batch_id: {...}}, ...}``:
    each row has its partition columns, ``batch_id``, ``row_hash``, ``ingested_at``, ``column``/``path`` (for an
    asset) and ``batch`` (``batch_id``, ``status``, ``partition``, ``source`` {method, kind, path or url, sha256,
    host, user, staged_at, ...}, ``run_id``, ``part_file`` (the file holding its rows now: the compacted file once
    its part was merged, None once deleted), ``rows_added``, ``finished_at``, ``deletion`` (``deletion_id``,
    ``who``, ``deleted_at``, ``retained`` once ``datalake delete`` removed it, ``status`` then ``deleted``)). An
    asset adds ``asset`` (its hash-index entry, :func:`asset_entry`; an asset only ``create_data_file`` stored has no
    row), ``datasets`` and ``partitions`` (sorted, unique), and when no row references an ingested asset
    ``first_batch`` (the lineage of the batch that first stored it, e.g. ``deleted`` with its deletion; GC removes
    such assets); a batch adds ``batch``, ``rows_in_catalog`` and its rows.
    Raises :class:`LineageNotFound` when the lake has no such row, asset or batch.
    """
    ident = ident.strip()
    if HEX64.match(ident.lower()):
        sha = ident.lower()
        rows = catalog_rows(lake, ROW_HASH, sha)
        if rows:
            return {"kind": "row", "id": sha, "rows": _with_batches(lake, rows)}
        rows = catalog_rows(lake, "asset", sha)
        stored = asset_entry(lake, sha)
        if rows or stored:
            rows = _with_batches(lake, rows)
            doc = {
                "kind": "asset",
                "id": sha,
                "asset": stored,
                "rows": rows,
                "datasets": sorted({f"{r['provider']}/{r['dataset']}" for r in rows}),
                "partitions": sorted({_partition(r) for r in rows}),
            }
            if stored and not rows and not stored["method"]:  # no row references it now: what became of its batch
                doc["first_batch"] = batch_lineage(lake, stored["first_batch_id"])
            return doc
        rows = retained_rows(lake, sha)
        if rows:  # a deleted row whose deletion's retained files GC has not purged yet
            return {"kind": "row", "id": sha, "deleted": True, "rows": _with_batches(lake, rows)}
    batch = batch_lineage(lake, ident) if JOB_ID_PATTERN.match(ident) and ".." not in ident else None
    if batch is None:
        raise LineageNotFound(f"{ident!r} is no row_hash, asset sha256 or batch id of the lake at {lake.base}")
    rows = catalog_rows(lake, BATCH_ID, ident)
    return {"kind": "batch", "id": ident, "batch": batch, "rows_in_catalog": len(rows), "rows": rows}


def lineage_text(doc: dict[str, Any]) -> str:
    """``datalake lineage`` without ``--json``: one line per link of the chain."""
    lines: list[str] = []
    if doc["kind"] == "batch":
        lines += _batch_lines(doc["batch"], "")
        lines.append(f"rows in the catalog: {doc['rows_in_catalog']}")
        return "\n".join(lines)
    if doc["kind"] == "asset":
        stored = doc.get("asset") or {}
        if doc["rows"] or stored.get("method"):  # a create_data_file asset has no row by design, and is kept
            lines.append(
                f"asset {doc['id']}: {len(doc['rows'])} row(s) in {len(doc['datasets'])} dataset(s): "
                + ", ".join(doc["datasets"])
            )
        else:
            lines.append(f"asset {doc['id']}: no catalog row references it now (`datalake gc` removes such assets)")
        if stored:
            how = f" by {stored['method']}" if stored.get("method") else ""
            lines.append(
                f"  stored at {stored['path']} ({stored['size']} bytes) first{how} in batch "
                f"{stored['first_batch_id']} of {stored['provider']}/{stored['dataset']}, {stored['created_at']}"
            )
        first = doc.get("first_batch")
        if first and first.get("deletion"):
            lines.append(f"  its first batch {first['batch_id']} was {deletion_note(first['deletion'])}")
        elif first:
            lines.append(f"  its first batch {first['batch_id']} is {first.get('status') or 'unknown'}")
    for row in doc["rows"]:
        where = f" column {row['column']} ({row['path']})" if row.get("column") else ""
        gone = f", deleted by deletion {row['deletion_id']}" if row.get("deletion_id") else ""
        lines.append(f"row {row[ROW_HASH]} in {_partition(row)}{where}, ingested {row.get(INGESTED_AT)}{gone}")
        lines += _batch_lines(row.get("batch") or {"batch_id": row.get(BATCH_ID), "source": {}}, "  ")
    return "\n".join(lines)


def _batch_lines(batch: dict[str, Any], indent: str) -> list[str]:
    src = batch.get("source") or {}
    origin = src.get("url") or src.get("path") or f"(in-memory {src.get('type') or 'data'})"
    who = f"{src.get('user') or '?'}@{src.get('host') or '?'}"
    return [
        f"{indent}batch {batch.get('batch_id')} ({batch.get('status') or 'unknown'})",
        f"{indent}  source: {origin} sha256:{src.get('sha256') or '?'}" if src else f"{indent}  source: not recorded",
        f"{indent}  method: {src.get('method') or '?'}, staged by {who} at {src.get('staged_at') or '?'}",
        f"{indent}  run: {batch.get('run_id') or '(none: processed outside Dagster)'}, partition "
        f"{batch.get('partition')}, part file {batch.get('part_file') or '(none)'}",
        *([f"{indent}  {deletion_note(batch['deletion'])}"] if batch.get("deletion") else []),
    ]

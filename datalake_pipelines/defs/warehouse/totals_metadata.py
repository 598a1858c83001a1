"""``duckdb_catalog`` metadata: the lake's totals per provider and dataset as a table, and lake-wide figures.

The lake-wide figures are plain ints/floats (``bytes_stored``, ``assets``, ``dedup_ratio_pct``, ...), which the
asset's page plots over its materializations; each byte count has a ``*_human`` text twin (``"213.3 kB"``).
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from ...core.catalog.totals import DATASET_FIELDS, LakeTotals
from ...core.figures import format_bytes
from ...lib.asset_info import table_schema

BYTE_FIELDS = ("catalog_bytes", "bytes_stored")
DESCRIPTIONS = {
    "provider": "Provider (partition level 1).",
    "dataset": "Dataset (partition level 2).",
    "partitions": "Catalog partitions (task/variant) of the dataset.",
    "rows": "Catalog rows.",
    "catalog_bytes": "Bytes of the dataset's catalog Parquet files.",
    "catalog_size": "catalog_bytes in decimal units (kB = 1000 B).",
    "assets": "Files in the content-addressed store that this dataset stored first.",
    "bytes_stored": "Bytes of those files.",
    "stored_size": "bytes_stored in decimal units (kB = 1000 B).",
    "file_refs": "References to stored files in the dataset's rows (non-null <col>_sha256 values).",
    "distinct_files": "Distinct file contents those references name.",
    "dedup_ratio_pct": "Percent of references that reused an already stored file: 100 * (refs - distinct) / refs.",
}
TYPES = {"provider": "string", "dataset": "string", "catalog_size": "string", "stored_size": "string"}
HUMAN = {"catalog_bytes": "catalog_size", "bytes_stored": "stored_size"}


def _columns() -> list[str]:
    columns: list[str] = []
    for name in DATASET_FIELDS:
        columns.append(name)
        if name in HUMAN:
            columns.append(HUMAN[name])
    return columns


TABLE_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn(c, TYPES.get(c, "float" if c.endswith("_pct") else "int"), description=DESCRIPTIONS[c])
        for c in _columns()
    ]
)


def totals_metadata(totals: LakeTotals) -> dict[str, Any]:
    """``lake_totals`` (a ``MetadataValue.table`` with :data:`TABLE_SCHEMA`), lake-wide figures with units, and the
    ``catalog`` view's ``dagster/column_schema`` with the lake's own columns described."""
    records = []
    for item in totals.datasets:
        row = dict(item)
        for raw, human in HUMAN.items():
            row[human] = format_bytes(item[raw])
        records.append(dg.TableRecord({c: row[c] for c in _columns()}))
    t = totals.totals
    return {
        "lake_totals": dg.MetadataValue.table(records, schema=TABLE_SCHEMA),
        "datasets": t["datasets"],
        "assets": t["assets"],
        "bytes_stored": t["bytes_stored"],
        "bytes_stored_human": format_bytes(t["bytes_stored"]),
        "catalog_bytes": t["catalog_bytes"],
        "catalog_bytes_human": format_bytes(t["catalog_bytes"]),
        "file_refs": t["file_refs"],
        "distinct_files": t["distinct_files"],
        "dedup_ratio_pct": t["dedup_ratio_pct"],
        "dagster/column_schema": table_schema(totals.columns, set(totals.file_columns)),
    }

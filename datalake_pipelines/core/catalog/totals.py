"""Lake-wide totals per provider and dataset, computed with DuckDB over the refreshed ``catalog.duckdb``.

For each ``(provider, dataset)``:

- ``partitions``, ``rows``, ``catalog_bytes``: catalog partitions, rows and Parquet bytes (``partitions`` table);
- ``assets``, ``bytes_stored``: files in the content-addressed store and their bytes (``hash_index`` table; a
  file belongs to the dataset that stored it first, later datasets holding the same bytes reuse it);
- ``file_refs``, ``distinct_files``: references to stored files in catalog rows (the non-null ``<col>_sha256``
  values of the file columns ``<col>``) and how many distinct contents they name;
- ``dedup_ratio_pct``: the share of references that did not need a new file, ``100 * (refs - distinct) / refs``.

The lake totals add these up, except ``distinct_files`` (and so the ratio), which is counted over the whole lake:
the same image in two datasets is one stored file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from ..figures import percent
from .parts import PARTITION_COLUMNS
from .query import DuckDBClient

SHA_SUFFIX = "_sha256"
DATASET_FIELDS = (
    "provider",
    "dataset",
    "partitions",
    "rows",
    "catalog_bytes",
    "assets",
    "bytes_stored",
    "file_refs",
    "distinct_files",
    "dedup_ratio_pct",
)
SUMMED = ("partitions", "rows", "catalog_bytes", "assets", "bytes_stored", "file_refs")


@dataclass
class LakeTotals:
    """``datasets``: one dict per (provider, dataset) with :data:`DATASET_FIELDS`, sorted; ``totals``: the same
    figures for the whole lake (no provider/dataset); ``columns``: the ``catalog`` view's ``(name, type)``;
    ``file_columns``: the columns holding stored files' paths (each has a ``<col>_sha256`` column)."""

    datasets: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)
    columns: list[tuple[str, str]] = field(default_factory=list)
    file_columns: list[str] = field(default_factory=list)


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def file_columns_of(columns: list[str]) -> list[str]:
    """``<col>`` for every ``<col>_sha256`` whose ``<col>`` is a column too (the lake's file columns)."""
    names = set(columns)
    return sorted(c[: -len(SHA_SUFFIX)] for c in columns if c.endswith(SHA_SUFFIX) and c[: -len(SHA_SUFFIX)] in names)


def _references_sql(file_columns: list[str]) -> str:
    shas = ", ".join(quote(c + SHA_SUFFIX) for c in file_columns)
    return f"SELECT provider, dataset, unnest([{shas}]) AS sha FROM catalog"


def lake_totals(con: duckdb.DuckDBPyConnection) -> LakeTotals:
    """Totals from a connection where ``catalog``, ``partitions`` and ``hash_index`` can be read (a
    ``DuckDBClient``'s connection after its views are set up). Reads the ``<col>_sha256`` columns of the catalog
    rows only (projection), and the two small tables."""
    columns = [(r[0], r[1]) for r in con.execute("DESCRIBE catalog").fetchall()]
    file_columns = file_columns_of([n for n, _ in columns])
    keys = ", ".join(PARTITION_COLUMNS[:2])
    if file_columns:
        refs = (
            f"SELECT {keys}, count(sha) AS file_refs, count(DISTINCT sha) AS distinct_files "
            f"FROM ({_references_sql(file_columns)}) GROUP BY ALL"
        )
    else:  # no file column anywhere (or an empty catalog): no references
        refs = (
            "SELECT NULL::VARCHAR AS provider, NULL::VARCHAR AS dataset, 0::BIGINT AS file_refs, "
            "0::BIGINT AS distinct_files WHERE false"
        )
    sql = f"""
        WITH p AS (SELECT {keys}, count(*) AS partitions, sum(rows) AS rows, sum(bytes) AS catalog_bytes
                   FROM partitions GROUP BY ALL),
             h AS (SELECT {keys}, count(*) AS assets, sum(size) AS bytes_stored FROM hash_index GROUP BY ALL),
             r AS ({refs})
        SELECT {keys},
               coalesce(p.partitions, 0), coalesce(p.rows, 0), coalesce(p.catalog_bytes, 0),
               coalesce(h.assets, 0), coalesce(h.bytes_stored, 0),
               coalesce(r.file_refs, 0), coalesce(r.distinct_files, 0)
        FROM p FULL OUTER JOIN h USING ({keys}) FULL OUTER JOIN r USING ({keys})
        ORDER BY {keys}
    """
    datasets = []
    for row in con.execute(sql).fetchall():
        item = dict(zip(DATASET_FIELDS[:-1], (row[0], row[1], *map(int, row[2:]))))
        item["dedup_ratio_pct"] = percent(item["file_refs"] - item["distinct_files"], item["file_refs"])
        datasets.append(item)
    totals: dict[str, Any] = {k: sum(d[k] for d in datasets) for k in SUMMED}
    totals["datasets"] = len(datasets)
    totals["distinct_files"] = (
        int(con.execute(f"SELECT count(DISTINCT sha) FROM ({_references_sql(file_columns)})").fetchall()[0][0])
        if file_columns
        else 0
    )
    totals["dedup_ratio_pct"] = percent(totals["file_refs"] - totals["distinct_files"], totals["file_refs"])
    return LakeTotals(datasets, totals, columns, file_columns)


def read_lake_totals(base: str | Path) -> LakeTotals:
    """:func:`lake_totals` of the lake at ``base`` (a folder or ``s3://bucket/prefix``) through ``DuckDBClient``:
    its refreshed ``catalog.duckdb`` (on S3 the cached copy) plus the ``catalog`` view over the Parquet files."""
    with DuckDBClient(base_path=base) as client:
        client.sql("SELECT 1")  # sets up the catalog (and on S3 the partitions/hash_index) views
        return lake_totals(client.con)

"""``DuckDBClient``: partition retrieval and text search over the Parquet catalog.

Pruning: the partition folders are walked level by level (provider, dataset, task, variant) and only the
filtered branches are listed, so a query reads exactly the Parquet files of the selected partitions
(``read_parquet($files, ...)``); files of other partitions are never opened. Every user value is a bound
parameter; column names are checked against the selection's schema and quoted (:mod:`.query_sql`). The text
search query is written by :mod:`.search`.

S3 lakes (``s3://bucket/prefix``): the same walk lists prefixes instead of folders, and the selected files are
read through a ``pyarrow`` dataset registered in DuckDB (see :mod:`.catalog_s3`, which also says why not
``httpfs``); the queries, their parameters and their results are the same as on a local lake.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from ..arrow.restore import local_schema, restore_reader, restore_table, selection_schema
from ..errors import DatalakeError
from ..lake.layout import LakeLayout, resolve_base_path
from ..lake.open import lake_base, lake_kind
from ..lifecycle import as_of as as_of_mod
from ..storage.backends import open_storage
from .parts import INGESTED_AT, PARTITION_COLUMNS, CatalogError
from .query_sql import check_columns, limit_sql, quote_identifier, where_sql
from .search import check_search, search_sql
from .warehouse import (
    UnknownPartitionError,
    catalog_files,
    check_catalog_files,
    parquet_scan,
    partition_stats,
    select_partitions,
)

if TYPE_CHECKING:
    from .s3 import S3Catalog

__all__ = ["DuckDBClient", "QueryPlan", "UnknownPartitionError", "select_partitions"]


@dataclass
class QueryPlan:
    """A parameterised query over an explicit list of catalog files (paths, or ``s3://`` URIs).

    ``source`` is the relation the query reads (``read_parquet($files, ...)`` locally, a registered dataset
    on S3) and ``source_params`` the parameters it needs, for callers that build another query over it.
    """

    sql: str
    params: dict[str, Any]
    files: list[Path] | list[str]
    columns: list[str]
    keep: set[str] = field(default_factory=set)  # columns never dropped as all-null
    source: str = ""
    source_params: dict[str, Any] = field(default_factory=dict)
    restore: pa.Schema | None = None  # catalog Arrow types the result is cast back to (see .arrow_restore)

    @property
    def empty(self) -> bool:
        return not self.files


def drop_all_null_columns(table: pa.Table, keep: set[str] | frozenset[str] = frozenset()) -> pa.Table:
    """Drop columns that are null in every row (they exist only because of ``union_by_name``)."""
    if table.num_rows == 0:
        return table
    drop = [n for n in table.column_names if n not in keep and table.column(n).null_count == table.num_rows]
    return table.drop_columns(drop) if drop else table


def _finish(table: pa.Table, as_arrow: bool):
    return table if as_arrow else table.to_pandas()


class DuckDBClient:
    """Read-only queries over a lake's catalog: ``with DuckDBClient(base) as duck: duck.retrieve_partitions()``.

    ``db_path_or_base`` is the lake base folder or its ``catalog.duckdb``. If that file exists it is opened
    (read-only by default, retrying with backoff while another process holds a write lock) so :meth:`sql`
    sees its ``catalog`` view and ``partitions``/``hash_index`` tables; otherwise an in-memory database gets
    equivalent ``catalog`` and ``partitions`` views. Retrieval and search always read the Parquet files of the
    selected partitions directly, so they are never stale.

    An ``s3://bucket/prefix`` base (or its ``.../catalog.duckdb``) reads the lake on S3. The ``partitions`` and
    ``hash_index`` tables come from the cached ``catalog.duckdb`` that ``refresh_warehouse`` leaves in the lake's
    cache folder (``storage.cache_dir_for``) when it is there, else they are built in memory from the listing
    and the hash-index segments. The S3 ``catalog`` view cannot live in a DuckDB file (it reads a pyarrow
    dataset registered in the connection), so it is created in every connection, over the files listed then.
    """

    layout: LakeLayout | None  # None on S3
    s3: S3Catalog | None  # None on a local lake
    db_path: Path

    def __init__(
        self,
        db_path_or_base: str | Path | None = None,
        *,
        base_path: str | Path | None = None,
        read_only: bool = True,
        lock_timeout: float = 30.0,
    ):
        raw = base_path if base_path is not None else db_path_or_base
        self.s3 = None
        if lake_kind(raw) == "s3":
            from .s3 import S3Catalog, cached_duckdb_file

            base = lake_base(raw).rstrip("/")
            self.s3 = S3Catalog(base.rsplit("/", 1)[0] if base.endswith(".duckdb") else base)
            self.layout = None
            self.db_path = cached_duckdb_file(self.s3.base)
        else:
            self._init_local(resolve_base_path(raw))
        self.read_only = read_only
        self.con = self._connect(lock_timeout)
        self.con.execute("SET TimeZone = 'UTC'")
        self._in_memory = not self.db_path.exists()
        self._views_ready = not self._in_memory and self.s3 is None

    def _init_local(self, location: Path) -> None:
        if location.suffix == ".duckdb" or location.is_file():
            self.layout = LakeLayout(location.parent, create=False)
            self.db_path = location
        else:
            self.layout = LakeLayout(location, create=False)
            self.db_path = self.layout.duckdb_file

    @property
    def _local(self) -> LakeLayout:
        """The local lake's layout (callers have checked ``self.s3 is None``, so it is set)."""
        if self.layout is None:
            raise RuntimeError("this DuckDBClient reads an S3 lake; it has no local layout")
        return self.layout

    def _connect(self, lock_timeout: float) -> duckdb.DuckDBPyConnection:
        if not self.db_path.exists():
            return duckdb.connect(":memory:")
        deadline = time.monotonic() + lock_timeout
        delay = 0.05
        while True:
            try:
                return duckdb.connect(str(self.db_path), read_only=self.read_only)
            except duckdb.IOException:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    # lifecycle ---------------------------------------------------------------
    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> DuckDBClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # running -----------------------------------------------------------------
    @contextlib.contextmanager
    def _reading(self, files: Sequence[Path | str]) -> Iterator[None]:
        """Turn a DuckDB read failure into a ``CatalogError`` naming the unreadable file."""
        try:
            yield
        except duckdb.ConversionException as exc:  # values are cast up front; this is the last guard
            raise DatalakeError(f"query failed: {str(exc).splitlines()[0]}") from None
        except (duckdb.IOException, duckdb.InvalidInputException, pa.ArrowException) as exc:
            message = str(exc).splitlines()[0]
            named = [f for f in files if str(f).removeprefix("s3://") in message]  # pyarrow drops the scheme
            if named:
                raise CatalogError(f"cannot read catalog file {named[0]}: {message}") from None
            if self.s3 is None:  # on S3 every footer was read when the dataset was registered
                check_catalog_files(self._local, [Path(f) for f in files])
            raise

    def _source(self, files: list, at: datetime | None = None) -> tuple[str, dict[str, Any]]:
        """The relation reading ``files`` (only rows ingested at or before ``at`` when given) and its parameters."""
        if self.s3 is not None:
            source, params = quote_identifier(self.s3.register(self.con, files)), {}
        else:
            source, params = parquet_scan("$files"), _files_param(files)
        if at is None:
            return source, params
        return f"(SELECT * FROM {source} WHERE {quote_identifier(INGESTED_AT)} <= $as_of_ts)", {
            **params,
            "as_of_ts": at,
        }

    def _relation(self, sql: str, params: dict[str, Any], files: Sequence[Path | str]) -> duckdb.DuckDBPyRelation:
        with self._reading(files):
            return self.con.sql(sql, params=params)

    def describe(self, files: list[Path] | list[str]) -> dict[str, str]:
        """Column name -> DuckDB type of the union of ``files`` (partition columns first)."""
        if not files:
            return {c: "VARCHAR" for c in PARTITION_COLUMNS}
        source, params = self._source(files)
        rel = self._relation(f"SELECT * FROM {source} LIMIT 0", params, files)
        with self._reading(files):
            types = dict(zip(rel.columns, map(str, rel.types)))
        ordered = {c: types.pop(c) for c in PARTITION_COLUMNS if c in types}
        return {**ordered, **types}

    def run(self, plan: QueryPlan) -> pa.Table:
        """Execute a plan and return an Arrow table (empty plan: empty table with the plan's columns)."""
        if plan.empty:
            return pa.table({c: pa.array([], pa.string()) for c in plan.columns})
        rel = self._relation(plan.sql, plan.params, plan.files)
        with self._reading(plan.files):
            return restore_table(rel.to_arrow_table(), plan.restore)

    def stream(self, plan: QueryPlan, batch_size: int = 10_000) -> pa.RecordBatchReader:
        """Execute a plan as a bounded-memory reader of record batches."""
        if plan.empty:
            schema = pa.schema([(c, pa.string()) for c in plan.columns])
            return pa.RecordBatchReader.from_batches(schema, [])
        rel = self._relation(plan.sql, plan.params, plan.files)
        with self._reading(plan.files):
            reader = rel.to_arrow_reader(batch_size)

        def guarded() -> Iterator[pa.RecordBatch]:
            with self._reading(plan.files):
                yield from reader

        return restore_reader(pa.RecordBatchReader.from_batches(reader.schema, guarded()), plan.restore)

    def catalog_schema(self, files: list, columns: Sequence[str] | None) -> pa.Schema:
        """The stored Arrow types of ``columns`` over ``files``; a type conflict between partitions raises
        :class:`~.arrow_restore.TypeConflictError` naming the column, its types and the partitions."""
        s3 = self.s3  # a local name: the lambda keeps its narrowing
        if s3 is not None:
            return selection_schema(files, columns, lambda fs: [f.physical_schema for f in s3.fragments(fs)])
        return selection_schema(files, columns, lambda fs: [local_schema(Path(f)) for f in fs])

    # planning ----------------------------------------------------------------
    def _as_of_files(self, as_of: str | datetime, filters: tuple) -> tuple[list, datetime]:
        """The catalog files as of ``as_of`` (:mod:`..lifecycle.as_of`) and the time it means."""
        storage = self.s3.storage if self.s3 is not None else open_storage(self._local.base)
        at = as_of_mod.resolve(storage, as_of)
        picked = as_of_mod.snapshot(storage, at, filters)
        if self.s3 is not None:
            return self.s3.adopt([(f.info, f.ref) for f in picked]), at
        return [Path(self._local.base) / f.info.key for f in picked], at

    def _selection(self, providers, datasets, tasks, variants, columns, as_of=None):
        files: list[Path] | list[str]
        at = None
        as_of = as_of_mod.given(as_of)  # "" or blank: no as_of
        if as_of is not None:
            files, at = self._as_of_files(as_of, (providers, datasets, tasks, variants))
            if self.s3 is not None and files:
                self.catalog_schema(files, None)
        elif self.s3 is not None:
            files = self.s3.files(self.s3.select(providers, datasets, tasks, variants))
            # the registered pyarrow dataset needs one schema over every column: refuse a conflict first,
            # naming the partitions (the dataset would only say the types)
            self.catalog_schema(files, None)
        else:
            files = catalog_files(self._local, select_partitions(self._local, providers, datasets, tasks, variants))
        schema = self.describe(files)
        if columns is not None and files:
            check_columns(columns, schema)
        selected = list(schema) if columns is None else list(dict.fromkeys(columns))
        return files, schema, selected, at

    def plan_retrieval(
        self,
        providers=None,
        datasets=None,
        tasks=None,
        variants=None,
        columns: Sequence[str] | None = None,
        where: dict[str, Any] | None = None,
        limit: int | None = None,
        as_of: str | datetime | None = None,
    ) -> QueryPlan:
        """Rows of the selected partitions (``as_of``: a timestamp or version id, the catalog as it was then;
        see :mod:`..lifecycle.as_of`, whose errors it raises)."""
        files, schema, selected, at = self._selection(providers, datasets, tasks, variants, columns, as_of)
        source, source_params = self._source(files, at) if files else ("", {})
        params = dict(source_params)
        condition = where_sql(where, schema, params, self.con) if files else ""
        sql = (
            f"SELECT {', '.join(map(quote_identifier, selected))} FROM {source}"
            f"{' WHERE ' + condition if condition else ''}{limit_sql(limit)}"
        )
        keep = set(columns or PARTITION_COLUMNS)
        restore = self.catalog_schema(files, [*selected, *(where or ())]) if files else None
        return QueryPlan(sql, params, files, selected, keep, source, source_params, restore)

    def plan_search(
        self,
        column: str,
        text: str,
        json_path: str | None = None,
        providers=None,
        datasets=None,
        tasks=None,
        variants=None,
        mode: str = "contains",
        columns: Sequence[str] | None = None,
        where: dict[str, Any] | None = None,
        limit: int | None = None,
        as_of: str | datetime | None = None,
    ) -> QueryPlan:
        """The plan of :meth:`search_text` (its SQL: :func:`.search.search_sql`)."""
        check_search(text, json_path, mode)
        files, schema, selected, at = self._selection(providers, datasets, tasks, variants, columns, as_of)
        out_columns = [*selected, "matched_snippet"]
        if not files:
            return QueryPlan("", {}, [], out_columns)
        source, source_params = self._source(files, at)
        params = dict(source_params)
        sql = search_sql(self.con, column, text, json_path, mode, schema, selected, source, params, where, limit)
        keep = {*(columns or PARTITION_COLUMNS), "matched_snippet"}
        restore = self.catalog_schema(files, [*selected, *(where or ())])
        return QueryPlan(sql, params, files, out_columns, keep, source, source_params, restore)

    # public queries ----------------------------------------------------------
    def retrieve_partitions(self, table: str = "catalog", as_arrow: bool = False):
        """Every partition with files, rows (Parquet footers), bytes, last batch and its ingest time."""
        if table != "catalog":
            raise ValueError(f"unknown table {table!r}; the lake has one partitioned table, 'catalog'")
        return _finish(self.s3.stats() if self.s3 is not None else partition_stats(self._local), as_arrow)

    def retrieve_with_existing_cols(
        self,
        providers=None,
        datasets=None,
        tasks=None,
        variants=None,
        columns: Sequence[str] | None = None,
        where: dict[str, Any] | None = None,
        limit: int | None = None,
        as_arrow: bool = False,
        as_of: str | datetime | None = None,
    ):
        """Rows of the selected partitions, without columns that are null in every returned row (``as_of``: as
        :meth:`plan_retrieval`)."""
        plan = self.plan_retrieval(providers, datasets, tasks, variants, columns, where, limit, as_of)
        return _finish(drop_all_null_columns(self.run(plan), plan.keep), as_arrow)

    def search_text(
        self,
        column: str,
        text: str,
        json_path: str | None = None,
        providers=None,
        datasets=None,
        tasks=None,
        variants=None,
        mode: str = "contains",
        limit: int | None = None,
        as_arrow: bool = False,
        columns: Sequence[str] | None = None,
        where: dict[str, Any] | None = None,
        as_of: str | datetime | None = None,
    ):
        """Rows whose ``column`` (or its ``json_path`` values) contains ``text`` (case-insensitive) or matches
        the RE2 pattern ``text`` (``mode="regex"``), with a ``matched_snippet`` around the first match."""
        plan = self.plan_search(
            column, text, json_path, providers, datasets, tasks, variants, mode, columns, where, limit, as_of
        )
        return _finish(drop_all_null_columns(self.run(plan), plan.keep), as_arrow)

    def sql(self, query: str, params: Sequence[Any] | dict[str, Any] | None = None, as_arrow: bool = False):
        """Run any SQL; ``catalog`` (all partitions) and ``partitions`` are available as views."""
        self._ensure_views()
        result = self.con.sql(query, params=params)
        if result is None:
            return None
        return result.to_arrow_table() if as_arrow else result.df()

    def _ensure_views(self) -> None:
        if self._views_ready:
            return
        if self.s3 is not None:
            self._ensure_s3_views(self.s3)
            return
        files = catalog_files(self._local)
        if files:
            glob = "'" + str(self._local.catalog_root / "**" / "*.parquet").replace("'", "''") + "'"
            self.con.execute(f"CREATE OR REPLACE TEMP VIEW catalog AS SELECT * FROM {parquet_scan(glob)}")
        else:
            empty = ", ".join(f"NULL::VARCHAR AS {c}" for c in PARTITION_COLUMNS)
            self.con.execute(f"CREATE OR REPLACE TEMP VIEW catalog AS SELECT {empty} WHERE false")
        self.con.register("partitions", partition_stats(self._local))
        self._views_ready = True

    def _ensure_s3_views(self, s3: S3Catalog) -> None:
        """The S3 ``catalog`` view (every connection); ``partitions``/``hash_index`` if there is no cached file."""
        refs = s3.select()
        files = sorted(s3.files(refs))  # the order a local glob reads them in, for the same column order
        if files:
            source = quote_identifier(s3.register(self.con, files))
            self.con.execute(f"CREATE OR REPLACE TEMP VIEW catalog AS SELECT * FROM {source}")
        else:
            empty = ", ".join(f"NULL::VARCHAR AS {c}" for c in PARTITION_COLUMNS)
            self.con.execute(f"CREATE OR REPLACE TEMP VIEW catalog AS SELECT {empty} WHERE false")
        if self._in_memory:
            self.con.register("partitions", s3.stats(refs))
            s3.build_hash_index(self.con, temp=True)
        self._views_ready = True


def _files_param(files: list[Path]) -> dict[str, Any]:
    return {"files": [str(f) for f in files]}

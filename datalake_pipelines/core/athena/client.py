"""``AthenaClient``: partition listing, retrieval and text search over the Glue tables of an S3 lake.

Every user value is an Athena execution parameter (a positional ``?`` whose value is sent as an escaped SQL
literal in ``ExecutionParameters``); table and column names are checked against the Glue table and quoted.
``table="catalog"`` means every ``catalog_<task>`` table of the database (one query per table, results concatenated).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, overload

import boto3
import pandas as pd

from ..catalog.parts import PARTITION_COLUMNS
from ..errors import DatalakeError
from ..storage.backends import storage_kind
from .tables import TABLE_PREFIX, check_database, check_identifier, table_name

ALL_TABLES = "catalog"
TEXT_TYPES = ("string", "varchar", "char")
INTEGER_TYPES = ("tinyint", "smallint", "integer", "int", "bigint")
FLOAT_TYPES = ("real", "float", "double")


class AthenaQueryError(DatalakeError):
    """An Athena query failed, was cancelled or timed out; the message carries Athena's reason."""


def quote(name: str) -> str:
    """A Trino identifier in double quotes."""
    return '"' + name.replace('"', '""') + '"'


def sql_literal(value: Any) -> str:
    """The SQL literal of a parameter value (strings quoted with ``'`` doubled)."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot pass {value!r} as a query parameter")
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"unsupported parameter type {type(value).__name__}: use str, int, float or bool")


@overload
def _values(kind: str, values: None) -> None: ...
@overload
def _values(kind: str, values: str | Iterable[Any]) -> list[Any]: ...
def _values(kind: str, values: str | Iterable[Any] | None) -> list[Any] | None:
    if values is None:
        return None
    values = [values] if isinstance(values, str) else list(values)
    if not all(isinstance(v, (str, int, float, bool)) for v in values):
        raise TypeError(f"{kind} filter values must be strings or numbers")
    return values


def _condition(column: str, value: Any, params: list[Any]) -> str:
    ident = quote(column)
    if value is None:
        return f"{ident} IS NULL"
    values = _values(column, value) if isinstance(value, (list, tuple, set, frozenset)) else None
    if values is None:
        params.append(value)
        return f"{ident} = ?"
    if not values:
        return "FALSE"
    params.extend(values)
    return f"{ident} IN ({', '.join('?' * len(values))})"


def _convert(series: pd.Series, athena_type: str) -> pd.Series:
    base = athena_type.split("(")[0].strip().lower()
    if base in INTEGER_TYPES:
        return pd.to_numeric(series).astype("Int64")
    if base in FLOAT_TYPES:
        return pd.to_numeric(series).astype("Float64")
    if base == "boolean":
        return series.map({"true": True, "false": False}).astype("boolean")
    if base.startswith("timestamp"):
        return pd.to_datetime(series, utc=True, format="ISO8601")
    if base == "date":
        return pd.to_datetime(series, format="ISO8601").dt.date
    if base == "decimal":
        return series.map(lambda v: None if v is None else Decimal(v))
    return series


def results_frame(pages: Iterable[dict]) -> pd.DataFrame:
    """A DataFrame from ``get_query_results`` pages (the first row of the first page is Athena's header row)."""
    info: list[dict] | None = None
    rows: list[list[str | None]] = []
    for page in pages:
        result = page["ResultSet"]
        data = [[d.get("VarCharValue") for d in r.get("Data", [])] for r in result.get("Rows", [])]
        if info is None:
            info = result.get("ResultSetMetadata", {}).get("ColumnInfo", [])
            names = [c["Name"] for c in info]
            if data and data[0] == names:
                data = data[1:]
        rows += data
    info = info or []
    frame = pd.DataFrame(rows, columns=[c["Name"] for c in info], dtype=object)
    for i, column in enumerate(info):
        frame.isetitem(i, _convert(frame.iloc[:, i], column.get("Type", "varchar")))
    return frame


def drop_all_null(frame: pd.DataFrame, keep: Iterable[str] = ()) -> pd.DataFrame:
    """Drop columns null in every row (columns of other datasets in the union table)."""
    if frame.empty:
        return frame
    keep = set(keep)
    return frame[[c for c in frame.columns if c in keep or frame[c].notna().any()]]


class AthenaClient:
    """Queries over the ``catalog_<task>`` Glue tables that the ``athena_tables`` asset maintains.

    ``s3_output`` is the query result location (may be empty when the workgroup enforces one).
    """

    def __init__(
        self,
        database: str,
        s3_output: str | None,
        workgroup: str | None = None,
        region: str | None = None,
        poll_interval: float = 0.5,
        timeout: float | None = None,
        *,
        athena=None,
        glue=None,
    ):
        self.database = check_database(database)
        if s3_output and storage_kind(s3_output) != "s3":
            raise ValueError(f"s3_output must be an s3:// location, got {s3_output!r}")
        self.s3_output = s3_output or None
        self.workgroup = workgroup or None
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.athena = athena or boto3.client("athena", region_name=region)
        self.glue = glue or boto3.client("glue", region_name=region)

    # running ---------------------------------------------------------------------------------------------------
    def start_query(self, sql: str, params: Sequence[Any] = ()) -> str:
        """Start ``sql`` with positional ``?`` parameters; return the query execution id."""
        request: dict[str, Any] = {"QueryString": sql, "QueryExecutionContext": {"Database": self.database}}
        if params:
            request["ExecutionParameters"] = [sql_literal(v) for v in params]
        if self.s3_output:
            request["ResultConfiguration"] = {"OutputLocation": self.s3_output}
        if self.workgroup:
            request["WorkGroup"] = self.workgroup
        return self.athena.start_query_execution(**request)["QueryExecutionId"]

    def wait(self, query_id: str) -> dict:
        """Poll until the query finishes; raise :class:`AthenaQueryError` unless it SUCCEEDED."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            execution = self.athena.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]
            status = execution.get("Status", {})
            state = status.get("State")
            if state == "SUCCEEDED":
                return execution
            if state in ("FAILED", "CANCELLED"):
                reason = status.get("StateChangeReason") or status.get("AthenaError", {}).get("ErrorMessage")
                raise AthenaQueryError(f"Athena query {query_id} {state}: {reason or 'no reason given'}")
            if deadline is not None and time.monotonic() >= deadline:
                self.athena.stop_query_execution(QueryExecutionId=query_id)
                raise AthenaQueryError(f"Athena query {query_id} still {state} after {self.timeout} s; stopped it")
            time.sleep(self.poll_interval)

    def fetch(self, query_id: str) -> pd.DataFrame:
        pages = self.athena.get_paginator("get_query_results").paginate(QueryExecutionId=query_id)
        return results_frame(pages)

    def query(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        """Run one query and return its result as a DataFrame."""
        query_id = self.start_query(sql, params)
        self.wait(query_id)
        return self.fetch(query_id)

    def _run_all(self, queries: list[tuple[str, list[Any]]]) -> pd.DataFrame:
        ids = [self.start_query(sql, params) for sql, params in queries]  # they run concurrently in Athena
        for query_id in ids:
            self.wait(query_id)
        frames = [self.fetch(query_id) for query_id in ids]
        frames = [f for f in frames if len(f.columns)] or frames[:1]
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    # Glue lookups ----------------------------------------------------------------------------------------------
    def tables(self) -> list[str]:
        """The ``catalog_<task>`` tables of the database."""
        pages = self.glue.get_paginator("get_tables").paginate(DatabaseName=self.database)
        return sorted(t["Name"] for page in pages for t in page["TableList"] if t["Name"].startswith(TABLE_PREFIX))

    def columns(self, table: str) -> dict[str, str]:
        """Column name -> type of a table (partition keys first)."""
        check_identifier("table", table)
        try:
            found = self.glue.get_table(DatabaseName=self.database, Name=table)["Table"]
        except self.glue.exceptions.EntityNotFoundException:
            raise ValueError(
                f"no table {table!r} in Athena database {self.database!r}; tables: {', '.join(self.tables()) or 'none'}"
                " (materialize the athena_tables asset)"
            ) from None
        keys = found.get("PartitionKeys", [])
        return {c["Name"]: c["Type"] for c in [*keys, *found.get("StorageDescriptor", {}).get("Columns", [])]}

    def _resolve(self, table: str | None, tasks: str | Sequence[str] | None) -> list[str]:
        if table not in (None, ALL_TABLES):
            return [table]
        if table is None and tasks is not None:
            return list(dict.fromkeys(table_name(t) for t in _values("tasks", tasks)))
        return self.tables()

    def _from(self, table: str) -> str:
        return f"{quote(self.database)}.{quote(table)}"

    # public queries --------------------------------------------------------------------------------------------
    def retrieve_partitions(self, table: str = "catalog_raw") -> pd.DataFrame:
        """Registered partitions (provider, dataset, task, variant) of ``table``, from its ``$partitions`` table."""
        tables = self._resolve(table, None)
        for name in tables:
            self.columns(name)
        cols = ", ".join(map(quote, PARTITION_COLUMNS))
        union = " UNION ALL ".join(f"SELECT {cols} FROM {self._from(name + '$partitions')}" for name in tables)
        if not union:
            return pd.DataFrame(columns=list(PARTITION_COLUMNS))
        return self.query(f"SELECT * FROM ({union}) ORDER BY 1, 2, 3, 4")

    def _select(self, table, providers, datasets, tasks, variants, columns, where, extra=None):
        schema = self.columns(table)
        wanted = list(schema) if columns is None else list(dict.fromkeys(columns))
        unknown = [c for c in [*wanted, *(where or {})] if c not in schema]
        if unknown:
            raise ValueError(f"unknown column(s) {unknown} in {table}; available: {', '.join(schema)}")
        params: list[Any] = []
        conditions = []
        for column, values in zip(PARTITION_COLUMNS, (providers, datasets, tasks, variants)):
            if values is not None:
                conditions.append(_condition(column, _values(column, values), params))
        conditions += [_condition(c, v, params) for c, v in (where or {}).items()]
        if extra:
            conditions.append(extra(schema, params))
        sql = f"SELECT {', '.join(map(quote, wanted))} FROM {self._from(table)}"
        return sql + (f" WHERE {' AND '.join(conditions)}" if conditions else ""), params

    def retrieve_with_existing_cols(
        self,
        providers: str | Sequence[str] | None = None,
        datasets: str | Sequence[str] | None = None,
        tasks: str | Sequence[str] | None = None,
        variants: str | Sequence[str] | None = None,
        table: str | None = None,
        columns: Sequence[str] | None = None,
        where: dict[str, Any] | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Rows of the selected partitions without the columns that are null in every returned row.

        ``table=None`` queries ``catalog_<task>`` for each of ``tasks`` (every catalog table without ``tasks``)."""
        queries = []
        for name in self._resolve(table, tasks):
            sql, params = self._select(name, providers, datasets, tasks, variants, columns, where)
            queries.append((sql + _limit(limit), params))
        if not queries:
            return pd.DataFrame(columns=list(PARTITION_COLUMNS))
        return drop_all_null(self._run_all(queries), columns or PARTITION_COLUMNS)

    def search_text_in_content(
        self,
        table: str,
        column: str,
        search_text: str,
        variants: str | Sequence[str] | None = None,
        providers: str | Sequence[str] | None = None,
        datasets: str | Sequence[str] | None = None,
        tasks: str | Sequence[str] | None = None,
        columns: Sequence[str] | None = None,
        limit: int | None = None,
        case_sensitive: bool = False,
    ) -> pd.DataFrame:
        """Rows whose ``column`` contains ``search_text`` (case-insensitive by default). A non-text column
        (struct, array, map: e.g. OCR words) is searched in its JSON rendering. ``table="catalog"`` searches
        every catalog table that has ``column``."""
        if not isinstance(search_text, str) or not search_text:
            raise ValueError("search_text must be a non-empty string")
        check_identifier("column", column)
        tables = self._resolve(table, None)
        if table == ALL_TABLES:
            tables = [t for t in tables if column in self.columns(t)]
            if not tables:
                raise ValueError(f"no catalog table of {self.database!r} has a column {column!r}")

        def contains(schema: dict[str, str], params: list[Any]) -> str:
            if column not in schema:
                raise ValueError(f"unknown column {column!r} in {tables}; available: {', '.join(schema)}")
            kind = schema[column].split("<")[0].split("(")[0].lower()
            hay = quote(column)
            if kind in ("array", "map", "struct"):
                hay = f"json_format(CAST({hay} AS JSON))"
            elif kind not in TEXT_TYPES:
                hay = f"CAST({hay} AS varchar)"
            params.append(search_text if case_sensitive else search_text.lower())
            return f"strpos({hay if case_sensitive else f'lower({hay})'}, ?) > 0"

        queries = []
        for name in tables:
            sql, params = self._select(name, providers, datasets, tasks, variants, columns, None, contains)
            queries.append((sql + _limit(limit), params))
        return drop_all_null(self._run_all(queries), {*(columns or PARTITION_COLUMNS), column})


def _limit(limit: int | None) -> str:
    if limit is None:
        return ""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be a non-negative integer, got {limit!r}")
    return f" LIMIT {limit}"

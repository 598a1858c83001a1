"""Athena tables over an S3 lake's Parquet catalog, registered through the Glue API.

Table design:

- One external Parquet table per task family, ``catalog_<task>`` (``catalog_raw``, ``catalog_ocr``). Athena table
  names allow only ``[a-z0-9_]``, so a hyphen in a task name becomes ``_``; tasks that normalise to the same name
  share the table and are still told apart by the ``task`` partition column.
- ``PARTITIONED BY (provider string, dataset string, task string, variant string)`` with ``LOCATION
  <base>/catalog/``. Every partition is registered explicitly with its own folder as location (no partition
  projection: the set of partitions is sparse and known from the listing).
- Columns are the union by name of the Parquet footers of the table's files (Athena reads Parquet by column name;
  a column absent from a file reads NULL), with Arrow types mapped to Hive types. A column is left out and
  reported when its type differs between files, its Arrow type has no Athena equivalent, its name is not
  ``[A-Za-z0-9_]`` (or repeats case-insensitively in one file), it is null-typed everywhere, or it shadows a
  partition key.

Glue is the source of truth: the database is created if missing, a table is created or updated when its columns
or location changed, and partitions missing from ``get_partitions`` are added with ``batch_create_partition``
(at most 100 per call; ``AlreadyExistsException`` entries are tolerated). :func:`ddl_statements` renders the same
specs as Athena DDL (``CREATE EXTERNAL TABLE`` / ``ALTER TABLE ... ADD PARTITION``) for people to read or replay.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import boto3
import pyarrow as pa
import pyarrow.parquet as pq

from ..catalog.parts import CatalogError
from ..errors import DatalakeError
from ..lake.layout import PARTITION_LEVELS, InvalidNameError, PartitionRef
from ..storage.backends import Storage, open_storage

GLUE_BATCH = 100
PARQUET_INPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
SIMPLE_NAME = re.compile(r"[A-Za-z0-9_]+")
DATABASE_NAME = re.compile(r"[a-z0-9_]{1,255}")
TABLE_PREFIX = "catalog_"


class AthenaSyncError(DatalakeError):
    """Glue refused part of the table registration."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str


@dataclass
class TableSpec:
    """One Athena table: its columns and the location of each of its partitions."""

    name: str
    location: str
    columns: list[Column]
    partitions: dict[PartitionRef, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SkippedColumn:
    table: str
    column: str
    reason: str


@dataclass
class AthenaSyncResult:
    database: str
    tables: list[TableSpec]
    tables_created: list[str] = field(default_factory=list)
    tables_updated: list[str] = field(default_factory=list)
    partitions_added: dict[str, list[str]] = field(default_factory=dict)  # table -> partition keys
    skipped_columns: list[SkippedColumn] = field(default_factory=list)

    @property
    def partitions_added_count(self) -> int:
        return sum(map(len, self.partitions_added.values()))


# names and quoting ---------------------------------------------------------------------------------------------
def table_name(task: str) -> str:
    return TABLE_PREFIX + task.replace("-", "_")


def check_database(name: str) -> str:
    if not isinstance(name, str) or not DATABASE_NAME.fullmatch(name):
        raise ValueError(f"invalid Athena database name {name!r}: use 1-255 characters from [a-z0-9_]")
    return name


def check_identifier(kind: str, name: object) -> str:
    if not isinstance(name, str) or not SIMPLE_NAME.fullmatch(name):
        raise ValueError(f"invalid {kind} name {name!r}: use characters from [A-Za-z0-9_]")
    return name


def quote_ddl(name: str) -> str:
    """A Hive DDL identifier (backticks, a backtick doubled)."""
    return "`" + name.replace("`", "``") + "`"


def ddl_string(value: str) -> str:
    """A Hive DDL string literal (backslash escapes, as Athena DDL reads them)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# Arrow -> Hive types -------------------------------------------------------------------------------------------
_SIMPLE_TYPES = [
    (pa.types.is_boolean, "boolean"),
    (pa.types.is_int8, "tinyint"),
    (pa.types.is_int16, "smallint"),
    (pa.types.is_int32, "int"),
    (pa.types.is_int64, "bigint"),
    (pa.types.is_uint8, "smallint"),
    (pa.types.is_uint16, "int"),
    (pa.types.is_uint32, "bigint"),
    (pa.types.is_float32, "float"),
    (pa.types.is_float64, "double"),
    (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t), "string"),
    (lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t), "binary"),
    (pa.types.is_timestamp, "timestamp"),
    (pa.types.is_date32, "date"),
]


def hive_type(t: pa.DataType) -> str:
    """The Hive/Athena type of an Arrow type; ``TypeError`` if Athena cannot read it from Parquet."""
    for test, name in _SIMPLE_TYPES:
        if test(t):
            return name
    if pa.types.is_dictionary(t):
        return hive_type(t.value_type)
    if pa.types.is_decimal(t) and t.precision <= 38:
        return f"decimal({t.precision},{t.scale})"
    if pa.types.is_map(t):
        return f"map<{hive_type(t.key_type)},{hive_type(t.item_type)}>"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return f"array<{hive_type(t.value_type)}>"
    if pa.types.is_struct(t):
        fields = []
        for f in t:
            if not SIMPLE_NAME.fullmatch(f.name):
                raise TypeError(f"struct field name {f.name!r} is not [A-Za-z0-9_]")
            fields.append(f"{f.name.lower()}:{hive_type(f.type)}")
        return f"struct<{','.join(fields)}>"
    raise TypeError(f"Arrow type {t} has no Athena equivalent")


# discovery -----------------------------------------------------------------------------------------------------
def catalog_objects(storage: Storage) -> dict[PartitionRef, list[str]]:
    """Parquet keys of every catalog partition (``catalog/provider=P/.../variant=V/*.parquet``)."""
    found: dict[PartitionRef, list[str]] = {}
    for obj in storage.list("catalog"):
        parts = obj.key.split("/")
        if len(parts) != 6 or not parts[5].endswith(".parquet") or parts[5].startswith((".", "_")):
            continue
        pairs = [segment.partition("=") for segment in parts[1:5]]
        if [p[0] for p in pairs] != list(PARTITION_LEVELS):
            continue
        try:
            ref = PartitionRef(*(p[2] for p in pairs))
        except InvalidNameError:
            continue
        found.setdefault(ref, []).append(obj.key)
    return {ref: sorted(keys) for ref, keys in sorted(found.items())}


def read_schemas(storage: Storage, objects: dict[PartitionRef, list[str]]) -> dict[PartitionRef, list[pa.Schema]]:
    """The Arrow schema of every file (footers only, read in parallel)."""
    fs, root = storage.arrow()

    def footer(key: str) -> pa.Schema:
        try:
            return pq.read_schema(f"{root}/{key}", filesystem=fs)
        except (pa.ArrowException, OSError) as exc:
            raise CatalogError(f"cannot read catalog file {storage.uri}/{key}: {exc}") from None

    keys = [k for ks in objects.values() for k in ks]
    with ThreadPoolExecutor(max_workers=8) as pool:
        schemas = dict(zip(keys, pool.map(footer, keys)))
    return {ref: [schemas[k] for k in ks] for ref, ks in objects.items()}


def _table_columns(name: str, schemas: dict[PartitionRef, list[pa.Schema]]) -> tuple[list[Column], list[SkippedColumn]]:
    types: dict[str, dict[str, list[str]]] = {}  # column -> hive type -> partition keys
    problems: dict[str, str] = {}
    for ref, file_schemas in schemas.items():
        for schema in file_schemas:
            seen: set[str] = set()
            for f in schema:
                column = f.name.lower()
                types.setdefault(column, {})
                if column in problems:
                    continue
                if column in PARTITION_LEVELS:
                    problems[column] = "shadows a partition key"
                elif not SIMPLE_NAME.fullmatch(f.name):
                    problems[column] = "name is not [A-Za-z0-9_]"
                elif column in seen:
                    problems[column] = f"appears twice (case-insensitively) in a file of {ref.key}"
                elif not pa.types.is_null(f.type):
                    try:
                        types[column].setdefault(hive_type(f.type), []).append(ref.key)
                    except TypeError as exc:
                        problems[column] = f"{exc} (in {ref.key})"
                seen.add(column)
    columns, skipped = [], []
    for column, by_type in types.items():
        if column not in problems and len(by_type) > 1:
            problems[column] = "conflicting types: " + "; ".join(
                f"{t} in {', '.join(dict.fromkeys(keys))}" for t, keys in by_type.items()
            )
        elif column not in problems and not by_type:
            problems[column] = "only null-typed values, no type to declare"
        if column in problems:
            skipped.append(SkippedColumn(name, column, problems[column]))
        else:
            columns.append(Column(column, next(iter(by_type))))
    return columns, skipped


def plan_tables(base: str, storage: Storage | None = None) -> tuple[list[TableSpec], list[SkippedColumn]]:
    """Table specs of an S3 lake (from listing and footers) and the columns left out of them; ``ValueError``
    when ``base`` (or ``storage``) is not on S3."""
    storage = storage or open_storage(base)
    if storage.kind != "s3":
        raise ValueError(f"Athena needs an s3:// lake; {base!r} is not an S3 location")
    location = f"{storage.uri}/catalog/"
    schemas = read_schemas(storage, catalog_objects(storage))
    families: dict[str, dict[PartitionRef, list[pa.Schema]]] = {}
    for ref, file_schemas in schemas.items():
        families.setdefault(table_name(ref.task), {})[ref] = file_schemas
    specs, skipped = [], []
    for name, members in sorted(families.items()):
        columns, left_out = _table_columns(name, members)
        skipped += left_out
        if not columns:
            skipped.append(SkippedColumn(name, "*", "no usable column: table not registered"))
            continue
        parts = {ref: location + "/".join(f"{k}={v}" for k, v in ref.as_dict().items()) + "/" for ref in members}
        specs.append(TableSpec(name, location, columns, parts))
    return specs, skipped


# DDL -----------------------------------------------------------------------------------------------------------
def create_table_ddl(spec: TableSpec, database: str) -> str:
    columns = ",\n  ".join(f"{quote_ddl(c.name)} {c.type}" for c in spec.columns)
    keys = ", ".join(f"{quote_ddl(level)} string" for level in PARTITION_LEVELS)
    return (
        f"CREATE EXTERNAL TABLE IF NOT EXISTS {quote_ddl(database)}.{quote_ddl(spec.name)} (\n  {columns}\n)\n"
        f"PARTITIONED BY ({keys})\nSTORED AS PARQUET\nLOCATION {ddl_string(spec.location)}\n"
        "TBLPROPERTIES ('classification'='parquet')"
    )


def add_partition_ddl(spec: TableSpec, database: str, ref: PartitionRef) -> str:
    values = ", ".join(f"{quote_ddl(k)}={ddl_string(v)}" for k, v in ref.as_dict().items())
    return (
        f"ALTER TABLE {quote_ddl(database)}.{quote_ddl(spec.name)} ADD IF NOT EXISTS "
        f"PARTITION ({values}) LOCATION {ddl_string(spec.partitions[ref])}"
    )


def ddl_statements(
    specs: Iterable[TableSpec], database: str, partitions: Mapping[str, Iterable[str]] | None = None
) -> list[str]:
    """``CREATE EXTERNAL TABLE`` for each spec, then ``ALTER TABLE ADD PARTITION`` for its partitions
    (all of them, or only the keys listed per table in ``partitions``)."""
    statements = []
    for spec in specs:
        statements.append(create_table_ddl(spec, database))
        wanted = None if partitions is None else set(partitions.get(spec.name, ()))
        statements += [
            add_partition_ddl(spec, database, ref) for ref in spec.partitions if wanted is None or ref.key in wanted
        ]
    return statements


def athena_ddl(base: str, database: str = "datalake") -> list[str]:
    """The DDL that would register the lake at ``base`` in Athena (nothing is sent anywhere)."""
    specs, _ = plan_tables(base)
    return ddl_statements(specs, check_database(database))


# Glue ----------------------------------------------------------------------------------------------------------
def _storage_descriptor(spec: TableSpec, location: str) -> dict:
    return {
        "Columns": [{"Name": c.name, "Type": c.type} for c in spec.columns],
        "Location": location,
        "InputFormat": PARQUET_INPUT,
        "OutputFormat": PARQUET_OUTPUT,
        "SerdeInfo": {"SerializationLibrary": PARQUET_SERDE, "Parameters": {"serialization.format": "1"}},
    }


def table_input(spec: TableSpec) -> dict:
    return {
        "Name": spec.name,
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {"EXTERNAL": "TRUE", "classification": "parquet"},
        "PartitionKeys": [{"Name": level, "Type": "string"} for level in PARTITION_LEVELS],
        "StorageDescriptor": _storage_descriptor(spec, spec.location),
    }


def _needs_update(existing: dict, wanted: dict) -> bool:
    have, want = existing.get("StorageDescriptor", {}), wanted["StorageDescriptor"]

    def columns(sd: dict) -> set[tuple[str, str]]:
        return {(c["Name"], c["Type"]) for c in sd.get("Columns", [])}

    serde = have.get("SerdeInfo", {}).get("SerializationLibrary")
    return (
        columns(have) != columns(want)
        or have.get("Location") != want["Location"]
        or (have.get("InputFormat"), serde) != (PARQUET_INPUT, PARQUET_SERDE)
    )


def _ensure_database(glue, database: str) -> None:
    try:
        glue.get_database(Name=database)
    except glue.exceptions.EntityNotFoundException:
        try:
            glue.create_database(DatabaseInput={"Name": database, "Description": "datalake catalog tables"})
        except glue.exceptions.AlreadyExistsException:
            pass


def _ensure_table(glue, database: str, spec: TableSpec, result: AthenaSyncResult) -> None:
    wanted = table_input(spec)
    try:
        existing = glue.get_table(DatabaseName=database, Name=spec.name)["Table"]
    except glue.exceptions.EntityNotFoundException:
        try:
            glue.create_table(DatabaseName=database, TableInput=wanted)
            result.tables_created.append(spec.name)
            return
        except glue.exceptions.AlreadyExistsException:
            existing = glue.get_table(DatabaseName=database, Name=spec.name)["Table"]
    keys = [k["Name"] for k in existing.get("PartitionKeys", [])]
    if keys != list(PARTITION_LEVELS):
        raise AthenaSyncError(
            f"table {database}.{spec.name} exists with partition keys {keys}, not {list(PARTITION_LEVELS)}; "
            "drop it so it can be recreated"
        )
    if _needs_update(existing, wanted):
        glue.update_table(DatabaseName=database, TableInput=wanted)
        result.tables_updated.append(spec.name)


def _registered(glue, database: str, table: str) -> set[tuple[str, ...]]:
    pages = glue.get_paginator("get_partitions").paginate(DatabaseName=database, TableName=table)
    return {tuple(p["Values"]) for page in pages for p in page.get("Partitions", [])}


def _add_partitions(glue, database: str, spec: TableSpec, result: AthenaSyncResult) -> None:
    registered = _registered(glue, database, spec.name)
    missing = [ref for ref in spec.partitions if tuple(ref.as_dict().values()) not in registered]
    added: list[str] = []
    for start in range(0, len(missing), GLUE_BATCH):
        chunk = missing[start : start + GLUE_BATCH]
        entries = [
            {
                "Values": list(ref.as_dict().values()),
                "StorageDescriptor": _storage_descriptor(spec, spec.partitions[ref]),
            }
            for ref in chunk
        ]
        response = glue.batch_create_partition(DatabaseName=database, TableName=spec.name, PartitionInputList=entries)
        errors = response.get("Errors", [])
        fatal = [e for e in errors if e.get("ErrorDetail", {}).get("ErrorCode") != "AlreadyExistsException"]
        if fatal:
            details = "; ".join(
                f"{'/'.join(e.get('PartitionValues', []))}: {e.get('ErrorDetail', {}).get('ErrorMessage')}"
                for e in fatal
            )
            raise AthenaSyncError(f"Glue refused partitions of {database}.{spec.name}: {details}")
        existed = {tuple(e.get("PartitionValues", [])) for e in errors}
        added += [ref.key for ref in chunk if tuple(ref.as_dict().values()) not in existed]
    if added:
        result.partitions_added[spec.name] = added


def sync_athena_tables(base: str, database: str = "datalake", glue=None) -> AthenaSyncResult:
    """Create or update the Glue database, tables and partitions of the S3 lake at ``base``."""
    check_database(database)
    specs, skipped = plan_tables(base)
    glue = glue or boto3.client("glue")
    result = AthenaSyncResult(database, specs, skipped_columns=skipped)
    _ensure_database(glue, database)
    for spec in specs:
        _ensure_table(glue, database, spec, result)
        _add_partitions(glue, database, spec, result)
    return result

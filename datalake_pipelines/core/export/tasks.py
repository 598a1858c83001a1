"""Export a filtered catalog snapshot of a local or S3 lake as Parquet, JSONL, Arrow IPC, HF dataset or HDF5.

``run_export`` fixes ``sampled_timestamp`` first and exports only rows with ``ingested_at <= sampled_timestamp``:
the catalog is append-only part files and every row carries its ``ingested_at``, so rows ingested later (even
into the same partitions, even while the export runs) are excluded exactly. Rows are selected with
:class:`~datalake_pipelines.core.catalog.query.DuckDBClient` (partition pruning, bound parameters) and streamed in
record batches, so memory stays bounded. Output is written to ``<destination>/.<name>.tmp-*`` and renamed to
``<destination>/<name>/`` (``data.<ext>`` + ``export.json``) only when complete; on failure the temp folder is
removed (an ``s3://`` destination: written in the cache folder, uploaded with ``export.json`` last; see
:mod:`.destination`). Every expected failure is an :class:`ExportError` with a stable ``code``.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from ..catalog.parts import INGESTED_AT, PARTITION_COLUMNS
from ..catalog.query import DuckDBClient, QueryPlan, quote_identifier
from ..catalog.query_sql import InvalidFilterValueError, cast_value
from ..catalog.warehouse import UnknownPartitionError
from ..errors import CodedError
from ..lake.layout import LakeLayout
from ..lifecycle.as_of import check_value as check_as_of
from ..lifecycle.as_of import resolve as resolve_as_of
from ..storage.backends import open_storage
from ..storage.files import utc_now, utc_now_iso, write_json_atomic
from .destination import open_destination
from .errors import (
    AS_OF_UNAVAILABLE,
    EMPTY_FILTER_VALUES,
    EXPORT_FAILED,
    INVALID_FILE_TYPE,
    INVALID_FILTER_FIELD,
    INVALID_FILTER_TYPE,
    INVALID_OPTION,
    UNKNOWN_PARTITION,
    UNWRITABLE_DESTINATION,
    ExportError,
)
from .jsonl_codec import python_rows
from .source import LakeSource, open_source
from .writers import DATA_FILES, write_export

FILE_TYPES = ("parquet", "jsonl", "arrow", "hf", "hdf5")
MANIFEST = "export.json"
SAMPLE_ROWS = 5
DEFAULT_OPTIONS: dict[str, Any] = {
    "batch_size": 10_000,
    "hdf5_images": "bytes",  # "bytes": vlen uint8 of the stored file; "resized": N x H x W x C uint8
    "hdf5_image_shape": [224, 224, 3],  # H, W, C (C: 1 = L, 3 = RGB, 4 = RGBA) for "resized"
    "hdf5_compression": None,  # None, "gzip" or "lzf" (fixed-size datasets only)
    "exclude_near_duplicates": None,  # None, or D: keep one row per cluster within D bits (core/neardup/exclude.py)
}

ProgressCallback = Callable[[dict[str, Any]], None]


@dataclass
class ExportParams:
    """What to export: ``filter`` (field -> accepted values, AND across fields) unless ``export_all``."""

    destination: str
    filter: dict[str, list[Any]] = field(default_factory=dict)
    export_all: bool = False
    file_type: str = "parquet"
    options: dict[str, Any] = field(default_factory=dict)
    as_of: str | None = None  # export the catalog as it was then: a timestamp or a catalog version id

    @classmethod
    def coerce(cls, value: ExportParams | dict[str, Any]) -> ExportParams:
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise ExportError(INVALID_OPTION, f"export parameters must be a mapping, got {type(value).__name__}")
        unknown = set(value) - {"destination", "filter", "export_all", "file_type", "options", "as_of"}
        if unknown:
            raise ExportError(INVALID_OPTION, f"unknown export parameter(s) {sorted(unknown)}")
        if not value.get("destination"):
            raise ExportError(UNWRITABLE_DESTINATION, "a destination folder is required")
        return cls(**{k: v for k, v in value.items() if v is not None})

    def check(self) -> None:
        """Validate everything that needs no catalog access (raises :class:`ExportError`), ``as_of`` too: an
        unparseable or future one is refused before a run or an export folder exists."""
        if self.as_of is not None and not str(self.as_of).strip():
            self.as_of = None  # "" or blank: no as_of, as everywhere
        if self.as_of is not None:
            try:
                check_as_of(self.as_of)
            except ValueError as exc:
                raise ExportError(AS_OF_UNAVAILABLE, str(exc)) from None
        if self.file_type not in FILE_TYPES:
            raise ExportError(INVALID_FILE_TYPE, f"unknown file_type {self.file_type!r}; use one of {FILE_TYPES}")
        if not isinstance(self.export_all, bool):
            raise ExportError(INVALID_OPTION, f"export_all must be true or false, got {self.export_all!r}")
        self.resolved_options()
        if self.export_all:
            return
        if not isinstance(self.filter, dict):
            raise ExportError(INVALID_FILTER_TYPE, f"filter must be a mapping field -> [values], got {self.filter!r}")
        for name, values in self.filter.items():
            if not isinstance(name, str) or not name:
                raise ExportError(INVALID_FILTER_FIELD, f"filter field names must be non-empty text, got {name!r}")
            if not isinstance(values, (list, tuple)):
                raise ExportError(
                    INVALID_FILTER_TYPE, f"filter {name!r} must be a list of accepted values, got {values!r}"
                )
            if not values:
                raise ExportError(EMPTY_FILTER_VALUES, f"filter {name!r} has an empty list of values")
            for value in values:
                if value is None or not isinstance(value, (str, int, float, bool)):
                    raise ExportError(
                        INVALID_FILTER_TYPE, f"filter {name!r}: values must be text or numbers, got {value!r}"
                    )
                if name in PARTITION_COLUMNS and not isinstance(value, str):
                    raise ExportError(INVALID_FILTER_TYPE, f"filter {name!r}: partition names are text, got {value!r}")

    def resolved_options(self) -> dict[str, Any]:
        if not isinstance(self.options, dict):
            raise ExportError(INVALID_OPTION, f"options must be a mapping, got {self.options!r}")
        unknown = set(self.options) - set(DEFAULT_OPTIONS)
        if unknown:
            raise ExportError(INVALID_OPTION, f"unknown option(s) {sorted(unknown)}; use {sorted(DEFAULT_OPTIONS)}")
        opts = {**DEFAULT_OPTIONS, **{k: v for k, v in self.options.items() if v is not None}}
        size = opts["batch_size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ExportError(INVALID_OPTION, f"batch_size must be a positive integer, got {size!r}")
        if opts["hdf5_images"] not in ("bytes", "resized"):
            raise ExportError(INVALID_OPTION, f"hdf5_images must be 'bytes' or 'resized', got {opts['hdf5_images']!r}")
        shape = opts["hdf5_image_shape"]
        if (
            not isinstance(shape, (list, tuple))
            or len(shape) != 3
            or not all(isinstance(v, int) and v > 0 for v in shape)
            or shape[2] not in (1, 3, 4)
        ):
            raise ExportError(INVALID_OPTION, f"hdf5_image_shape must be [H, W, C] with C in 1/3/4, got {shape!r}")
        if opts["exclude_near_duplicates"] is not None:
            from ..neardup.clusters import check_threshold

            try:
                check_threshold(opts["exclude_near_duplicates"])
            except ValueError as exc:
                raise ExportError(INVALID_OPTION, f"exclude_near_duplicates: {exc}") from None
        if opts["hdf5_compression"] not in (None, "gzip", "lzf"):
            raise ExportError(INVALID_OPTION, f"hdf5_compression must be gzip, lzf or null: {opts['hdf5_compression']}")
        return opts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# progress ------------------------------------------------------------------------------------------------
class ExportProgress:
    """Counters of one export, reported as the reference's ``process_info`` through a callback per batch."""

    def __init__(self, sampled: datetime, callback: ProgressCallback | None):
        self.sampled = sampled
        self.callback = callback
        self.total_data_count = 0
        self.total_filter_count = 0
        self.scan_data_count = 0
        self.sampled_data: list[dict[str, Any]] = []
        self.stage = "planning"

    def info(self, done: bool = False) -> dict[str, Any]:
        if done:
            percent = 100
        elif self.total_filter_count:
            percent = min(99, math.floor(100 * self.scan_data_count / self.total_filter_count))
        else:
            percent = 0
        return {
            "task_progress": f"{percent}%",
            "stage": self.stage,
            "total_data_count": self.total_data_count,
            "total_filter_count": self.total_filter_count,
            "scan_data_count": self.scan_data_count,
            "sampled_data": self.sampled_data,
            "sampled_timestamp": int(self.sampled.timestamp() * 1_000_000),
            "sampled_at": self.sampled.isoformat(timespec="microseconds"),
            "err_msg": "",
            "err_code": "",
        }

    def report(self, done: bool = False) -> None:
        if self.callback is not None:
            self.callback(self.info(done))

    def meter(self, reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
        for batch in reader:
            if len(self.sampled_data) < SAMPLE_ROWS and batch.num_rows:
                rows = python_rows(batch.slice(0, SAMPLE_ROWS - len(self.sampled_data)))
                self.sampled_data.extend(json_safe(r) for r in rows)
            self.scan_data_count += batch.num_rows
            self.report()
            yield batch


def json_safe(value: Any) -> Any:
    """A JSON-serialisable copy of a row value, for run metadata (Dagster stores it with ``json.dumps``):
    times as ISO text, durations as ISO 8601 durations, bytes as a size note, decimals and non-finite floats as
    text, and anything else JSON has no type for (UUIDs, month-day-nano intervals, ...) as its ``str``."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return _iso_duration(value)
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    return str(value)


def _iso_duration(value: timedelta) -> str:
    """``timedelta`` as ISO 8601 ``PnDTn.nnnnnnS`` (sign in front; Python normalises to days and seconds)."""
    sign, value = ("-", -value) if value < timedelta(0) else ("", value)
    seconds = value.seconds + value.microseconds / 1_000_000
    return f"{sign}P{value.days}DT{seconds:.6f}".rstrip("0").rstrip(".") + "S"


# planning ------------------------------------------------------------------------------------------------
PARTITION_ARGS = {"provider": "providers", "dataset": "datasets", "task": "tasks", "variant": "variants"}
UNFILTERABLE = ("STRUCT", "MAP", "[]", "UNION", "BLOB")


def _cast_values(con: duckdb.DuckDBPyConnection, name: str, sql_type: str, values: list[Any]) -> list[Any]:
    """Filter values as the column's type, exactly (the rule of :func:`.query_sql.cast_value`)."""
    if any(marker in sql_type for marker in UNFILTERABLE):
        raise ExportError(INVALID_FILTER_TYPE, f"column {name!r} has type {sql_type}; it cannot be filtered by value")
    try:
        return [cast_value(con, name, sql_type, value) for value in values]
    except InvalidFilterValueError as exc:
        raise ExportError(INVALID_FILTER_TYPE, exc.message) from None


def plan_export(duck: DuckDBClient, params: ExportParams, sampled: datetime) -> tuple[QueryPlan, QueryPlan]:
    """The export query and the snapshot row count query of the selected partitions (same file list); with
    ``params.as_of``, ``sampled`` is the time it means and the files are the catalog's then."""
    wanted = {} if params.export_all else dict(params.filter)
    partitions: dict[str, Any] = {PARTITION_ARGS[k]: list(v) for k, v in wanted.items() if k in PARTITION_COLUMNS}
    if params.as_of:
        partitions["as_of"] = sampled
    try:
        probe = duck.plan_retrieval(**partitions)
    except UnknownPartitionError as exc:
        raise ExportError(UNKNOWN_PARTITION, str(exc)) from None
    types = duck.describe(probe.files)
    rows = {k: v for k, v in wanted.items() if k not in PARTITION_COLUMNS}
    unknown = sorted(set(rows) - set(types))
    if unknown:
        raise ExportError(
            INVALID_FILTER_FIELD,
            f"unknown filter field(s) {', '.join(map(repr, unknown))}; fields of the selected partitions: "
            f"{', '.join(types)}",
        )
    where = {k: _cast_values(duck.con, k, types[k], list(v)) for k, v in rows.items()}
    try:
        plan = duck.plan_retrieval(**partitions, where=where or None)
    except UnknownPartitionError as exc:  # a partition folder vanished between the two listings
        raise ExportError(UNKNOWN_PARTITION, str(exc)) from None
    if plan.empty:
        return plan, plan
    snap = f"{quote_identifier(INGESTED_AT)} <= $sampled_timestamp"
    params_ = {**plan.params, "sampled_timestamp": sampled}
    export = QueryPlan(
        f"SELECT * FROM ({plan.sql}) AS q WHERE {snap}", params_, plan.files, plan.columns, restore=plan.restore
    )
    total = QueryPlan(
        f"SELECT count(*) AS n FROM {plan.source} WHERE {snap}",
        {**plan.source_params, "sampled_timestamp": sampled},
        plan.files,
        ["n"],
    )
    return export, total


def _count(duck: DuckDBClient, plan: QueryPlan) -> int:
    if plan.empty:
        return 0
    if plan.columns == ["n"]:
        return int(duck.run(plan).column(0)[0].as_py())
    counting = QueryPlan(f"SELECT count(*) AS n FROM ({plan.sql})", plan.params, plan.files, ["n"])
    return int(duck.run(counting).column(0)[0].as_py())


def _partition_counts(duck: DuckDBClient, plan: QueryPlan) -> dict[tuple[str, ...], int]:
    """Rows of ``plan`` per partition ``(provider, dataset, task, variant)``; {} for an empty plan or one
    without the partition columns."""
    if plan.empty or not set(PARTITION_COLUMNS) <= set(plan.columns):
        return {}
    keys = ", ".join(quote_identifier(c) for c in PARTITION_COLUMNS)
    sql = f"SELECT {keys}, count(*) AS n FROM ({plan.sql}) GROUP BY {keys}"
    table = duck.run(QueryPlan(sql, plan.params, plan.files, [*PARTITION_COLUMNS, "n"])).to_pylist()
    return {tuple(row[c] for c in PARTITION_COLUMNS): int(row["n"]) for row in table}


def _as_of_time(lake: LakeSource | LakeLayout | str, as_of: str) -> datetime:
    """The time ``as_of`` means; ExportError ``AS_OF_UNAVAILABLE`` when it means none or the retention is past."""
    try:
        return resolve_as_of(open_storage(str(open_source(lake).base)), as_of)
    except ValueError as exc:  # AsOfError, AsOfTooOldError, UnknownVersionError
        raise ExportError(AS_OF_UNAVAILABLE, str(exc)) from None


def default_export_name() -> str:
    return f"export-{utc_now().strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"


def _files(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def run_export(
    lake: LakeSource | LakeLayout | str,
    params: ExportParams | dict[str, Any],
    progress_cb: ProgressCallback | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Export the snapshot selection of ``lake`` (a :class:`LakeLayout`, a folder or ``s3://bucket/prefix``) to
    ``<destination>/<name>/`` (a local folder or ``s3://bucket/prefix``, see :mod:`.destination`); return
    ``process_info`` plus ``path`` (a folder or an ``s3://`` URI) and ``manifest``.

    ``progress_cb(process_info)`` is called once the snapshot is fixed (before the file listing), after the
    counts, after every batch, and at the end. An exception raised by it aborts the export.
    """
    params = ExportParams.coerce(params)
    params.check()
    opts = params.resolved_options()
    sampled = _as_of_time(lake, params.as_of) if params.as_of else utc_now()
    progress = ExportProgress(sampled, progress_cb)
    progress.report()
    destination = open_destination(params.destination)
    name = name or default_export_name()
    tmp = destination.start(name)
    try:
        source = open_source(lake)
        with DuckDBClient(base_path=source.base) as duck:
            plan, total = plan_export(duck, params, sampled)
            progress.total_data_count = _count(duck, total)
            # HDF5 sizes its chunks by each partition's rows (a tiny export must not allocate 1 MiB chunks)
            per_partition = _partition_counts(duck, plan) if params.file_type == "hdf5" else None
            progress.total_filter_count = sum(per_partition.values()) if per_partition else _count(duck, plan)
            progress.stage = "exporting"
            progress.report()
            exclusion = None
            if opts["exclude_near_duplicates"] is not None and not plan.empty:  # before the stream opens
                from ..neardup.exclude import plan_exclusion

                exclusion = plan_exclusion(duck, plan, opts["exclude_near_duplicates"])
                exclusion.write(tmp)
            reader = duck.stream(plan, opts["batch_size"])
            if exclusion is not None:
                reader = exclusion.apply(reader)
            counted = pa.RecordBatchReader.from_batches(reader.schema, progress.meter(reader))
            encodings = write_export(source, params.file_type, counted, tmp, opts, per_partition)
            columns = [{"name": f.name, "type": str(f.type)} for f in reader.schema]
        manifest = {
            "task_params": params.to_dict(),
            "file_type": params.file_type,
            "data": DATA_FILES[params.file_type],
            "rows": progress.scan_data_count,
            "total_data_count": progress.total_data_count,
            "total_filter_count": progress.total_filter_count,
            "sampled_timestamp": progress.info()["sampled_timestamp"],
            "sampled_at": progress.info()["sampled_at"],
            "completed_at": utc_now_iso(),
            "columns": columns,
            "near_duplicates": exclusion.summary() if exclusion is not None else None,
            **encodings,
            "files": _files(tmp),
        }
        write_json_atomic(tmp / MANIFEST, manifest)
        final = destination.publish(tmp, name)
    except BaseException as exc:
        destination.discard(tmp)
        if isinstance(exc, ExportError) or not isinstance(exc, Exception):
            raise
        if isinstance(exc, CodedError):  # type conflict, unrestorable type, hf_unsupported_type, bad value
            raise ExportError(exc.code, exc.message) from exc
        raise ExportError(EXPORT_FAILED, f"{type(exc).__name__}: {exc}") from exc
    progress.stage = "done"
    progress.report(done=True)
    return {**progress.info(done=True), "path": final, "manifest": manifest}

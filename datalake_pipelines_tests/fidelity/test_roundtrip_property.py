"""Property test (issue 11): any Arrow table comes back from the lake exactly as it went in.

Each generated table (see :mod:`arrow_strategies`) is uploaded through ``DatalakeClient.upload_raw_data`` into
its own partition of one lake (a unique dataset name per example, so no per-example lake set-up), processed
with ``process_pending``, and then read back every way a user reads it:

- the catalog Parquet files of the partition (pyarrow, user columns, in row order);
- a DuckDB query through ``DuckDBClient`` (DuckDB has its own types, so its result is cast, safely, to the
  catalog type before the values are compared: a value that changed or cannot be cast back fails);
- ``client.download`` as ``parquet``, ``arrow`` and ``hf``: values *and* types must equal the catalog's
  (issue 11, item 5: downloads cast query results back to the catalog's Arrow schema);
- a second upload of the same table adds no row (rows are a multiset: identity is content plus occurrence);
- compacting the partition keeps every row (compaction keeps repeats too).

The expected table is the input after the staging normalizations (item 2 and the README): dictionary columns
become their value type, ``string_view``/``binary_view`` become ``large_string``/``large_binary``, and the types
Parquet has no home for their lossless equivalent (``timestamp[s]``/``time32[s]`` in ms, ``date64`` as
``date32``, ``decimal256`` of <= 38 digits as ``decimal128``), at any depth. The ``hf``
download may also turn a map into a list of ``{key, value}`` structs (what ``datasets`` can hold), or refuse the
table up front with a :class:`DatalakeError` that names the column, before writing anything (item 5).

Values are compared with floats as bit patterns, so ``-0.0`` differs from ``0.0`` and ``NaN`` equals ``NaN``.
A table with no rows is documented as refused ("empty batch"); the test then checks that nothing reached the
catalog. A timestamp in seconds or milliseconds beyond what int64 microseconds hold (about 292,000 years either
side of 1970) has no exact home: Parquet stores seconds as milliseconds, and DuckDB reads every timestamp unit
but ns as microseconds. Issue 11 allows such a table to be refused at upload, before anything is stored, with
a ``DatalakeError`` naming the column; so is a ``decimal256`` of more than 38 digits (DuckDB reads it as DOUBLE,
losing digits). Any other refusal fails the test.

``DATALAKE_ROUNDTRIP_EXAMPLES`` sets the number of generated tables (default 500, none of them empty, plus two
explicit empty tables; derandomized, so CI runs the same tables every time).
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings

from datalake_pipelines import DatalakeClient, DuckDBClient
from datalake_pipelines.core.catalog.parts import BATCH_ID, INGESTED_AT, PARTITION_COLUMNS, ROW_HASH, compact_partition
from datalake_pipelines.core.catalog.parts import partition_files as catalog_partition_files
from datalake_pipelines.core.errors import DatalakeError
from datalake_pipelines.core.lake.layout import LakeLayout, PartitionRef
from datalake_pipelines_tests.support.arrow_strategies import arrow_tables

EXAMPLES = int(os.environ.get("DATALAKE_ROUNDTRIP_EXAMPLES", "500"))
BOOKKEEPING = {*PARTITION_COLUMNS, BATCH_ID, INGESTED_AT, ROW_HASH}
PROVIDER = "inhouse"  # one of the providers config/schema.yaml seeds into every new lake
ROUNDTRIP = settings(
    max_examples=EXAMPLES,
    derandomize=True,  # the same tables on every run, so CI failures reproduce
    database=None,
    deadline=None,
    # the lake is shared by every example on purpose (one partition each); DAGSTER_HOME is not used here
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


# Expected types --------------------------------------------------------------------------------------------


def _rebuild(t: pa.DataType, leaf) -> pa.DataType:
    """Apply ``leaf`` to every type in ``t``, bottom-up, keeping field names and nullability."""
    if pa.types.is_struct(t):
        return leaf(pa.struct([f.with_type(_rebuild(f.type, leaf)) for f in t]))
    if pa.types.is_map(t):
        return leaf(
            pa.map_(
                t.key_field.with_type(_rebuild(t.key_type, leaf)), t.item_field.with_type(_rebuild(t.item_type, leaf))
            )
        )
    if pa.types.is_fixed_size_list(t):
        return leaf(pa.list_(t.value_field.with_type(_rebuild(t.value_type, leaf)), t.list_size))
    if pa.types.is_large_list(t):
        return leaf(pa.large_list(t.value_field.with_type(_rebuild(t.value_type, leaf))))
    if pa.types.is_list(t):
        return leaf(pa.list_(t.value_field.with_type(_rebuild(t.value_type, leaf))))
    if pa.types.is_dictionary(t):
        return leaf(pa.dictionary(t.index_type, _rebuild(t.value_type, leaf)))
    return leaf(t)


def _staged(t: pa.DataType) -> pa.DataType:
    """The staging normalization (issue 11 item 2, README): dictionaries to values, views to large types, and
    what Parquet has no type for to its lossless equivalent: ``timestamp[s]`` to ``timestamp[ms]`` (same zone),
    ``time32[s]`` to ``time32[ms]``, ``date64`` to ``date32``, ``decimal256`` of precision <= 38 to ``decimal128``."""
    if pa.types.is_dictionary(t):
        return t.value_type
    if pa.types.is_timestamp(t) and t.unit == "s":
        return pa.timestamp("ms", t.tz)
    if pa.types.is_time32(t) and t.unit == "s":
        return pa.time32("ms")
    if pa.types.is_date64(t):
        return pa.date32()
    if pa.types.is_decimal256(t) and t.precision <= 38:
        return pa.decimal128(t.precision, t.scale)
    if pa.types.is_string_view(t):
        return pa.large_string()
    if pa.types.is_binary_view(t):
        return pa.large_binary()
    return t


def _hf(t: pa.DataType) -> pa.DataType:
    """What the ``hf`` format may hold instead of a map: a list of ``{key, value}`` structs."""
    if pa.types.is_map(t):
        return pa.list_(pa.struct([pa.field("key", t.key_type), t.item_field.with_name("value")]))
    return t


def cast(array: pa.Array, target: pa.DataType) -> pa.Array:
    """``array.cast(target)``, nested types rebuilt child by child.

    pyarrow 26.0.1 casts a ``list<null>`` to ``list<null>`` (an identity cast, also inside a struct or list)
    into an invalid array ("offset for slot 2 out of bounds"), so nested casts are done here and only leaves go
    through ``Array.cast``.
    """
    t = array.type
    if t == target and not pa.types.is_nested(t):
        return array
    mask = array.is_null() if array.null_count else None
    if pa.types.is_struct(target) and pa.types.is_struct(t) and t.num_fields == target.num_fields:
        children = [cast(array.field(i), target.field(i).type) for i in range(t.num_fields)]
        return pa.StructArray.from_arrays(children, fields=list(target), mask=mask)
    if pa.types.is_map(target) and pa.types.is_map(t):
        keys, items = cast(array.keys, target.key_type), cast(array.items, target.item_type)
        return pa.MapArray.from_arrays(array.offsets, keys, items, type=target, mask=mask)
    if pa.types.is_list(target) and pa.types.is_map(t):  # a map as a list of its {key, value} entries (hf)
        entry = target.value_type
        keys, items = cast(array.keys, entry.field(0).type), cast(array.items, entry.field(1).type)
        entries = pa.StructArray.from_arrays([keys, items], fields=list(entry))
        return pa.ListArray.from_arrays(array.offsets, entries, type=target, mask=mask)
    if pa.types.is_fixed_size_list(target) and pa.types.is_fixed_size_list(t) and t.list_size == target.list_size:
        values = array.values.slice(array.offset * t.list_size, len(array) * t.list_size)
        return pa.FixedSizeListArray.from_arrays(cast(values, target.value_type), type=target, mask=mask)
    if (pa.types.is_list(target) or pa.types.is_large_list(target)) and (
        pa.types.is_list(t) or pa.types.is_large_list(t)
    ):
        large = pa.types.is_large_list(target)
        offsets = array.offsets.cast(pa.int64() if large else pa.int32())
        values = cast(array.values, target.value_type)
        make = pa.LargeListArray if large else pa.ListArray
        return make.from_arrays(offsets, values, type=target, mask=mask)
    if pa.types.is_null(target):
        return pa.nulls(len(array)) if array.null_count == len(array) else array.cast(target)
    return array.cast(target)


def cast_column(column: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    return pa.chunked_array([cast(c, target) for c in column.chunks], target)


def converted(table: pa.Table, leaf) -> pa.Table:
    """``table`` with every column cast to ``_rebuild(type, leaf)``; unchanged columns are left alone."""
    for i, f in enumerate(table.schema):
        target = _rebuild(f.type, leaf)
        if target != f.type:
            # (not Array.view for maps: pyarrow 26's view of a map with null-typed items builds an invalid array)
            table = table.set_column(i, f.with_type(target), cast_column(table.column(i), target))
    return table


def expected_table(table: pa.Table) -> pa.Table:
    """``table`` as the catalog must hold it (see :func:`_staged`)."""
    return converted(table, _staged)


# Exact comparison ------------------------------------------------------------------------------------------


def _bits(array: pa.Array) -> pa.Array:
    """``array`` with every float replaced by its bit pattern (so -0.0 != 0.0 and NaN == NaN), at any depth."""
    t = array.type
    mask = array.is_null() if array.null_count else None
    if pa.types.is_floating(t):
        return array.view({16: pa.uint16(), 32: pa.uint32(), 64: pa.uint64()}[t.bit_width])
    if pa.types.is_struct(t):
        children = [_bits(array.field(i)) for i in range(t.num_fields)]
        return pa.StructArray.from_arrays(children, names=[f.name for f in t], mask=mask)
    if pa.types.is_map(t):
        return pa.MapArray.from_arrays(array.offsets, _bits(array.keys), _bits(array.items), mask=mask)
    if pa.types.is_fixed_size_list(t):
        values = array.values.slice(array.offset * t.list_size, len(array) * t.list_size)
        return pa.FixedSizeListArray.from_arrays(_bits(values), t.list_size, mask=mask)
    if pa.types.is_large_list(t):
        return pa.LargeListArray.from_arrays(array.offsets, _bits(array.values), mask=mask)
    if pa.types.is_list(t):
        return pa.ListArray.from_arrays(array.offsets, _bits(array.values), mask=mask)
    return array


def _show(array: pa.Array, row: int) -> str:
    value = array.slice(row, 1)
    try:
        return repr(value.to_pylist()[0])
    except Exception:  # noqa: BLE001 - e.g. a timestamp Python's datetime cannot hold
        return value.to_string(window=3).replace("\n", " ")


def compare(path: str, got: pa.Table, want: pa.Table, cast: bool = False) -> list[str]:
    """Differences between ``got`` and ``want`` (names, types, row count, then values), as readable lines.

    ``cast=True`` (a DuckDB query result) casts each column safely to the wanted type before comparing values.
    """
    problems = []
    if got.column_names != want.column_names:
        return [f"{path}: columns {got.column_names} != expected {want.column_names}"]
    if got.num_rows != want.num_rows:
        return [f"{path}: {got.num_rows} rows != expected {want.num_rows}"]
    for name in want.column_names:
        g, w = got.column(name), want.column(name)
        if g.type != w.type:
            if not cast:
                problems.append(f"{path}: column {name!r} type {g.type} != expected {w.type}")
            try:
                g = cast_column(g, w.type)
            except (pa.ArrowException, ValueError) as exc:
                problems.append(f"{path}: column {name!r} type {g.type} cannot be cast to {w.type}: {exc}")
                continue
        ga = _bits(g.combine_chunks()) if g.num_chunks else g.combine_chunks()
        wa = _bits(w.combine_chunks())
        if not ga.equals(wa):
            row = next((i for i in range(len(wa)) if not ga.slice(i, 1).equals(wa.slice(i, 1))), 0)
            problems.append(
                f"{path}: column {name!r} ({w.type}) row {row}: {_show(g.combine_chunks(), row)} "
                f"!= expected {_show(w.combine_chunks(), row)}"
            )
    return problems


def user_columns(table: pa.Table) -> pa.Table:
    return table.select([n for n in table.column_names if n not in BOOKKEEPING])


# Values the lake may refuse -------------------------------------------------------------------------------

US_LIMIT = {"s": (2**63 - 1) // 1_000_000, "ms": (2**63 - 1) // 1_000}


def _leaves(array: pa.Array):
    """Every leaf array under ``array`` (struct fields, list values, map keys and items)."""
    t = array.type
    if pa.types.is_struct(t):
        for i in range(t.num_fields):
            yield from _leaves(array.field(i))
    elif pa.types.is_map(t):
        yield from _leaves(array.keys)
        yield from _leaves(array.items)
    elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        yield from _leaves(array.flatten())
    elif pa.types.is_dictionary(t):
        yield from _leaves(array.dictionary)
    else:
        yield array


def _types_in(t: pa.DataType):
    yield t
    if pa.types.is_nested(t) or pa.types.is_dictionary(t):
        children = [t.value_type] if pa.types.is_dictionary(t) else [t.field(i).type for i in range(t.num_fields)]
        for child in children:
            yield from _types_in(child)


def refused_types(table: pa.Table) -> list[str]:
    """Columns holding a type the lake documents refusing: ``decimal256`` over 38 digits (DuckDB reads it as DOUBLE)."""
    wide = lambda t: pa.types.is_decimal256(t) and t.precision > 38  # noqa: E731
    return sorted(f.name for f in table.schema if any(wide(t) for t in _types_in(f.type)))


def beyond_microseconds(table: pa.Table) -> list[str]:
    """Columns holding a timestamp in s or ms that int64 microseconds cannot hold (see the module docstring)."""
    found = []
    for name in table.column_names:
        for chunk in table.column(name).chunks:
            for leaf in _leaves(chunk):
                if pa.types.is_timestamp(leaf.type) and leaf.type.unit in US_LIMIT:
                    ints = pa.Array.from_buffers(pa.int64(), len(leaf), leaf.buffers(), offset=leaf.offset)
                    low, high = pc.min_max(ints).values()
                    if low.is_valid and max(abs(low.as_py()), abs(high.as_py())) > US_LIMIT[leaf.type.unit]:
                        found.append(name)
    return sorted(set(found))


# The lake --------------------------------------------------------------------------------------------------


class RoundTrip:
    """One lake for every example; each table gets its own partition ``inhouse/<dataset>/raw/mixed``."""

    def __init__(self, base: Path):
        self.layout = LakeLayout(base / "lake")
        # batch_size=3 splits tables into several staged row groups and processing batches
        self.client = DatalakeClient(self.layout.base, num_proc=1, batch_size=3, progress=False)
        self.out = base / "downloads"
        self.count = 0

    def catalog(self, ref: PartitionRef) -> pa.Table | None:
        files = catalog_partition_files(self.layout, ref)
        return user_columns(pa.concat_tables([pq.read_table(f) for f in files])) if files else None

    def upload(self, table: pa.Table, dataset: str):
        self.client.upload_raw_data(table, provider=PROVIDER, dataset=dataset, image_columns=[])
        results = self.client.process_pending()
        assert len(results) == 1, results
        return results[0]

    def check(self, table: pa.Table) -> list[str]:
        """Every way ``table`` fails to come back; empty when it round-trips exactly."""
        self.count += 1
        dataset = f"t{self.count:05d}"
        ref = PartitionRef(PROVIDER, dataset, "raw", "mixed")
        want = expected_table(table)
        try:
            result = self.upload(table, dataset)
        except DatalakeError as exc:
            if table.num_rows == 0:
                return []  # refusing an empty upload at once is the documented behaviour
            unholdable = beyond_microseconds(table) + refused_types(table)
            if unholdable and any(name in str(exc) for name in unholdable) and self.catalog(ref) is None:
                return []
            return [f"ingest: upload refused: {exc}"]
        if table.num_rows == 0:
            if result.status == "failed" and "empty" in (result.error or "") and self.catalog(ref) is None:
                return []
            return [f"ingest: an empty table gave {result.status} ({result.error}) instead of the empty-batch refusal"]
        if result.status != "done":
            return [f"ingest: batch {result.status}: {result.error}"]
        problems = []
        counts = (result.rows_in, result.rows_added, result.rows_duplicate)
        if counts != (table.num_rows, table.num_rows, 0):
            problems.append(f"ingest: rows in/added/duplicate {counts} != {(table.num_rows, table.num_rows, 0)}")
        catalog = self.catalog(ref)
        if catalog is None:
            return [*problems, "catalog: no catalog file"]
        problems += compare("catalog", catalog, want)
        problems += self.check_query(dataset, want)
        for fmt in ("parquet", "arrow", "hf"):
            problems += self.check_download(dataset, fmt, want)
        again = self.upload(table, dataset)
        if (again.status, again.rows_added) != ("done", 0):
            problems.append(f"re-upload: {again.status}, {again.rows_added} rows added (error: {again.error})")
        try:
            compact_partition(self.layout, ref)
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            problems.append(f"compaction: {type(exc).__name__}: {exc}")
        else:
            problems += compare("after re-upload and compaction: catalog", self.catalog(ref), want)
        return problems

    def check_query(self, dataset: str, want: pa.Table) -> list[str]:
        try:
            with DuckDBClient(base_path=self.layout.base) as duck:
                got = duck.run(duck.plan_retrieval(providers=[PROVIDER], datasets=[dataset]))
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            return [f"duckdb: {type(exc).__name__}: {exc}"]
        return compare("duckdb", user_columns(got), want, cast=True)

    def check_download(self, dataset: str, fmt: str, want: pa.Table) -> list[str]:
        out = self.out / f"{dataset}-{fmt}"
        try:
            self.client.download({"providers": [PROVIDER], "datasets": [dataset]}, fmt, out)
        except DatalakeError as exc:
            named = any(name in str(exc) for name in want.column_names)
            if fmt == "hf" and named and not out.exists():
                return []  # item 5: hf may refuse up front, naming the column it cannot hold
            return [f"download {fmt}: refused: {type(exc).__name__}: {exc}"]
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            return [f"download {fmt}: {type(exc).__name__}: {exc}"]
        if fmt == "parquet":
            got = pq.read_table(out / "data.parquet")
        elif fmt == "arrow":
            with pa.memory_map(str(out / "data.arrow")) as source:
                got = pa.ipc.open_file(source).read_all()
        else:
            import datasets

            got = datasets.load_from_disk(str(out)).data.table
            want = converted(want, _hf)
        return compare(f"download {fmt}", user_columns(got), want)


@pytest.fixture(scope="module")
def roundtrip(tmp_path_factory) -> RoundTrip:
    return RoundTrip(tmp_path_factory.mktemp("roundtrip"))


@ROUNDTRIP
@given(table=arrow_tables())
@example(table=pa.table({"a": pa.array([], pa.int64())}))
@example(table=pa.table({"s": pa.array([], pa.string_view()), "m": pa.array([], pa.map_(pa.string(), pa.int8()))}))
def test_any_arrow_table_round_trips_through_catalog_query_and_downloads(roundtrip: RoundTrip, table: pa.Table):
    problems = roundtrip.check(table)
    assert not problems, "\n".join(problems)

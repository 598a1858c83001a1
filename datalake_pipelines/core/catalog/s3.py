"""The catalog of a lake under ``s3://bucket/prefix``, read through ``pyarrow.fs.S3FileSystem``.

Same keys as a local lake (``catalog/provider=P/dataset=D/task=T/variant=V/*.parquet`` + ``_metadata.json``).
Partitions are found by listing ``provider=`` ... ``variant=`` prefixes level by level (only the filtered
branches), files by listing the selected partitions. Footers are read once per object (cached by key, size and
mtime) to count rows and to unify the schema: a pyarrow dataset would otherwise take the first file's schema and
lose columns that only later files have. The selected files become a ``pyarrow`` dataset, each file carrying its
partition's provider/dataset/task/variant as a partition expression (what hive partitioning gives the local
path), registered in DuckDB under a generated name; DuckDB pushes projections and filters into it.

Why not DuckDB's ``httpfs``: it cannot be installed offline (DuckDB 2.0 does not bundle it) and would need its
own credential and endpoint set-up, while this path uses the same AWS environment as boto3
(``AWS_ENDPOINT_URL[_S3]``, ``AWS_REGION`` ...). So there is one S3 read path, and it is this one.

``catalog.duckdb`` of an S3 lake holds the ``partitions`` and ``hash_index`` tables only: the ``catalog`` view
depends on a dataset registered in a connection, so ``DuckDBClient`` creates it in every connection.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

from ..arrow.restore import duckdb_readable
from ..ingest.hash_index import OPTIONAL_COLUMNS
from ..lake import keys
from ..lake.layout import COMPACTED_PART, PartitionRef
from ..storage.backends import ObjectInfo, S3Storage, cache_dir_for
from .parts import PARTITION_COLUMNS, CatalogError
from .s3_refresh import DEDUP_HASHES, refresh_database
from .warehouse import (
    HASH_INDEX_SCHEMA,
    PARTITIONS_SCHEMA,
    create_hash_index_table,
    last_batch_of,
    stats_row,
    walk_partitions,
)

SEGMENTS = keys.SEGMENTS
DUCKDB_FILE = keys.DUCKDB
# appended in the order DuckDB's read_parquet(hive_partitioning=true) appends them (by name), so that
# ``SELECT * FROM catalog`` has the same columns as on a local lake
PARTITION_FIELDS = [pa.field(c, pa.string()) for c in sorted(PARTITION_COLUMNS)]


def cached_duckdb_file(base: str) -> Path:
    """The local ``catalog.duckdb`` of an S3 lake (in :func:`cache_dir_for`); ``<base>/catalog.duckdb`` is its copy."""
    return cache_dir_for(base) / DUCKDB_FILE


def partition_key(ref: PartitionRef) -> str:
    return keys.partition(ref)


class S3Catalog:
    """Listing, footers and DuckDB-registrable datasets of an S3 lake's catalog. Files are ``s3://`` URIs."""

    def __init__(self, base: str, storage: S3Storage | None = None, workers: int = 8):
        self.storage = storage or S3Storage(base)
        self.base = self.storage.uri
        self.fs, self.root = self.storage.arrow()
        self.workers = workers
        self.format = ds.ParquetFileFormat()
        self._objects: dict[str, tuple[ObjectInfo, PartitionRef | None]] = {}
        self._fragments: dict[tuple[str, int, object], ds.ParquetFileFragment] = {}
        self._registered: set[tuple[int, str]] = set()

    def _map(self, fn, items: Sequence) -> list:
        if len(items) < 2:
            return list(map(fn, items))
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(fn, items))

    def uri(self, key: str) -> str:
        return f"{self.base}/{key}"

    # listing ---------------------------------------------------------------------------------------------
    def select(self, providers=None, datasets=None, tasks=None, variants=None) -> list[PartitionRef]:
        """Like :func:`warehouse.select_partitions`, listing prefixes (one level's listings run concurrently)."""

        def children(prefix: str, level: str) -> list[tuple[str, str]]:
            mark = f"{level}="
            return [(d[len(mark) :], f"{prefix}/{d}") for d in self.storage.list_dirs(prefix) if d.startswith(mark)]

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return walk_partitions((providers, datasets, tasks, variants), keys.CATALOG, children, pool.map)

    def _list_partition(self, ref: PartitionRef) -> list[ObjectInfo]:
        prefix = partition_key(ref)
        found = [
            o
            for o in self.storage.list(prefix)
            if "/" not in (name := o.key[len(prefix) + 1 :]) and name.endswith(".parquet") and name[0] not in "._"
        ]
        return sorted(found, key=lambda o: (not o.key.endswith("/" + COMPACTED_PART), o.key))

    def files(self, refs: Iterable[PartitionRef] | None = None) -> list[str]:
        """The Parquet files (URIs) of the given partitions (default: all), compacted ``data.parquet`` first."""
        return [uri for listed in self._listings(refs) for uri in listed]

    def _listings(self, refs: Iterable[PartitionRef] | None) -> list[list[str]]:
        refs = self.select() if refs is None else list(refs)
        listings = self._map(self._list_partition, refs)
        out = []
        for ref, objects in zip(refs, listings):
            uris = [self.uri(o.key) for o in objects]
            self._objects.update({u: (o, ref) for u, o in zip(uris, objects)})
            out.append(uris)
        return out

    def adopt(self, objects: Sequence[tuple[ObjectInfo, PartitionRef]]) -> list[str]:
        """Make any Parquet objects of the lake (a deletion's retained files too) readable as files of the given
        partitions; return their URIs."""
        uris = [self.uri(o.key) for o, _ in objects]
        self._objects.update({u: pair for u, pair in zip(uris, objects)})
        return uris

    # footers ---------------------------------------------------------------------------------------------
    def _fragment(self, uri: str) -> ds.ParquetFileFragment:
        info, ref = self._objects[uri]
        cache_key = (uri, info.size, info.modified)
        fragment = self._fragments.get(cache_key)
        if fragment is None:
            where = None
            for column, value in ref.as_dict().items() if ref is not None else ():
                term = ds.field(column) == value
                where = term if where is None else where & term
            path = uri.removeprefix("s3://")
            fragment = self.format.make_fragment(path, self.fs, partition_expression=where, file_size=info.size)
            try:
                fragment.ensure_complete_metadata()
            except (pa.ArrowException, OSError) as exc:
                raise CatalogError(f"cannot read catalog file {uri}: {exc}") from None
            self._fragments[cache_key] = fragment
        return fragment

    def fragments(self, files: Sequence[str]) -> list[ds.ParquetFileFragment]:
        """Fragments with their footers read (concurrently); an unreadable file raises ``CatalogError``."""
        return self._map(self._fragment, files)

    def schema(self, fragments: Sequence[ds.ParquetFileFragment], with_partitions: bool = True) -> pa.Schema:
        """The union of the files' schemas in first-seen order (as DuckDB's ``union_by_name``), partitions last.

        Types are promoted as ``union_by_name`` does (int32 and int64 give int64)."""
        schemas = [f.physical_schema for f in fragments]
        try:
            unified = pa.unify_schemas(schemas, promote_options="permissive") if schemas else pa.schema([])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise CatalogError(f"catalog files of {self.base} have incompatible column types: {exc}") from None
        # DuckDB scans this dataset through Arrow, which has no float16: the scan widens it (results are
        # cast back to the stored types, see .arrow_restore)
        unified = pa.schema([f.with_type(duckdb_readable(f.type)) for f in unified], metadata=unified.metadata)
        if not with_partitions:
            return unified
        kept = [f for f in unified if f.name not in PARTITION_COLUMNS]
        return pa.schema(kept + PARTITION_FIELDS, metadata=unified.metadata)

    def dataset(self, files: Sequence[str]) -> ds.FileSystemDataset:
        """The files as one dataset with the unified schema and provider/dataset/task/variant columns."""
        fragments = self.fragments(files)
        return ds.FileSystemDataset(fragments, self.schema(fragments), self.format, self.fs)

    def register(self, con: duckdb.DuckDBPyConnection, files: Sequence[str]) -> str:
        """Register the files' dataset in ``con`` once per distinct list of object versions (a registered
        name is never replaced, so a reader streaming from it stays valid); return the view name."""
        versions = [f"{u}\t{self._objects[u][0].size}\t{self._objects[u][0].modified}" for u in files]
        name = "__s3_catalog_" + hashlib.sha1("\n".join(versions).encode()).hexdigest()[:16]
        if (id(con), name) not in self._registered:
            con.register(name, self.dataset(files))
            self._registered.add((id(con), name))
        return name

    # partitions and hash index ---------------------------------------------------------------------------
    def stats(
        self, refs: Iterable[PartitionRef] | None = None, listed: Sequence[tuple[list[ObjectInfo], bool]] | None = None
    ) -> pa.Table:
        """The ``partitions`` table (``PARTITIONS_SCHEMA``) from listings, footers and ``_metadata.json``.
        ``listed``: each partition's Parquet objects and whether it has a ``_metadata.json``, from a listing
        already made (then no partition is listed here and absent ``_metadata.json`` are not asked for)."""
        refs = self.select() if refs is None else list(refs)
        if listed is None:
            listings, has_metadata = self._listings(refs), [True] * len(refs)
        else:
            listings = [self.adopt([(o, ref) for o in objects]) for ref, (objects, _) in zip(refs, listed)]
            has_metadata = [there for _, there in listed]
        wanted = [ref for ref, there in zip(refs, has_metadata) if there]
        docs = dict(zip(wanted, self._map(self._metadata_doc, wanted)))
        fragments = iter(self.fragments([uri for uris in listings for uri in uris]))  # all footers at once
        rows = []
        for ref, uris in zip(refs, listings):
            count = sum(next(fragments).metadata.num_rows for _ in uris)
            size = sum(self._objects[u][0].size for u in uris)
            rows.append(stats_row(ref, len(uris), count, size, last_batch_of(docs.get(ref))))
        return pa.Table.from_pylist(rows, schema=PARTITIONS_SCHEMA)

    def _metadata_doc(self, ref: PartitionRef) -> object:
        try:
            return json.loads(self.storage.read_bytes(keys.partition_metadata(ref)))
        except (FileNotFoundError, ValueError):
            return None

    def segment_objects(self) -> list[ObjectInfo]:
        """The hash-index segments ``index/segments/*.parquet`` (one listing)."""
        return [o for o in self.storage.list(SEGMENTS) if o.key.endswith(".parquet")]

    def hash_segments(self, objects: Sequence[ObjectInfo] | None = None) -> ds.FileSystemDataset | None:
        """The segments (default: every one) as one dataset, their columns checked (None when there are none)."""
        objects = self.segment_objects() if objects is None else objects
        if not objects:
            return None
        uris = [self.uri(o.key) for o in objects]
        self._objects.update({u: (o, None) for u, o in zip(uris, objects)})
        fragments = self.fragments(uris)
        for uri, fragment in zip(uris, fragments):
            names = set(fragment.physical_schema.names)  # segments of older versions lack optional columns
            if not names <= set(HASH_INDEX_SCHEMA.names) or set(HASH_INDEX_SCHEMA.names) - names - OPTIONAL_COLUMNS:
                raise CatalogError(
                    f"hash-index segment {uri} has columns {fragment.physical_schema.names}; "
                    f"expected {HASH_INDEX_SCHEMA.names}"
                )
        return ds.FileSystemDataset(fragments, HASH_INDEX_SCHEMA, self.format, self.fs)

    def build_hash_index(self, con: duckdb.DuckDBPyConnection, temp: bool = False) -> int:
        """Create ``hash_index`` in ``con``: one row per sha256 over all segments, the earliest ``created_at``."""
        create_hash_index_table(con, temp=temp)
        segments = self.hash_segments()
        if segments is None:
            return 0
        con.register("__hash_segments", segments)
        try:
            columns = ", ".join(HASH_INDEX_SCHEMA.names)
            select = DEDUP_HASHES.format(columns=columns, source="__hash_segments")
            con.execute(f"INSERT INTO hash_index {select} ORDER BY sha256")
        finally:
            con.unregister("__hash_segments")
        return con.execute("SELECT count(*) FROM hash_index").fetchall()[0][0]


def refresh_duckdb_s3(
    base: str, db_path: Path | str | None = None, storage: S3Storage | None = None, rebuild: bool = False
) -> dict:
    """Build or update the S3 lake's ``catalog.duckdb`` (``partitions`` and ``hash_index`` tables; no ``catalog``
    view, see the module docstring) in the cache folder, swap it in with ``os.replace`` and upload it to
    ``<base>/catalog.duckdb`` (through ``storage``, default one opened on ``base``). Incremental
    (:mod:`.s3_refresh`): only the footers of partitions changed since the previous file are read; an
    unreadable one raises ``CatalogError`` and leaves the file as it was. ``rebuild``: from scratch."""
    started = time.perf_counter()
    catalog = S3Catalog(base, storage)
    target = Path(db_path) if db_path is not None else cached_duckdb_file(catalog.base)
    summary = refresh_database(catalog, target, rebuild)
    catalog.storage.upload(target, DUCKDB_FILE)
    seconds = round(time.perf_counter() - started, 3)
    return {"path": catalog.uri(DUCKDB_FILE), "local_path": str(target), **summary, "seconds": seconds}

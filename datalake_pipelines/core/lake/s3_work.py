"""Processing on an S3 lake: a local work lake per run, then publishing to S3 in an idempotent order.

The mixin :class:`S3Processing` holds the processing half of :class:`~.s3.S3Lake` (kept apart for size): the
claimed batch and its partition's catalog files are downloaded into a throwaway work lake under the cache
folder, :class:`~..ingest.processing.BatchProcessor` runs there with a :class:`~..ingest.s3_index.TieredHashIndex`,
and the outcome is published: new assets, the catalog part, ``_metadata.json``, the hash-index segment, the
staging clean-up, and finally the job record. A run that dies anywhere can simply run again: its batch is still
in ``pending/`` until the clean-up, so a done job record always belongs to a batch that is gone from staging.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..catalog.parts import CompactionResult, compact_partition, read_partition_metadata
from ..errors import ValidationError
from ..ingest.hash_index import HashIndex, IndexEntry
from ..ingest.known_content import known_staged_files
from ..ingest.manifest import load_manifest
from ..ingest.processing import BatchProcessor, BatchResult, ProcessOptions, write_job_record
from ..ingest.s3_index import SegmentCache, TieredHashIndex
from ..ingest.s3_rows import S3RowSegments
from ..storage.backends import cache_dir_for, download_tree, upload_tree
from ..storage.pool import s3_map
from . import batches, keys
from .keys import BATCH_MANIFEST, COMPACTED_PART, ERROR_FILE, PARTITION_METADATA
from .layout import LakeLayout, PartitionRef
from .protocol import ClaimOptions

if TYPE_CHECKING:
    from ..storage.backends import S3Storage
    from .protocol import Claimed
    from .schema import SchemaConfig


class WorkLayout(LakeLayout):
    """A throwaway local lake standing in for an S3 lake: it holds the catalog files it fetched and what a run
    wrote, not the lake's assets or hash index, so reading those goes to the lake (``storage``, ``index``)."""

    def __init__(self, root: Path, storage: S3Storage, index: Callable[[], HashIndex]):
        super().__init__(root)
        self.storage = storage
        self._index = index

    def read_asset(self, relpath: str) -> bytes:
        """A run's new asset from the work lake (the same bytes it publishes), any other from the S3 lake."""
        path = self.resolve(relpath)  # ValueError for a path leaving the lake
        if path.is_file():
            return path.read_bytes()
        return self.storage.read_bytes(path.relative_to(self.base).as_posix())

    def open_hash_index(self) -> HashIndex:
        """The S3 lake's published hash index (its validated local cache); the caller closes it."""
        return self._index()


class S3Processing:
    """Needs ``storage`` (S3Storage), ``base``, ``cache`` (Path), ``schema()``, ``fail()``, ``claim_ready()``,
    ``_claim_key()``, ``uri_of()``, ``record_version()`` and ``_sizes_cache`` from the lake class it is mixed into."""

    # what the lake class provides, declared for the type checker only (set in S3Lake.__init__)
    storage: S3Storage
    base: str
    cache: Path
    _sizes_cache: SegmentCache | None
    # path -> size of the assets this lake object PUT (or a HEAD found) during one process_pending call: a later
    # lookup of the call that hits them needs no HEAD to know they exist (the earlier batch's published rows
    # reference them, so GC keeps them). None outside process_pending: every hit is confirmed by a HEAD.
    _published_now: dict[str, int] | None = None

    if TYPE_CHECKING:  # defined by S3Lake; stubs only for mypy, so that nothing shadows BaseLake at run time

        def schema(self) -> SchemaConfig: ...
        def fail(self, job_id: str, error: dict[str, Any]) -> str: ...
        def claim_ready(self, state: dict[str, Any], options: ClaimOptions) -> Claimed: ...
        @staticmethod
        def _claim_key(job_id: str) -> str: ...
        def uri_of(self, key: str) -> str: ...
        def _drop_pending(self, job_id: str, objects: list[str] | None = None) -> None: ...
        def record_version(self, result: BatchResult | CompactionResult, action: str = "ingest") -> None: ...
        def chunk_outcomes(self, job_id: str, options: Any, listing: list[Any]) -> dict[Any, Any]: ...

    # hash index --------------------------------------------------------------------------------------------
    def index_cache(self) -> SegmentCache:
        """The local cache of the published hash index, checked against the bucket's segments first."""
        cache = SegmentCache(self.storage, self.cache / "index")
        cache.sync()
        return cache

    def existing_assets(self, paths: list[str]) -> dict[str, int]:
        """``path -> size`` for the ``paths`` whose objects exist (concurrent HEADs)."""

        def size(path: str) -> int | None:
            try:
                return self.storage.info(path).size
            except FileNotFoundError:
                return None

        known = {p: self._published_now[p] for p in paths if self._published_now and p in self._published_now}
        ask = [p for p in paths if p not in known]
        return known | {p: n for p, n in zip(ask, s3_map(size, ask)) if n is not None}

    def sound_assets(self, entries: list[IndexEntry]) -> set[str]:
        """The hashes of ``entries`` whose object exists with the indexed size (concurrent HEADs): an upload
        stages the others again, so content deleted behind the index's back is stored from its bytes."""
        there = self.existing_assets(sorted({e.path for e in entries}))
        if self._published_now is not None:  # confirmed in this run: its index lookups need no second HEAD
            self._published_now.update(there)
        return {e.sha256 for e in entries if there.get(e.path) == e.size}

    def asset_sizes(self, hashes: list[str]) -> dict[str, int]:
        """Stored sha256 -> size from the published hash index (validated cache), for integrity checks.

        The cache is synced with the bucket on the first call of this object only (one listing per check).
        """
        if self._sizes_cache is None:
            self._sizes_cache = self.index_cache()
        found = self._sizes_cache.index.get_many(hashes)
        return {h: e.size for h, e in found.items() if e.stored_sha256 == h}

    def published_index(self) -> HashIndex:
        """The local cache of every published segment, validated and brought up to date with S3 first."""
        return self.index_cache().index

    @contextlib.contextmanager
    def hash_index(self) -> Iterator[HashIndex]:
        """The published hash index (the validated local cache of every segment)."""
        yield self.published_index()

    def forget_assets(self, paths: set[str]) -> int:
        """Remove the hash-index entries naming any of ``paths`` from the published segments (rewritten, or
        deleted once empty) and the local cache; return how many went. Every cache sees the changed segments and
        reloads (:mod:`..ingest.s3_index`), so no cache keeps serving a removed entry."""
        return self.index_cache().remove_paths(paths)

    def drop_partition(self, ref: PartitionRef) -> None:
        """Delete every object of a partition (``_metadata.json`` first, so no reader sees it half gone)."""
        prefix = keys.partition(ref)
        names = [o.key for o in self.storage.list(prefix)]
        self.storage.delete([k for k in names if k == keys.partition_metadata(ref)])
        self.storage.delete([k for k in names if k != keys.partition_metadata(ref)])

    def partitions(self) -> list[PartitionRef]:
        """Every partition of the catalog, listed level by level."""
        from ..catalog.s3 import S3Catalog  # the catalog package imports the lake's layout

        return S3Catalog(self.base, self.storage).select()

    # the DuckDB warehouse ----------------------------------------------------------------------------------
    # keyed by the environment's endpoint (as the code location's ``duckdb`` resource is), not the client's
    @property
    def duckdb_file(self) -> Path:
        """The local ``catalog.duckdb`` in the lake's cache folder; ``<base>/catalog.duckdb`` is its uploaded copy."""
        from ..catalog.s3 import cached_duckdb_file

        return cached_duckdb_file(self.base)

    @property
    def warehouse_lock(self) -> Path:
        """The refresh's lock file, local to this machine (across machines Dagster's pool keeps refreshes apart)."""
        return cache_dir_for(self.base) / "locks" / "catalog.duckdb.lock"

    def refresh_warehouse(self, db_path: Path | None = None, rebuild: bool = False) -> dict[str, Any]:
        """Build ``catalog.duckdb`` at ``db_path`` (default :attr:`duckdb_file`) and upload it; see
        :func:`~..catalog.s3.refresh_duckdb_s3` (the summary it returns, ``CatalogError`` for a bad file).
        ``rebuild``: from scratch, the previous file ignored."""
        from ..catalog.s3 import refresh_duckdb_s3

        return refresh_duckdb_s3(self.base, db_path, self.storage, rebuild)

    def asset_sha256(self, relpath: str) -> str:
        """SHA-256 of a stored asset, streamed from S3; "missing" if there is no such object."""
        if not keys.is_asset(relpath):
            return "outside the lake"
        try:
            return self.storage.sha256(relpath)
        except FileNotFoundError:
            return "missing"

    # work lakes --------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def work_view(self, name: str) -> Iterator[LakeLayout]:
        """A throwaway local lake under the cache folder for one run (``name`` starts its folder), removed after:
        a :class:`WorkLayout` holding the lake's ``config/schema.yaml``, reading assets from the lake."""
        root = self.cache / "runs" / f"{name}-{uuid.uuid4().hex[:8]}"
        try:
            layout = WorkLayout(root, self.storage, self.published_index)
            with contextlib.suppress(FileNotFoundError):  # readers of the view see the lake's own schema
                layout.schema_file.write_bytes(self.storage.read_bytes(keys.SCHEMA))
            yield layout
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def work_lake(self, job_ids: list[str]):
        """:meth:`work_view` named after the first job id (kept for callers of the older name)."""
        return self.work_view((job_ids or ["rebuild"])[0])

    @contextlib.contextmanager
    def partition_view(self, ref: PartitionRef) -> Iterator[LakeLayout]:
        """A work lake holding a copy of the partition's catalog files (for checks and reports)."""
        with self.work_view(f"view-{ref.provider}") as work:
            self.fetch_partition(work, ref)
            yield work

    def fetch_partition(self, work: LakeLayout, ref: PartitionRef) -> int:
        """Download a partition's catalog files (Parquet parts and ``_metadata.json``) into ``work``."""
        return download_tree(self.storage, keys.partition(ref), work.partition_dir(ref))

    def row_index_problems(self, ref: PartitionRef, view: LakeLayout) -> list[str]:
        """Where the partition's row-hash segments disagree with its part files (copies in ``view``)."""
        cache = SegmentCache(self.storage, self.cache / "index")
        return S3RowSegments(self.storage, cache.index, cache.folder).problems(ref, view.partition_dir(ref))

    def fetch_for_batch(self, work: LakeLayout, ref: PartitionRef) -> None:
        """What a batch's run needs of its partition, never every part file: ``_metadata.json`` (the schema
        contract, the batch history) and the parts it does not record (a run that died between uploading its part
        and its ``_metadata.json``: their types may be wider than the recorded contract). A partition without a
        recorded contract (an older lake) is fetched whole. Row dedup reads segments instead (``s3_rows``)."""
        prefix = keys.partition(ref)
        objects = {o.key.removeprefix(prefix + "/"): o for o in self.storage.list(prefix + "/")}
        if PARTITION_METADATA in objects:
            self.storage.download(keys.partition_metadata(ref), work.partition_metadata(ref))
        meta = read_partition_metadata(work, ref)
        if "contract" not in meta:
            self.fetch_parts(work, ref)
            return
        recorded = {Path(keys.part_file(ref, b.get("job_id", ""))).name for b in meta.get("batches", [])}
        if meta.get("compacted_at"):
            recorded.add(COMPACTED_PART)
        missing = [
            (obj, work.partition_dir(ref) / name)
            for name, obj in objects.items()
            if name.endswith(".parquet") and "/" not in name and name not in recorded
        ]
        s3_map(lambda o: self.storage.download(o[0].key, o[1], o[0].size), [o for o in missing if not o[1].exists()])

    def fetch_parts(self, work: LakeLayout, ref: PartitionRef) -> None:
        """Download the partition's catalog files ``work`` lacks (the ones it holds are the same or newer: a run's
        own part and ``_metadata.json`` are published from it). Used to conform older parts to a widened contract,
        and by :meth:`fill_view` for the ingest asset's whole-partition reports."""
        prefix = keys.partition(ref)
        wanted = [
            (o, work.partition_dir(ref) / o.key.removeprefix(prefix + "/")) for o in self.storage.list(prefix + "/")
        ]
        s3_map(lambda o: self.storage.download(o[0].key, o[1], o[0].size), [o for o in wanted if not o[1].exists()])

    def fill_view(self, view: LakeLayout, ref: PartitionRef) -> None:
        """Make a run's work lake hold the whole partition (its profile, preview and checks read every row)."""
        self.fetch_parts(view, ref)

    def catalog_uri(self, ref: PartitionRef) -> str:
        return self.uri_of(keys.partition(ref))

    # processing --------------------------------------------------------------------------------------------
    def _process_one(
        self,
        work: LakeLayout,
        job_id: str,
        options: ProcessOptions,
        run_info: dict[str, Any] | None = None,
        chunks: bool = False,
    ) -> BatchResult:
        """Process one claimed batch in ``work`` and publish the outcome to S3 (``chunks``: reuse what the run's
        chunk steps stored and published, ``s3_chunks.py``)."""
        result = BatchResult(job_id)
        batch = work.processing_batch(job_id)
        try:
            self.storage.download(keys.pending_manifest(job_id), batch / BATCH_MANIFEST)
        except FileNotFoundError:
            result.status, result.error = "skipped", "the batch is no longer in staging/pending"
            self.storage.delete([self._claim_key(job_id)])
            return result
        schema = self.schema()
        prefix, batch_dir = keys.pending_batch(job_id), batch
        listing = list(self.storage.list(prefix))
        done = self.chunk_outcomes(job_id, options.store_options(), listing) if chunks else {}
        stored = {rel for _kind, rel in done}  # the chunks' files: not downloaded again
        cache = self.index_cache()
        known: set[str] = set()  # staged files whose content is published (since the upload): not downloaded
        with contextlib.suppress(ValidationError, ValueError):
            manifest = load_manifest(batch, job_id)
            known = known_staged_files(manifest, cache.index, self.sound_assets)
            self.fetch_for_batch(work, manifest.partition)
        download_tree(
            self.storage,
            prefix,
            batch,
            skip=lambda rel: rel == BATCH_MANIFEST or rel in known or rel in stored,
            objects=listing,
        )
        run_index = TieredHashIndex(work.index_dir / f"run-{job_id}.sqlite", cache.index, self.existing_assets)
        rows = S3RowSegments(self.storage, cache.index, cache.folder)
        processor = BatchProcessor(
            work,
            options,
            schema=schema,
            index=run_index,
            rows=rows,
            fetch_parts=lambda r: self.fetch_parts(work, r),
            fetch_files=lambda rels: s3_map(
                lambda rel: self.storage.download(f"{prefix}/{rel}", batch_dir / rel), rels
            ),
        )
        result = processor.process(job_id, run_info, done)
        if result.source.get("method") == "hand_drop":  # the work lake's copy says nothing of who dropped it
            result.source.update(user=None, staged_at=None)
        clash = self._part_clash(job_id, result) if result.status == "done" else None
        if clash is not None:  # nothing is published, and the done batch's job record stays
            result.status, result.error, result.rows_added, result.part_file = "failed", clash, 0, None
            result.rejected_dir = self.fail(job_id, {"error": clash, "partition": result.partition, **(run_info or {})})
            return result
        if result.status == "done":
            uploaded = {o.entry.path for o in done.values() if o.new and o.entry is not None}  # by the chunks
            self._publish(work, job_id, result, run_index, cache, rows, uploaded)
        else:
            error = json.loads((work.failed_batch(job_id) / ERROR_FILE).read_text())
            result.rejected_dir = self.fail(job_id, error)
        write_job_record(work, result, run_info)  # with the S3 URIs publishing gave its paths
        self.storage.upload(work.job_record(job_id), keys.job_record(job_id))
        return result

    def _part_clash(self, job_id: str, result: BatchResult) -> str | None:
        """Why publishing ``result`` would replace the part file of another batch of the same job id (a done one,
        whose rows it holds), or None. Staging and claiming refuse a used job id already; this is the last guard."""
        if not result.part_file or result.partition is None:
            return None
        key = f"{keys.partition(PartitionRef.parse(result.partition))}/{Path(result.part_file).name}"
        reused = batches.done_job_reused(self.storage, job_id) if self.storage.exists(key) else None
        return None if reused is None else f"{reused} ({self.uri_of(key)} was not replaced)"

    def process_pending(self, options: ProcessOptions, quiet_seconds: float = 2.0) -> list[BatchResult]:
        """Claim and process every complete pending batch in this process (no Dagster needed), each batch in
        its own work lake; hand drops whose objects are younger than ``quiet_seconds`` wait."""
        claimed = self.claim_ready({}, ClaimOptions(quiet_seconds=quiet_seconds))
        results: list[BatchResult] = []
        self._published_now = {}
        try:
            for job_id in [j for job_ids in claimed.groups.values() for j in job_ids]:  # each partition's in order
                with self.work_view(job_id) as work:
                    results.append(self._process_one(work, job_id, options))
                self.record_version(results[-1])
        finally:
            self._published_now = None
        return results

    def _publish(
        self,
        work: LakeLayout,
        job_id: str,
        result: BatchResult,
        run_index: TieredHashIndex,
        cache: SegmentCache,
        rows: S3RowSegments,
        uploaded: set[str] | None = None,
    ) -> None:
        entries = run_index.new_entries()
        local = [e for e in entries if not uploaded or e.path not in uploaded or (work.base / e.path).is_file()]
        s3_map(lambda e: self.storage.upload(work.base / e.path, e.path), local)  # step 1: every new asset
        if self._published_now is not None:
            self._published_now.update((e.path, e.size) for e in entries)
        if result.part_file and result.partition is None:  # BatchProcessor sets the partition before a part
            raise ValueError(f"batch {job_id} wrote a catalog part but names no partition")
        if result.partition is not None:
            ref = PartitionRef.parse(result.partition)
            prefix = keys.partition(ref)
            if result.part_file:
                part = Path(result.part_file)
                self.storage.upload(part, f"{prefix}/{part.name}")
                rows.publish(ref, [part])  # its row-hash segment, after the part (see ingest/s3_rows.py)
                result.part_file = self.uri_of(f"{prefix}/{part.name}")
            conformed = [Path(c) for c in result.conformed_parts]  # older parts rewritten in widened contract types
            s3_map(lambda path: self.storage.upload(path, f"{prefix}/{path.name}"), conformed)
            rows.publish(ref, conformed, same_rows=True)
            result.conformed_parts = [self.uri_of(f"{prefix}/{p.name}") for p in conformed]
            if work.partition_metadata(
                ref
            ).is_file():  # also for a batch that added no row: its batches entry and rejection history
                self.storage.upload(work.partition_metadata(ref), keys.partition_metadata(ref))
        cache.publish(job_id, entries)
        rejected = work.rejected_batch(job_id)
        if rejected.is_dir():
            upload_tree(self.storage, rejected, keys.rejected_batch(job_id), last=BATCH_MANIFEST)
            result.rejected_dir = self.uri_of(keys.rejected_batch(job_id))
        kept = (result.staging_report or {}).get("kept")
        if kept:  # a hand drop's files no row took (core/hand_drop.py): kept on S3 too, never dropped
            folder = Path(kept["folder"])
            upload_tree(self.storage, folder, keys.failed_batch(folder.name), last=ERROR_FILE)
            kept["folder"] = self.uri_of(keys.failed_batch(folder.name))
        self._drop_pending(job_id)

    # rebuild -----------------------------------------------------------------------------------------------
    def rebuild_partition(self, ref: PartitionRef, batch_size: int, view: LakeLayout | None = None) -> CompactionResult:
        """Compact a partition in a work lake (``view``, else a fresh one) and publish the result to S3."""
        if view is None:
            with self.work_view(f"rebuild-{ref.provider}") as work:
                return self.rebuild_partition(ref, batch_size, work)
        self.fetch_partition(view, ref)
        folder = view.partition_dir(ref)
        before = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        result = compact_partition(view, ref, batch_size)
        if folder.is_dir():
            self.publish_partition(view, ref, before)
            cache = SegmentCache(self.storage, self.cache / "index")
            rows = S3RowSegments(self.storage, cache.index, cache.folder)
            if result.path is not None:
                rows.publish(ref, [result.path])
            rows.rebuild(ref)  # duplicates dropped, parts gone: only data.parquet's hashes stay indexed
            self.record_version(result, "rebuild")
        return result

    def publish_partition(self, work: LakeLayout, ref: PartitionRef, before: set[str]) -> None:
        """After a local rebuild of a partition in ``work``: upload its files, delete the replaced parts."""
        folder = work.partition_dir(ref)
        prefix = keys.partition(ref)
        now = {p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
        s3_map(lambda name: self.storage.upload(folder / name, f"{prefix}/{name}"), sorted(now - {PARTITION_METADATA}))
        # the replaced parts go before _metadata.json: a deletion interrupted in between is found again by the
        # batch its _metadata.json still lists, never left with the deleted rows in an old part it no longer names
        self.storage.delete(f"{prefix}/{name}" for name in sorted(before - now))
        self.storage.upload(folder / PARTITION_METADATA, keys.partition_metadata(ref))

"""``LocalLake``: the :class:`~.protocol.Lake` of a local or NAS folder.

A batch is claimed by an atomic ``rename`` from ``pending/`` into ``processing/`` plus a ``.claim.json``
marker (:mod:`.queue`); it is processed in place by :class:`~..ingest.processing.BatchProcessor`. A hand drop
(a folder copied into ``pending/``) is ready once its file count, sizes and mtimes stayed unchanged for
``quiet_seconds`` across claiming rounds (the caller keeps ``state`` between rounds, e.g. in a sensor cursor);
a folder without a usable ``_metadata.json`` waits ``grace_seconds`` after it stopped changing, then goes
to ``failed/`` with the reason.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..catalog.parts import CompactionResult, compact_partition
from ..catalog.refresh import refresh_duckdb
from ..errors import DatalakeError, ValidationError
from ..ingest.asset_store import asset_problem, sha256_file
from ..ingest.chunks import Chunk, local_outcomes, store_local_chunk
from ..ingest.file_accounting import regular_files
from ..ingest.hash_index import HashIndex, IndexEntry
from ..ingest.index_store import existing_hash_index
from ..ingest.manifest import load_manifest
from ..ingest.pg_rows import open_row_index
from ..ingest.processing import BatchProcessor, BatchResult, ProcessOptions, process_pending
from ..ingest.row_index import LocalRowDedup
from ..ingest.verify import local_sizes
from ..storage.backends import LocalStorage
from ..storage.files import read_json, write_json_atomic
from . import batches, keys, queue
from .changes import partition_writer, record_write
from .keys import ERROR_FILE, LOCAL_CLAIM_MARKER
from .layout import LakeLayout, PartitionRef
from .locks import LockTimeout, PartitionBusy, exclusive_lock
from .protocol import BaseLake, Claim, Claimed, ClaimOptions, RunState, claim_doc_state
from .queue_view import REFUSED_MARK, QueueEntry, seconds_left, short_reason
from .schema import SchemaConfig, load_schema
from .triage import unusable_reason

if TYPE_CHECKING:
    from ..ingest.batch_sinks import LocalBatchSink


class LocalLake(BaseLake):
    """A lake in a folder; ``layout`` gives its paths (``base`` is the folder as text)."""

    kind = "local"

    def __init__(self, layout: LakeLayout):
        self.layout = layout
        self.base = str(layout.base)
        self.storage = LocalStorage(layout.base)

    # config ------------------------------------------------------------------------------------------------
    def schema(self) -> SchemaConfig:
        return load_schema(self.layout)

    @contextlib.contextmanager
    def edit_schema(self) -> Iterator[SchemaConfig]:
        """The lake's schema, saved when the block ends without an exception."""
        schema = load_schema(self.layout)
        yield schema
        schema.save()

    @property
    def schema_uri(self) -> str:
        return str(self.layout.schema_file)

    def scratch_layout(self) -> LakeLayout:
        """Where batches are assembled before staging: the lake itself (they are renamed into ``pending/``)."""
        return self.layout

    def check_job_id_free(self, job_id: str) -> None:
        """ValidationError when the lake holds ``job_id`` anywhere (:func:`.batches.check_job_id_free`)."""
        batches.check_job_id_free(self.storage, job_id)

    def stage(self, batch_dir: Path, job_id: str) -> str:
        """A batch assembled in :meth:`scratch_layout` is already in ``pending/`` (atomic rename; its job id was
        checked free before it was assembled): its path."""
        return str(batch_dir)

    def batch_sink(self, job_id: str) -> LocalBatchSink:
        """Where a batch is written piece by piece: ``pending/.tmp-<job>``, renamed into ``pending/`` on publish."""
        from ..ingest.batch_sinks import LocalBatchSink  # imports boto3 (transfer.py): only when staging from a URL

        return LocalBatchSink(self, job_id)

    # queue -------------------------------------------------------------------------------------------------
    def pending(self) -> list[str]:
        """Job ids in ``pending/`` in staging order (manifest ``created_at``, then job id)."""
        return [b.job_id for b in queue.scan_pending(self.layout)]

    def claim_ready(self, state: dict[str, Any], options: ClaimOptions) -> Claimed:
        """Triage every pending batch and claim the ready ones; ``state["seen"]`` keeps hand-drop signatures."""
        seen: dict = state.get("seen", {})
        pending = queue.scan_pending(self.layout)
        now = time.time()
        groups: dict[PartitionRef, list[str]] = defaultdict(list)
        waiting = 0
        schema = functools.cache(self.schema)  # read once per round, not per batch (a YAML parse: 8 ms)
        for batch in pending:
            if not queue.is_quiet(batch, seen, now, options.quiet_seconds):
                waiting += 1
                continue
            ref = self._triage(batch, now, options, schema)
            if ref is None:
                continue
            run_key = queue.run_key_for(batch.job_id, queue.attempt_of(self.layout.pending_batch(batch.job_id)))
            if queue.claim(self.layout, batch.job_id, run_key, ref):
                groups[ref].append(batch.job_id)
        names = {b.job_id for b in pending}
        state["seen"] = {k: v for k, v in seen.items() if k.split(":", 1)[-1] in names}
        return Claimed(dict(groups), waiting)

    def _triage(
        self, batch: queue.PendingBatch, now: float, options: ClaimOptions, schema: Callable[[], SchemaConfig]
    ) -> PartitionRef | None:
        """A quiet pending batch: ready (its partition), not yet (None), or unusable (moved to failed/, None)."""
        job_id = batch.job_id
        if batch.problem:  # no usable manifest: wait for the grace period, or give up (core/lake/triage.py)
            try:
                idle = now - last_change(self.layout.pending_batch(job_id))
            except FileNotFoundError:
                return None  # claimed by a concurrent round since the scan
            reason = unusable_reason(job_id, batch.problem, batch.fatal, idle, options.grace_seconds, options.log)
            if reason is not None:
                self._reject_logged(job_id, reason, options.log)
            return None
        try:
            manifest = load_manifest(self.layout.pending_batch(job_id), job_id).validate(schema())
            if options.key_allowed is not None and not options.key_allowed(manifest.partition.key):
                raise ValidationError(f"partition key {manifest.partition.key!r} is not allowed")
            reused = batches.done_job_reused(self.storage, job_id)
            if reused:
                raise ValidationError(reused)
        except (DatalakeError, ValueError) as exc:
            if self.layout.pending_batch(job_id).is_dir():  # else claimed by a concurrent round since the scan
                self._reject_logged(job_id, str(exc), options.log)
            return None
        return manifest.partition

    def _reject_logged(self, job_id: str, reason: str, log: Any) -> None:
        if self._refuse(job_id, reason):
            log.warning(f"pending batch {job_id} rejected: {reason}")

    def _refuse(self, job_id: str, reason: str) -> bool:
        """Move a pending batch to ``failed/`` before any run, its ``error.json`` marked ``refused``."""
        target = queue.reject_pending(self.layout, job_id, reason)
        if target is None:
            return False
        error = target / ERROR_FILE
        write_json_atomic(error, {**read_json(error), REFUSED_MARK: True})
        return True

    def held_batches(self, options: ClaimOptions, state: dict[str, Any], now: float) -> list[QueueEntry]:
        """Every folder in ``pending/`` with how long it still waits: from the claiming rounds' ``state["seen"]``
        when given (what the sensor decides by), else from the folder's newest mtime."""
        seen = state.get("seen", {})
        entries = []
        for batch in queue.scan_pending(self.layout):
            job_id = batch.job_id
            record = seen.get(job_id)
            newest = batch.signature[2] if batch.signature else now
            quiet_since = record[1] if record and record[0] == list(batch.signature or ()) else newest
            quiet_left = seconds_left(options.quiet_seconds, now - quiet_since) if batch.hand_drop else 0.0
            state_, reason, left = "pending", "", None
            if batch.problem:
                if batch.fatal:  # refused once quiet
                    left = quiet_left
                else:  # the grace period counts from the batch's last change (core/lake/triage.py)
                    try:
                        idle = now - last_change(self.layout.pending_batch(job_id))
                    except FileNotFoundError:
                        continue  # claimed since the scan
                    left = max(quiet_left, seconds_left(options.grace_seconds, idle))
                state_, reason = "incomplete", short_reason(batch.problem)
            elif quiet_left > 0:
                state_, left = "waiting", quiet_left
                reason = f"hand drop, claimed once unchanged for {options.quiet_seconds:.0f} s"
            partition = batch.partition.key if batch.partition else None
            path = str(self.layout.pending_batch(job_id))
            entries.append(QueueEntry(job_id, state_, partition, reason, left, None, batch.staged_at, path))
        return entries

    def claim(self, job_id: str, run_key: str, partition: PartitionRef, attempt: int = 1) -> bool:
        """Rename ``pending/<job>`` into ``processing/`` and write its claim marker; False if already taken."""
        return queue.claim(self.layout, job_id, run_key, partition)

    def read_claim(self, job_id: str) -> Claim | None:
        doc = queue.read_claim(self.layout, job_id)
        return Claim.from_json({"job_id": job_id, **doc}) if doc is not None else None

    def write_claim(self, claim: Claim) -> None:
        write_json_atomic(self.layout.processing_batch(claim.job_id) / LOCAL_CLAIM_MARKER, claim.to_json())

    def claims(self) -> list[Claim]:
        """Claims of every batch in ``processing/``; a folder without a marker gets one with no run key."""
        return [Claim.from_json(doc) for doc in queue.claimed_batches(self.layout)]

    def mark_running(self, job_id: str, run_id: str, pid: int) -> None:
        queue.mark_running(self.layout, job_id, run_id, pid)

    def requeue_or_fail(self, job_id: str, reason: str, run_id: str | None) -> str:
        """Back to ``pending/`` under run key ``<job>.attempt2``, or (after that) to ``failed/``."""
        return queue.requeue_or_fail(self.layout, job_id, reason, run_id)

    def reject(self, job_id: str, reason: str) -> bool:
        return self._refuse(job_id, reason)

    def abort(self, job_id: str, error: dict[str, Any]) -> bool:
        """Send a batch still in ``processing/`` to ``failed/`` (its run is going away); False if it is not there."""
        if not self.layout.processing_batch(job_id).is_dir():
            return False
        queue.fail_batch(self.layout, job_id, error)
        return True

    def status(self, job_id: str, run_state: RunState | None = None) -> dict[str, Any] | None:
        """Where a batch is, in the record shape of :func:`.batches.batch_entry`; None for an unknown job id."""
        return batches.BatchReader(self.storage, local=True).status(job_id, claim_doc_state(run_state))

    def list_batches(self, run_state: RunState | None = None) -> list[dict[str, Any]]:
        return batches.BatchReader(self.storage, local=True).list_all(claim_doc_state(run_state))

    # processing and the catalog ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def work_view(self, name: str) -> Iterator[LakeLayout]:
        """Batches are processed in the lake itself."""
        yield self.layout

    @contextlib.contextmanager
    def partition_view(self, ref: PartitionRef) -> Iterator[LakeLayout]:
        yield self.layout

    def process(
        self,
        job_ids: list[str],
        options: ProcessOptions,
        run_info: dict[str, Any] | None = None,
        view: LakeLayout | None = None,
        log: Any = None,
        chunks: bool = False,
    ) -> list[BatchResult]:
        self._processor = BatchProcessor(self.layout, options)  # one hash index and schema for the whole run
        return super().process(job_ids, options, run_info, view or self.layout, log, chunks)

    def _process_one(
        self,
        view: LakeLayout,
        job_id: str,
        options: ProcessOptions,
        run_info: dict[str, Any] | None,
        chunks: bool = False,
    ) -> BatchResult:
        batch_dir = self.layout.processing_batch(job_id)
        if not batch_dir.is_dir():
            return BatchResult(job_id, status="skipped", error="the batch is no longer in staging/processing")
        done = local_outcomes(self.storage, batch_dir, job_id, options.store_options()) if chunks else None
        return self._processor.process(job_id, run_info, done)

    def _staged_files(self, job_id: str) -> set[str] | None:
        batch_dir = self.layout.processing_batch(job_id)
        return regular_files(batch_dir) if batch_dir.is_dir() else None

    @contextlib.contextmanager
    def _plan_source(self, job_id: str, files: set[str]) -> Iterator[Path]:
        yield self.layout.processing_batch(job_id)

    def store_chunk(self, chunk: Chunk, options: ProcessOptions) -> dict[str, Any]:
        """Store one chunk of a claimed batch in place (``ingest/chunks.py``)."""
        return store_local_chunk(self.layout, self.storage, chunk, options.store_options(), options.num_proc)

    def process_pending(self, options: ProcessOptions, quiet_seconds: float = 2.0) -> list[BatchResult]:
        """Claim (rename) and process every pending batch in this process, in staging order; hand drops are
        taken as they are (the caller knows they are complete), invalid batches end in ``failed/``; a batch
        reusing the job id of a done one is sent to ``failed/`` unprocessed (its part file would be replaced)."""
        for batch in queue.scan_pending(self.layout):
            reused = batches.done_job_reused(self.storage, batch.job_id)
            if reused:
                self._reject_logged(batch.job_id, reused, logging.getLogger("datalake"))
        results = process_pending(self.layout, options)
        for result in results:
            self.record_version(result)
        return results

    def rebuild_partition(self, ref: PartitionRef, batch_size: int, view: LakeLayout | None = None) -> CompactionResult:
        """Compact a partition in place: one ``data.parquet``, duplicates dropped (idempotent), under the
        partition lock a processing run takes, so a CLI compaction never races an ingest of that partition."""
        with partition_writer(self.layout, ref):
            result = compact_partition(self.layout, ref, batch_size)
            with self.hash_index() as index:  # duplicates dropped: the row index is rebuilt from data.parquet
                if index is not None:
                    LocalRowDedup(self.layout, open_row_index(index)).rebuild(ref)
            self.record_version(result, "rebuild")
            return result

    @contextlib.contextmanager
    def hold_partition(self, ref: PartitionRef) -> Iterator[None]:
        """The partition lock a processing run takes, without waiting (:class:`PartitionBusy` when a run holds it
        or a batch of the partition is claimed), held for the block."""
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(exclusive_lock(self.layout.partition_lock(ref), timeout=0))
            except LockTimeout:
                raise PartitionBusy(
                    f"partition {ref.key} is locked by a run processing it or by another delete; retry once done"
                ) from None
            self.refuse_claimed(ref)
            record_write(self.layout, [ref])  # the lock is ours and nothing is changed yet: see changes.py
            yield

    def publish_partition(self, work: LakeLayout, ref: PartitionRef, before: set[str]) -> None:
        """Nothing to publish: a local rebuild happens in the lake itself."""

    def drop_partition(self, ref: PartitionRef) -> None:
        """Remove a partition's folder, then its parent folders left empty (so no listing shows it)."""
        folder = self.layout.partition_dir(ref)
        shutil.rmtree(folder, ignore_errors=True)
        for parent in folder.parents:
            if parent == self.layout.catalog_root:
                break
            with contextlib.suppress(OSError):  # not empty: another partition lives there
                parent.rmdir()

    def forget_assets(self, paths: set[str]) -> int:
        """Remove the hash-index entries naming any of ``paths``; return how many went."""
        with self.hash_index() as index:
            return index.remove_paths(paths) if index is not None else 0

    def partitions(self) -> list[PartitionRef]:
        """Every partition folder under ``catalog/``."""
        return self.layout.list_partitions()

    @contextlib.contextmanager
    def hash_index(self) -> Iterator[HashIndex | None]:
        """The lake's hash index (None when nothing was ingested yet), closed afterwards."""
        index = existing_hash_index(self.layout)
        if index is None:
            yield None
            return
        try:
            yield index
        finally:
            index.close()

    def sound_assets(self, entries: list[IndexEntry]) -> set[str]:
        """The hashes of ``entries`` whose asset file is there with the indexed size (one stat each): an upload
        stages the others again, so a hit on an asset deleted or damaged by hand is stored from its bytes."""
        return {e.sha256 for e in entries if asset_problem(self.layout, e) is None}

    def row_index_problems(self, ref: PartitionRef, view: LakeLayout) -> list[str]:
        """Where the row index disagrees with the partition's part files (``view`` is the lake itself here)."""
        with self.hash_index() as index:
            return [] if index is None else LocalRowDedup(self.layout, open_row_index(index)).problems(ref)

    def fill_view(self, view: LakeLayout, ref: PartitionRef) -> None:
        """Nothing to do: a local lake's view is the lake itself, holding the whole partition."""

    def catalog_uri(self, ref: PartitionRef) -> str:
        return str(self.layout.partition_dir(ref))

    # the DuckDB warehouse ----------------------------------------------------------------------------------
    @property
    def duckdb_file(self) -> Path:
        """``<base>/catalog.duckdb``."""
        return self.layout.duckdb_file

    @property
    def warehouse_lock(self) -> Path:
        return self.layout.warehouse_lock

    def refresh_warehouse(self, db_path: Path | None = None, rebuild: bool = False) -> dict[str, Any]:
        """Build ``catalog.duckdb`` at ``db_path`` (default :attr:`duckdb_file`) and swap it in; see
        :func:`~..catalog.refresh.refresh_duckdb` (the summary it returns, ``CatalogError`` for a bad file).
        ``rebuild``: build from scratch, the old file ignored (``datalake catalog rebuild``)."""
        return refresh_duckdb(self.layout, db_path, rebuild=rebuild)

    # assets ------------------------------------------------------------------------------------------------
    def asset_sha256(self, relpath: str) -> str:
        """SHA-256 of a stored asset; "missing" or "outside the lake" when it cannot be one."""
        try:
            # a path the layout built needs no symlink resolution (a third of a check's time over 3,000 files)
            path = self.layout.asset_path(relpath) if keys.is_asset(relpath) else self.layout.resolve(relpath)
        except ValueError:
            return "outside the lake"
        return sha256_file(path) if path.is_file() else "missing"

    def asset_sizes(self, hashes: list[str]) -> dict[str, int]:
        """Stored sha256 -> size from the lake's hash index (the integrity checks' expected sizes)."""
        return local_sizes(self.layout)(hashes)


def last_change(folder: Path) -> float:
    """When anything in ``folder`` (itself included) last changed, as a Unix time: the latest mtime or ctime of its
    entries (symbolic links not followed). ctime counts because ``cp -p`` and ``rsync -a`` keep old mtimes."""
    st = folder.lstat()
    newest = max(st.st_mtime, st.st_ctime)
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            try:
                st = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            newest = max(newest, st.st_mtime, st.st_ctime)
    return newest

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
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..catalog.parts import CompactionResult, compact_partition
from ..errors import DatalakeError, ValidationError
from ..ingest.asset_store import sha256_file
from ..ingest.hash_index import HashIndex
from ..ingest.manifest import load_manifest
from ..ingest.processing import BatchProcessor, BatchResult, ProcessOptions, fail_batch, process_pending
from ..ingest.verify import local_sizes
from ..storage.backends import LocalStorage
from ..storage.files import read_json, write_json_atomic
from . import batches, queue
from .keys import ERROR_FILE, LOCAL_CLAIM_MARKER
from .layout import LakeLayout, PartitionRef
from .protocol import BaseLake, Claim, Claimed, ClaimOptions, RunState, claim_state
from .queue_view import REFUSED_MARK, QueueEntry, seconds_left, short_reason
from .schema import SchemaConfig, load_schema


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

    def stage(self, batch_dir: Path, job_id: str) -> str:
        """A batch assembled in :meth:`scratch_layout` is already in ``pending/`` (atomic rename): its path."""
        return str(batch_dir)

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
        for batch in pending:
            if not queue.is_quiet(batch, seen, now, options.quiet_seconds):
                waiting += 1
                continue
            ref = self._triage(batch, seen, now, options)
            if ref is None:
                continue
            run_key = queue.run_key_for(batch.job_id, queue.attempt_of(self.layout.pending_batch(batch.job_id)))
            if queue.claim(self.layout, batch.job_id, run_key, ref):
                groups[ref].append(batch.job_id)
        names = {b.job_id for b in pending}
        state["seen"] = {k: v for k, v in seen.items() if k.split(":", 1)[-1] in names}
        return Claimed(dict(groups), waiting)

    def _triage(self, batch: queue.PendingBatch, seen: dict, now: float, options: ClaimOptions) -> PartitionRef | None:
        """A quiet pending batch: ready (its partition), not yet (None), or unusable (moved to failed/, None)."""
        log, job_id = options.log, batch.job_id
        if batch.problem and batch.fatal:
            if self._refuse(job_id, batch.problem):
                log.warning(f"pending batch {job_id} rejected: {batch.problem}")
            return None
        if batch.problem:
            first_seen = seen.setdefault(f"problem:{job_id}", now)
            if now - first_seen < options.grace_seconds:
                log.warning(f"pending batch {job_id} is not usable yet ({batch.problem}); waiting")
                return None
            self._refuse(job_id, f"{batch.problem} (gave up after {options.grace_seconds:.0f} s)")
            return None
        try:
            manifest = load_manifest(self.layout.pending_batch(job_id), job_id).validate(self.schema())
            if options.key_allowed is not None and not options.key_allowed(manifest.partition.key):
                raise ValidationError(f"partition key {manifest.partition.key!r} is not allowed")
        except (DatalakeError, ValueError) as exc:
            if not self.layout.pending_batch(job_id).is_dir():
                return None  # claimed by a concurrent round since the scan
            if self._refuse(job_id, str(exc)):
                log.warning(f"pending batch {job_id} rejected: {exc}")
            return None
        return manifest.partition

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
                problem_since = seen.get(f"problem:{job_id}")
                if batch.fatal:  # refused once quiet
                    left = quiet_left
                elif problem_since is None:  # quiet first, then the grace period
                    left = quiet_left + options.grace_seconds
                else:
                    left = seconds_left(options.grace_seconds, now - problem_since)
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
        return queue.reject_pending(self.layout, job_id, reason) is not None

    def abort(self, job_id: str, error: dict[str, Any]) -> bool:
        """Send a batch still in ``processing/`` to ``failed/`` (its run is going away); False if it is not there."""
        if not self.layout.processing_batch(job_id).is_dir():
            return False
        fail_batch(self.layout, job_id, error)
        return True

    def status(self, job_id: str, run_state: RunState | None = None) -> dict[str, Any] | None:
        return batches.batch_status(self.layout, job_id, _dict_state(run_state))

    def list_batches(self, run_state: RunState | None = None) -> list[dict[str, Any]]:
        return batches.list_batches(self.layout, _dict_state(run_state))

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
    ) -> list[BatchResult]:
        self._processor = BatchProcessor(self.layout, options)  # one hash index and schema for the whole run
        return super().process(job_ids, options, run_info, view or self.layout, log)

    def _process_one(
        self, view: LakeLayout, job_id: str, options: ProcessOptions, run_info: dict[str, Any] | None
    ) -> BatchResult:
        if not self.layout.processing_batch(job_id).is_dir():
            return BatchResult(job_id, status="skipped", error="the batch is no longer in staging/processing")
        return self._processor.process(job_id, run_info)

    def process_pending(self, options: ProcessOptions, quiet_seconds: float = 2.0) -> list[BatchResult]:
        """Claim (rename) and process every pending batch in this process, in staging order; hand drops are
        taken as they are (the caller knows they are complete), invalid batches end in ``failed/``."""
        return process_pending(self.layout, options)

    def rebuild_partition(self, ref: PartitionRef, batch_size: int, view: LakeLayout | None = None) -> CompactionResult:
        """Compact a partition in place: one ``data.parquet``, duplicates dropped (idempotent)."""
        return compact_partition(self.layout, ref, batch_size)

    def partitions(self) -> list[PartitionRef]:
        """Every partition folder under ``catalog/``."""
        return self.layout.list_partitions()

    @contextlib.contextmanager
    def hash_index(self) -> Iterator[HashIndex | None]:
        """The lake's hash index (None when nothing was ingested yet), closed afterwards."""
        if not self.layout.hash_index.exists():
            yield None
            return
        index = HashIndex(self.layout.hash_index)
        try:
            yield index
        finally:
            index.close()

    def catalog_uri(self, ref: PartitionRef) -> str:
        return str(self.layout.partition_dir(ref))

    # assets ------------------------------------------------------------------------------------------------
    def asset_sha256(self, relpath: str) -> str:
        """SHA-256 of a stored asset; "missing" or "outside the lake" when it cannot be one."""
        try:
            path = self.layout.resolve(relpath)
        except ValueError:
            return "outside the lake"
        return sha256_file(path) if path.is_file() else "missing"

    def asset_sizes(self, hashes: list[str]) -> dict[str, int]:
        """Stored sha256 -> size from the lake's hash index (the integrity checks' expected sizes)."""
        return local_sizes(self.layout)(hashes)


def _dict_state(run_state: RunState | None):
    """The core status functions read claim markers as dicts; give them the ``Claim`` view (default
    :func:`claim_state`: queued, or running once a run marked the claim)."""
    state = run_state or claim_state
    return lambda doc: state(Claim.from_json(doc))

"""The ``Lake`` protocol: what the Dagster layer, the runner and the CLI may ask of a lake, whatever its backend.

Two implementations: :class:`~.local.LocalLake` (a folder, claims by atomic rename) and :class:`~.s3.S3Lake`
(``s3://bucket/prefix``, claims by conditional write). :func:`~.open.open_lake` picks one; nothing else asks
where a lake's bytes live. The batch lifecycle is the same on both:

    pending --claim--> claimed (run_key) --mark_running--> running --process--> done | failed
                                     \\--(run died)--> requeue_or_fail: attempt 2 (<job>.attempt2), then failed

Shared behaviour (the claim-and-process loop, run keys of a partition's group, in-process processing) lives
in :class:`BaseLake`; each backend implements the storage-specific steps.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ...settings import load as load_settings
from ..catalog.parts import CompactionResult
from ..ingest.chunks import Chunk, drop_chunks, referenced_files, write_plans
from ..ingest.hash_index import HashIndex, IndexEntry
from ..ingest.processing import BatchResult, ProcessOptions
from ..lifecycle import versions
from .keys import ERROR_FILE, FAILED
from .layout import LakeLayout, PartitionRef
from .locks import PartitionBusy
from .queue import DEFAULT_GRACE_SECONDS, DEFAULT_QUIET_SECONDS, MAX_ATTEMPTS
from .queue_view import QueueEntry, QueueSnapshot, failed_entry
from .schema import SchemaConfig

if TYPE_CHECKING:  # batch_sinks imports boto3 (transfer.py), which a local lake never needs
    from ..ingest.batch_sinks import BatchSink

__all__ = ["DEFAULT_GRACE_SECONDS", "DEFAULT_QUIET_SECONDS", "MAX_ATTEMPTS"]  # re-exported: shared by both lakes

FAILED_LIMIT = 100  # error.json files a queue snapshot reads (the newest names first); the rest are only counted


@dataclass
class Claim:
    """A claimed batch: which run key launches it, for which partition, and (once running) which run holds it.

    ``claimed_ts`` is a Unix time in seconds (0 = "re-issue now": a requeued S3 claim); ``attempt`` counts
    from 1; ``group`` lists every job id of the run when one run takes several batches of a partition.
    """

    job_id: str
    run_key: str | None = None
    partition: str | None = None
    attempt: int = 1
    claimed_ts: float = 0.0
    claimed_at: str | None = None
    run_id: str | None = None
    pid: int | None = None
    host: str | None = None
    started_at: str | None = None
    group: list[str] | None = None

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Claim:
        """A claim from its marker document; unknown keys are ignored, ``job_id`` is required (KeyError)."""
        names = {f.name for f in fields(cls)}
        claim = cls(**{k: v for k, v in doc.items() if k in names})
        claim.claimed_ts = float(claim.claimed_ts or 0.0)
        claim.attempt = int(claim.attempt or 1)
        return claim

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), indent=2).encode()


# Given a claim, the orchestrator's view of it: (state, run_id), state one of queued / running.
RunState = Callable[[Claim], "tuple[str, str | None]"]


def claim_state(claim: Claim) -> tuple[str, str | None]:
    """The :data:`RunState` without an orchestrator: ``running`` once a run marked the claim, else ``queued``."""
    return ("running" if claim.run_id else "queued"), claim.run_id


def claim_doc_state(run_state: RunState | None) -> Callable[[dict[str, Any]], tuple[str, str | None]]:
    """``run_state`` (default :func:`claim_state`) over a claim marker read as a dict (core/lake/batches.py)."""
    state = run_state or claim_state
    return lambda doc: state(Claim.from_json(doc))


# Whether a partition key may become a Dagster partition (the Dagster layer's rule, passed in).
KeyAllowed = Callable[[str], bool]


@dataclass
class ClaimOptions:
    """How ready batches are triaged: seconds a hand drop stays unchanged, seconds an unusable folder waits."""

    quiet_seconds: float = DEFAULT_QUIET_SECONDS
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    key_allowed: KeyAllowed | None = None
    log: Any = field(default_factory=lambda: logging.getLogger("datalake"))


@dataclass
class Claimed:
    """What one claiming round did: the claimed job ids by partition (each in staging order), and how many hand
    drops are still settling (claimed by a later round once unchanged for ``quiet_seconds``)."""

    groups: dict[PartitionRef, list[str]] = field(default_factory=dict)
    waiting: int = 0


@runtime_checkable
class Lake(Protocol):
    """One lake. ``base`` is its path or ``s3://`` URI as shown to users; ``kind`` is ``"local"`` or ``"s3"``."""

    base: str
    kind: str
    storage: Any  # the lake's bytes (core.storage.backends.Storage): LocalStorage or S3Storage

    # config
    def schema(self) -> SchemaConfig: ...
    def edit_schema(self) -> contextlib.AbstractContextManager[SchemaConfig]: ...
    @property
    def schema_uri(self) -> str: ...
    def scratch_layout(self) -> LakeLayout: ...
    def check_job_id_free(self, job_id: str) -> None: ...
    def stage(self, batch_dir: Path, job_id: str) -> str: ...
    def batch_sink(self, job_id: str) -> BatchSink: ...  # a batch written in place (staged from a URL)

    # queue
    def pending(self) -> list[str]: ...
    def claim_ready(self, state: dict[str, Any], options: ClaimOptions) -> Claimed: ...
    def claim(self, job_id: str, run_key: str, partition: PartitionRef, attempt: int = 1) -> bool: ...
    def read_claim(self, job_id: str) -> Claim | None: ...
    def write_claim(self, claim: Claim) -> None: ...
    def claims(self) -> list[Claim]: ...
    def group_run_key(self, job_ids: list[str]) -> str: ...
    def mark_running(self, job_id: str, run_id: str, pid: int) -> None: ...
    def requeue_or_fail(self, job_id: str, reason: str, run_id: str | None) -> str: ...
    def reject(self, job_id: str, reason: str) -> bool: ...
    def abort(self, job_id: str, error: dict[str, Any]) -> bool: ...
    def status(self, job_id: str, run_state: RunState | None = None) -> dict[str, Any] | None: ...
    def list_batches(self, run_state: RunState | None = None) -> list[dict[str, Any]]: ...
    def queue_snapshot(
        self,
        options: ClaimOptions,
        state: dict[str, Any] | None = None,
        run_state: RunState | None = None,
        failed_limit: int = FAILED_LIMIT,
    ) -> QueueSnapshot: ...

    # processing and the catalog
    def work_view(self, name: str) -> contextlib.AbstractContextManager[LakeLayout]: ...
    def partition_view(self, ref: PartitionRef) -> contextlib.AbstractContextManager[LakeLayout]: ...
    def process(
        self,
        job_ids: list[str],
        options: ProcessOptions,
        run_info: dict[str, Any] | None = None,
        view: LakeLayout | None = None,
        log: Any = None,
        chunks: bool = False,
    ) -> list[BatchResult]: ...
    def plan_chunks(self, job_ids: list[str], chunk_files: int) -> list[Chunk]: ...
    def store_chunk(self, chunk: Chunk, options: ProcessOptions) -> dict[str, Any]: ...
    def process_pending(self, options: ProcessOptions, quiet_seconds: float = 2.0) -> list[BatchResult]: ...
    def rebuild_partition(
        self, ref: PartitionRef, batch_size: int, view: LakeLayout | None = None
    ) -> CompactionResult: ...
    def catalog_uri(self, ref: PartitionRef) -> str: ...
    def partitions(self) -> list[PartitionRef]: ...
    def hash_index(self) -> contextlib.AbstractContextManager[HashIndex | None]: ...
    def sound_assets(self, entries: list[IndexEntry]) -> set[str]: ...  # hashes whose asset is there, right size
    def row_index_problems(self, ref: PartitionRef, view: LakeLayout) -> list[str]: ...
    def fill_view(self, view: LakeLayout, ref: PartitionRef) -> None: ...

    # lifecycle (core/lifecycle/): deleting rows and collecting assets
    def hold_partition(self, ref: PartitionRef) -> contextlib.AbstractContextManager[None]: ...
    def publish_partition(self, work: LakeLayout, ref: PartitionRef, before: set[str]) -> None: ...
    def drop_partition(self, ref: PartitionRef) -> None: ...
    def forget_assets(self, paths: set[str]) -> int: ...

    # the DuckDB warehouse: catalog.duckdb, read through a local file on both backends
    @property
    def duckdb_file(self) -> Path: ...
    @property
    def warehouse_lock(self) -> Path: ...
    def refresh_warehouse(self, db_path: Path | None = None, rebuild: bool = False) -> dict[str, Any]: ...

    # assets
    def asset_sha256(self, relpath: str) -> str: ...
    def asset_sizes(self, hashes: list[str]) -> dict[str, int]: ...


class BaseLake:
    """What both backends share; subclasses provide the storage-specific steps named below."""

    kind = ""

    # the storage-specific steps ------------------------------------------------------------------------
    def read_claim(self, job_id: str) -> Claim | None:
        raise NotImplementedError

    def write_claim(self, claim: Claim) -> None:
        raise NotImplementedError

    def claim_ready(self, state: dict[str, Any], options: ClaimOptions) -> Claimed:
        raise NotImplementedError

    def work_view(self, name: str) -> contextlib.AbstractContextManager[LakeLayout]:
        raise NotImplementedError

    def abort(self, job_id: str, error: dict[str, Any]) -> bool:
        raise NotImplementedError

    def _process_one(
        self,
        view: LakeLayout,
        job_id: str,
        options: ProcessOptions,
        run_info: dict[str, Any] | None,
        chunks: bool = False,
    ) -> BatchResult:
        """Process one claimed batch in ``view``; ``chunks``: reuse what its chunk steps recorded."""
        raise NotImplementedError

    def _staged_files(self, job_id: str) -> set[str] | None:
        """The files of a claimed batch, relative to its folder (None: it is gone)."""
        raise NotImplementedError

    def _plan_source(self, job_id: str, files: set[str]) -> contextlib.AbstractContextManager[Path]:
        """A local folder holding a claimed batch's manifest and ``data.parquet`` (``files``: its files)."""
        raise NotImplementedError

    def store_chunk(self, chunk: Chunk, options: ProcessOptions) -> dict[str, Any]:
        raise NotImplementedError

    def claims(self) -> list[Claim]:
        raise NotImplementedError

    def held_batches(self, options: ClaimOptions, state: dict[str, Any], now: float) -> list[QueueEntry]:
        """Pending batches not claimed yet: pending, waiting (for quiet) or incomplete, read-only."""
        raise NotImplementedError

    storage: Any
    base: str
    # error.json documents by base and failed-folder name, kept between snapshots (None: read every time). A
    # failed folder's error.json is written once (a second failure of a job gets a new folder name).
    error_doc_cache: dict[str, dict[str, dict[str, Any]]] | None = None

    # shared ------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def hold_partition(self, ref: PartitionRef) -> Iterator[None]:
        """Refuse (:class:`~.locks.PartitionBusy`) while a batch of ``ref`` is claimed (queued or running); the
        local lake also takes the partition lock for the block. On S3 a claim made after this check is not seen:
        publishing is idempotent, and a run's new part file is never among the files a rewrite replaces."""
        self.refuse_claimed(ref)
        yield

    def refuse_claimed(self, ref: PartitionRef) -> None:
        for claim in self.claims():
            if claim.partition == ref.key and not (claim.run_key or "").endswith(".rejected"):
                state = "running in " + claim.run_id if claim.run_id else "claimed, its run not started yet"
                raise PartitionBusy(f"partition {ref.key} is held by batch {claim.job_id} ({state}); retry once done")

    def group_run_key(self, job_ids: list[str]) -> str:
        """One run per partition per tick: the first batch's claim run key (``+N`` for N more); claims record it."""
        first = self.read_claim(job_ids[0])
        head = (first.run_key if first else None) or job_ids[0]
        run_key = head if len(job_ids) == 1 else f"{head}+{len(job_ids) - 1}"
        if len(job_ids) > 1:
            for job_id in job_ids:
                claim = self.read_claim(job_id)
                if claim is not None:
                    claim.run_key, claim.group = run_key, list(job_ids)
                    self.write_claim(claim)
        return run_key

    def process(
        self,
        job_ids: list[str],
        options: ProcessOptions,
        run_info: dict[str, Any] | None = None,
        view: LakeLayout | None = None,
        log: Any = None,
        chunks: bool = False,
    ) -> list[BatchResult]:
        """Process claimed batches in order (one partition's, in staging order); one result per processed batch.

        ``view`` is the local layout to work in (:meth:`work_view`); a batch no longer claimed is skipped with
        a warning. Whatever escapes (a crash, a cancel) first sends every batch still claimed to failed/.
        ``chunks``: the run's chunk steps stored files (:meth:`store_chunk`); their records are reused, then
        deleted with the batch.
        """
        log = log or logging.getLogger("datalake")
        if view is None:
            with self.work_view((job_ids or ["run"])[0]) as work:
                return self.process(job_ids, options, run_info, work, log, chunks)
        results: list[BatchResult] = []
        try:
            for job_id in job_ids:
                if run_info and run_info.get("run_id"):  # the reaper's view: which run and process hold it
                    self.mark_running(job_id, run_info["run_id"], os.getpid())
                if pause := load_settings().step_pause:  # a test hook: a worker is killed here, holding the batch
                    time.sleep(pause)
                result = self._process_one(view, job_id, options, run_info, chunks)
                if chunks:  # the batch is done or failed (its job record written): its records served
                    drop_chunks(self.storage, job_id)
                self.record_version(result)
                if result.status == "skipped":
                    log.warning(f"batch {job_id}: {result.error}; skipped")
                    continue
                results.append(result)
                say = log.info if result.status == "done" else log.error
                say(
                    f"batch {job_id}: {result.status}, {result.rows_added} rows added, {result.rows_rejected} rejected"
                    + (f": {result.error}" if result.error else "")
                )
        except BaseException as exc:  # no batch of this run stays stranded in a claim
            for job_id in job_ids:
                self.abort(job_id, {**(run_info or {}), "error": f"run aborted: {type(exc).__name__}: {exc}"})
            raise
        return results

    def mark_running(self, job_id: str, run_id: str, pid: int) -> None:
        raise NotImplementedError

    def plan_chunks(self, job_ids: list[str], chunk_files: int) -> list[Chunk]:
        """Plan the chunk steps of a run over ``job_ids`` (claimed batches): the files their rows reference, in
        chunks of ``chunk_files``, plans written to the lake; none when they fit in one (``ingest/chunks.py``)."""
        staged = {job_id: self._staged_files(job_id) or set() for job_id in job_ids}
        if sum(len(files) for files in staged.values()) <= chunk_files:
            return []  # a small run (the usual one) reads no manifest and no data.parquet here
        planned: dict[str, list[tuple[str, str]]] = {}
        for job_id, files in staged.items():
            if not files:
                planned[job_id] = []
                continue
            with self._plan_source(job_id, files) as folder:
                planned[job_id] = referenced_files(folder, files, job_id)
        return write_plans(self.storage, planned, chunk_files)

    def record_version(self, result: BatchResult | CompactionResult, action: str = "ingest") -> None:
        """Record the catalog version a published batch (done) or rebuild made of its partition, and set its
        ``catalog_version``. Versions are history for time travel: failing to write one must not fail the run."""
        if not result.partition or (isinstance(result, BatchResult) and result.status != "done"):
            return
        detail = {"batch_id": result.job_id} if isinstance(result, BatchResult) else {"rows": result.rows}
        try:
            doc = versions.record_version(self.storage, PartitionRef.parse(result.partition), action, detail)
        except (OSError, ValueError) as exc:
            logging.getLogger("datalake").warning(f"catalog version of {result.partition} not recorded: {exc}")
            return
        result.catalog_version = doc["version_id"]

    def queue_snapshot(
        self,
        options: ClaimOptions,
        state: dict[str, Any] | None = None,
        run_state: RunState | None = None,
        failed_limit: int = FAILED_LIMIT,
    ) -> QueueSnapshot:
        """Every batch not done: held in pending (quiet timers from ``state``, the claiming rounds' cursor, when
        given), claimed (queued/running by ``run_state``, default :func:`claim_state`), and in
        ``staging/failed`` (failed, refused or quarantined, reasons from ``error.json``; at most ``failed_limit``
        read). Read-only; see :mod:`.queue_view` for the states."""
        now = time.time()
        entries = self.held_batches(options, state or {}, now)
        for claim in self.claims():
            if (claim.run_key or "").endswith(".rejected"):
                continue  # an S3 refusal in progress: in staging/failed a moment later
            run, run_id = (run_state or claim_state)(claim)
            again = f"attempt {claim.attempt}, " if claim.attempt > 1 else ""
            reason = f"{again}run key {claim.run_key}" if claim.run_key else "claimed, no run key yet"
            since = claim.started_at or claim.claimed_at or ""
            entries.append(QueueEntry(claim.job_id, run, claim.partition, reason, None, run_id, since, ""))
        names = sorted(self.storage.list_dirs(FAILED), reverse=True)
        cache = self.error_doc_cache.setdefault(self.base, {}) if self.error_doc_cache is not None else {}
        for gone in set(cache) - set(names):
            del cache[gone]
        unread = [n for n in names[:failed_limit] if n not in cache]
        with ThreadPoolExecutor(max_workers=8) as pool:
            fresh = dict(zip(unread, pool.map(self._error_doc, unread)))
        cache.update((n, doc) for n, doc in fresh.items() if doc)  # not one still being written (S3: copy first)
        docs = {**fresh, **cache}
        entries += [failed_entry(n, docs[n], f"{self.base}/{FAILED}/{n}") for n in names[:failed_limit]]
        return QueueSnapshot(entries, max(0, len(names) - failed_limit), now)

    def _error_doc(self, name: str) -> dict[str, Any]:
        try:
            doc = json.loads(self.storage.read_bytes(f"{FAILED}/{name}/{ERROR_FILE}"))
        except (FileNotFoundError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

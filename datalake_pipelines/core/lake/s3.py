"""A lake under ``s3://bucket/prefix``: staging, claiming and processing without rename.

Design (S3 has no rename and no POSIX locks):

* **Atomic staging**: a batch is uploaded to ``staging/pending/<job>/`` file by file and its
  ``_metadata.json`` goes last; a prefix without a manifest is incomplete and never claimed (a hand drop
  without a readable one waits ``grace_seconds`` after its last change, then fails: :mod:`.triage`).
* **Exactly-once claiming**: ``staging/processing/<job>/_claim.json`` is created with a conditional
  write (``If-None-Match: *``); only the creator launches a run, whose Dagster ``run_key`` is the job id,
  so a retried tick re-issues the same key and Dagster drops the duplicate. The batch's objects stay in
  ``pending/`` while it is processed (no copy); the claim marker is what "processing" means on S3.
* **Processing** runs the local engine (:class:`BatchProcessor`) in a per-run working folder holding
  the batch, the partition's catalog files and a per-run hash index, then publishes in an order where
  every step is idempotent: new assets, the catalog part, ``_metadata.json``, the hash-index segment,
  the staging clean-up, and finally the job record. A run that dies anywhere can simply run again.
* **Hash index**: append-only Parquet segments ``index/segments/<job>.parquet`` written after their
  assets are uploaded, merged into a local SQLite cache (:func:`cache_dir_for`, keyed by endpoint, bucket
  and prefix) before each run, so a lookup is still a B-tree probe. The cache is validated against the
  bucket's segments first (:mod:`.s3_index`): entries of a segment the bucket no longer has are dropped.
* One run per partition at a time comes from Dagster's tag concurrency limit, not from a lock file.
* Each claiming round lists ``staging/pending`` and the claims in ``staging/processing`` once and reads the
  manifest of every batch not claimed yet; seeing a batch twice is harmless because claiming is a conditional
  create that only one caller wins.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ..errors import DatalakeError, ValidationError
from ..ingest.batch_sinks import S3BatchSink
from ..ingest.manifest import BatchManifest, load_manifest
from ..storage.backends import S3Storage, cache_dir_for, upload_tree
from ..storage.files import utc_now_iso
from ..storage.pool import s3_map
from . import batches, keys
from .batches import key_present
from .keys import ERROR_FILE
from .layout import LakeLayout, PartitionRef
from .protocol import MAX_ATTEMPTS, BaseLake, Claim, Claimed, ClaimOptions, RunState, claim_doc_state
from .queue_view import REFUSED_MARK, QueueEntry, seconds_left, short_reason
from .s3_chunks import S3Chunks
from .s3_work import S3Processing
from .schema import SchemaConfig, load_schema
from .triage import readable_json, unusable_reason


class S3Lake(S3Chunks, S3Processing, BaseLake):
    """Operations on an S3 lake; local work happens under :func:`cache_dir_for` (``$DATALAKE_CACHE_DIR``)."""

    kind = "s3"
    error_doc_cache: dict[str, dict[str, dict[str, Any]]] | None = {}  # a GET per failed batch, once per process

    def __init__(self, base: str, storage: S3Storage | None = None):
        self.storage = storage or S3Storage(base)
        self.base = self.storage.uri
        self.cache = cache_dir_for(self.base, self.storage.client.meta.endpoint_url)
        self._sizes_cache = None

    # config ------------------------------------------------------------------------------------------------
    def scratch_layout(self) -> LakeLayout:
        """A local lake for assembling batches, holding a fresh copy of the S3 lake's ``config/schema.yaml``."""
        layout = LakeLayout(self.cache / "scratch")
        try:
            layout.schema_file.write_bytes(self.storage.read_bytes(keys.SCHEMA))
        except FileNotFoundError:
            layout.schema_file.unlink(missing_ok=True)  # the packaged default applies
        return layout

    def schema(self) -> SchemaConfig:
        """``config/schema.yaml`` of the lake (the packaged default when the lake has none)."""
        with tempfile.TemporaryDirectory(dir=self.cache if self.cache.is_dir() else None) as tmp:
            layout = LakeLayout(tmp, create=False)
            with contextlib.suppress(FileNotFoundError):
                data = self.storage.read_bytes(keys.SCHEMA)
                layout.config_dir.mkdir(parents=True)
                layout.schema_file.write_bytes(data)
            return load_schema(layout)

    @contextlib.contextmanager
    def edit_schema(self) -> Iterator[SchemaConfig]:
        """A local copy of the schema; saved back to the lake when the block ends without an exception."""
        layout = self.scratch_layout()
        schema = load_schema(layout)  # loaded from layout.schema_file
        yield schema
        schema.save(layout.schema_file)
        self.put_schema(layout.schema_file)

    @property
    def schema_uri(self) -> str:
        return self.uri_of(keys.SCHEMA)

    def put_schema(self, local_schema: Path) -> None:
        self.storage.upload(local_schema, keys.SCHEMA)

    # staging -----------------------------------------------------------------------------------------------
    def check_job_id_free(self, job_id: str) -> None:
        """ValidationError when the lake holds ``job_id`` anywhere (:func:`.batches.check_job_id_free`)."""
        batches.check_job_id_free(self.storage, job_id)

    def stage(self, batch_dir: Path, job_id: str) -> str:
        """Move a batch assembled in :meth:`scratch_layout` into ``staging/pending/<job>/``: upload it, manifest
        last, then remove the local folder (also on failure); return its URI. ValidationError for a used job id
        (the rule of both backends; checked again here, as the upload may have taken a while)."""
        try:
            batches.check_job_id_free(self.storage, job_id)
            upload_tree(self.storage, batch_dir, keys.pending_batch(job_id), last=keys.BATCH_MANIFEST)
        finally:
            shutil.rmtree(batch_dir, ignore_errors=True)
        return self.uri_of(keys.pending_batch(job_id))

    def batch_sink(self, job_id: str) -> S3BatchSink:
        """Where a batch is written piece by piece: objects in ``staging/pending/<job>/``, manifest last."""
        return S3BatchSink(self, job_id)

    def read_manifest(self, job_id: str) -> BatchManifest:
        """The pending batch's manifest (FileNotFoundError without one, ValidationError when unusable)."""
        return self._load_manifest(job_id, self.storage.read_bytes(keys.pending_manifest(job_id)))

    def _load_manifest(self, job_id: str, data: bytes) -> BatchManifest:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / keys.BATCH_MANIFEST).write_bytes(data)
            try:
                return load_manifest(Path(tmp), job_id)
            except ValidationError as exc:  # name the object, not the temporary copy
                raise ValidationError(str(exc).replace(tmp, self.uri_of(keys.pending_batch(job_id)))) from None

    def newest_change(self, job_id: str) -> datetime:
        """Latest ``LastModified`` among a pending batch's objects (see :func:`_upper_bound`)."""
        return max(_upper_bound(o.modified) for o in self.storage.list(keys.pending_batch(job_id)))

    def pending_batches(self) -> dict[str, PendingObjects]:
        """Every batch in ``staging/pending`` that is not claimed, from one listing, in staging order (manifest
        time, else last change; then job id): with or without a manifest, like a local ``pending/`` folder."""
        found: dict[str, PendingObjects] = {}
        for obj in self.storage.list(keys.PENDING):
            job_id, sep, name = obj.key[len(keys.PENDING) + 1 :].partition("/")
            if not sep or job_id.startswith("."):
                continue
            drop = found.setdefault(job_id, PendingObjects(job_id, None, _upper_bound(obj.modified)))
            drop.changed = max(drop.changed, _upper_bound(obj.modified))
            if name == keys.BATCH_MANIFEST:
                drop.manifest = obj.modified
        claimed = set(self.storage.list_dirs(keys.PROCESSING)) if found else set()
        drops = [d for d in found.values() if d.job_id not in claimed]
        return {d.job_id: d for d in sorted(drops, key=lambda d: (d.manifest or d.changed, d.job_id))}

    def pending(self) -> list[str]:
        """Job ids of the unclaimed batches in ``staging/pending`` (complete or not), in staging order."""
        return list(self.pending_batches())

    def claim_ready(self, state: dict[str, Any], options: ClaimOptions) -> Claimed:
        """Claim every complete, valid pending batch that is not claimed yet; ``state`` is not needed (kept for
        the protocol: each round lists ``staging/pending`` and ``staging/processing`` once).

        Invalid batches go to failed/; hand drops wait until all their objects are ``quiet_seconds`` old; a batch
        without a readable manifest waits ``grace_seconds`` after its last change (core/lake/triage.py).
        """
        state.pop("since", None)  # the cursor of older versions
        groups: dict[PartitionRef, list[str]] = defaultdict(list)
        staged_at: dict[str, str] = {}
        schema, n_waiting = None, 0
        now = datetime.now(timezone.utc)
        quiet = options.quiet_seconds > 0  # 0: the caller knows the hand drops are complete (as on a local lake)
        for job_id, drop in self.pending_batches().items():
            idle = (now - drop.changed).total_seconds()
            try:
                manifest, problem, final = self._triage_manifest(job_id, drop)
            except FileNotFoundError:
                continue  # processed since the listing
            if manifest is None:
                if quiet and idle < options.quiet_seconds:  # still being written: no warning yet
                    n_waiting += 1
                    continue
                if not final and idle >= options.grace_seconds:
                    idle = self._idle_with_uploads(job_id, idle, now)
                reason = unusable_reason(job_id, str(problem), final, idle, options.grace_seconds, options.log)
                if reason is not None:
                    self._reject_logged(job_id, reason, options.log)
                continue
            if (  # `aws s3 sync` sends the manifest early
                manifest.hand_drop
                and quiet
                and (idle < options.quiet_seconds or self._idle_with_uploads(job_id, idle, now) < options.quiet_seconds)
            ):
                n_waiting += 1
                continue
            try:
                schema = schema or self.schema()
                manifest.validate(schema)
                if options.key_allowed is not None and not options.key_allowed(manifest.partition.key):
                    raise ValidationError(f"partition key {manifest.partition.key!r} is not allowed")
                reused = batches.done_job_reused(self.storage, job_id)
                if reused:
                    raise ValidationError(reused)
            except (DatalakeError, ValueError) as exc:
                self._reject_logged(job_id, str(exc), options.log)
                continue
            if self.claim(job_id, job_id, manifest.partition):
                groups[manifest.partition].append(job_id)
                # staging order as on a local lake: created_at, or for a hand drop when its manifest arrived
                staged_at[job_id] = (
                    (drop.manifest or drop.changed).isoformat(timespec="microseconds")
                    if manifest.hand_drop
                    else str(manifest.created_at)
                )
        for job_ids in groups.values():  # staging order: a partition's first batch is the first one staged
            job_ids.sort(key=lambda j: (staged_at[j], j))
        # partitions in the staging order of their first batch, as on a local lake (LastModified has whole
        # seconds, so the listing order would put batches staged in one second in key order)
        ordered = dict(sorted(groups.items(), key=lambda kv: (staged_at[kv[1][0]], kv[1][0])))
        return Claimed(ordered, n_waiting)

    def _triage_manifest(self, job_id: str, drop: PendingObjects) -> tuple[BatchManifest | None, str | None, bool]:
        """(manifest, None, False) for a usable manifest, else (None, problem, final): ``final`` for a manifest
        that is valid JSON (waiting will not fix it). FileNotFoundError when the batch went meanwhile."""
        manifest_key = keys.pending_manifest(job_id)
        if drop.manifest is None:
            if not key_present(self.storage, keys.pending_batch(job_id)):
                raise FileNotFoundError(self.uri_of(keys.pending_batch(job_id)))
            return None, f"{self.uri_of(manifest_key)}: the batch has no {keys.BATCH_MANIFEST}", False
        data = self.storage.read_bytes(manifest_key)
        try:
            return self._load_manifest(job_id, data), None, False
        except ValidationError as exc:
            return None, str(exc), readable_json(data)

    def _idle_with_uploads(self, job_id: str, idle: float, now: datetime) -> float:
        """``idle`` (seconds since the batch's listed objects changed) shortened by a multipart upload into the
        batch still under way: its object is listed only once complete, so the batch would look idle meanwhile."""
        activity = self.storage.upload_activity(keys.pending_batch(job_id))
        return idle if activity is None else min(idle, (now - _upper_bound(activity)).total_seconds())

    def held_batches(self, options: ClaimOptions, state: dict[str, Any], now: float) -> list[QueueEntry]:
        """Batches in ``staging/pending`` without a claim: pending, a hand drop waiting until all its objects are
        ``quiet_seconds`` old, or incomplete (no readable manifest yet: it waits ``grace_seconds`` after its last
        change, core/lake/triage.py). One listing (:meth:`pending_batches`)."""
        entries = []
        for job_id, drop in self.pending_batches().items():
            since, path = drop.changed.isoformat(), self.uri_of(keys.pending_batch(job_id))
            idle = now - drop.changed.timestamp()
            if drop.manifest is None:
                reason = "no _metadata.json yet (uploaded last: the batch is complete once it is there)"
                left = seconds_left(options.grace_seconds, idle)
                entries.append(QueueEntry(job_id, "incomplete", None, reason, left, None, since, path))
                continue
            try:
                manifest = self.read_manifest(job_id)
            except FileNotFoundError:
                continue  # claimed and processed since the listing
            except (DatalakeError, ValueError) as exc:  # refused at the next claiming round
                entries.append(QueueEntry(job_id, "incomplete", None, short_reason(str(exc)), 0.0, None, since, path))
                continue
            left = seconds_left(options.quiet_seconds, idle) if manifest.hand_drop else 0.0
            state_, reason = ("waiting", f"hand drop, claimed once its objects are {options.quiet_seconds:.0f} s old")
            if not left:
                state_, reason = "pending", ""
            key = manifest.partition.key
            entries.append(QueueEntry(job_id, state_, key, reason, left or None, None, since, path))
        return entries

    def _reject_logged(self, job_id: str, reason: str, log) -> None:
        if self.reject(job_id, reason):
            log.warning(f"pending batch {job_id} rejected: {reason}")

    # claims ------------------------------------------------------------------------------------------------
    @staticmethod
    def _claim_key(job_id: str) -> str:
        return keys.claim_marker(job_id, local=False)

    def claim(self, job_id: str, run_key: str, partition: PartitionRef, attempt: int = 1) -> bool:
        """Create the claim marker if nobody has; True only for the caller that created it."""
        marker = Claim(job_id, run_key, partition.key, attempt, time.time(), utc_now_iso())
        return self.storage.create_exclusive(self._claim_key(job_id), marker.to_bytes())

    def reject(self, job_id: str, reason: str) -> bool:
        """Send an unusable pending batch to failed/ (claiming it first, so only one caller does)."""
        marker = Claim(job_id, f"{job_id}.rejected", "", 1, time.time())
        if not self.storage.create_exclusive(self._claim_key(job_id), marker.to_bytes()):
            return False
        self.fail(job_id, {"error": reason, REFUSED_MARK: True})
        return True

    def read_claim(self, job_id: str) -> Claim | None:
        try:
            doc = json.loads(self.storage.read_bytes(self._claim_key(job_id)))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return Claim.from_json(doc)

    def write_claim(self, claim: Claim) -> None:
        self.storage.write_bytes(self._claim_key(claim.job_id), claim.to_bytes())

    def claims(self) -> list[Claim]:
        return [c for job in self.storage.list_dirs(keys.PROCESSING) if (c := self.read_claim(job))]

    def mark_running(self, job_id: str, run_id: str, pid: int) -> None:
        """Record in the claim which run (and process) works on the batch, for the reaper."""
        import os

        marker = self.read_claim(job_id)
        if marker is not None:
            marker.run_id, marker.pid, marker.host, marker.started_at = run_id, pid, os.uname().nodename, utc_now_iso()
            self.write_claim(marker)

    def requeue_or_fail(self, job_id: str, reason: str, run_id: str | None) -> str:
        """After the run holding a batch died: a new claim with the next attempt's run key, or failed/."""
        marker = self.read_claim(job_id)
        attempt = marker.attempt if marker else MAX_ATTEMPTS
        if marker and attempt < MAX_ATTEMPTS and self.storage.exists(keys.pending_manifest(job_id)):
            self.write_claim(Claim(job_id, f"{job_id}.attempt{attempt + 1}", marker.partition, attempt + 1, 0.0))
            return "requeued"
        self.fail(job_id, {"error": reason, "run_id": run_id, "attempts": attempt})
        return "failed"

    def abort(self, job_id: str, error: dict[str, Any]) -> bool:
        """Send a batch still claimed to failed/ (its run is going away); False if it is not claimed."""
        if self.read_claim(job_id) is None:
            return False
        self.fail(job_id, error)
        return True

    def fail(self, job_id: str, error: dict[str, Any]) -> str:
        """Copy the batch (server side) to ``staging/failed/<job>/`` with ``error.json``; drop it from pending."""
        target = keys.failed_batch(job_id)
        if self.storage.exists(f"{target}/{ERROR_FILE}"):
            target = f"{target}-{int(time.time())}"
        source = keys.pending_batch(job_id)
        objects = [o.key for o in self.storage.list(source)]
        s3_map(lambda k: self.storage.copy(k, target + k[len(source) :]), objects)
        doc = {"job_id": job_id, **error, "failed_at": utc_now_iso()}
        self.storage.write_bytes(f"{target}/{ERROR_FILE}", json.dumps(doc, indent=2, default=str).encode())
        self._drop_pending(job_id, objects)
        return self.uri_of(target)

    def _drop_pending(self, job_id: str, objects: list[str] | None = None) -> None:
        """Delete a batch from pending (manifest first, so it never looks complete) and its claim."""
        manifest = keys.pending_manifest(job_id)
        objects = objects if objects is not None else [o.key for o in self.storage.list(keys.pending_batch(job_id))]
        self.storage.delete([manifest])
        self.storage.delete([k for k in objects if k != manifest])
        self.storage.delete([self._claim_key(job_id)])

    # status ------------------------------------------------------------------------------------------------
    def status(self, job_id: str, run_state: RunState | None = None) -> dict[str, Any] | None:
        """Where a batch is, in the record shape of :func:`.batches.batch_entry`; None for an unknown job id."""
        return batches.BatchReader(self.storage, local=False).status(job_id, claim_doc_state(run_state))

    def list_batches(self, run_state: RunState | None = None) -> list[dict[str, Any]]:
        """Every batch of the lake (pending, claimed, with a job record, or failed), one entry per job id."""
        return batches.BatchReader(self.storage, local=False).list_all(claim_doc_state(run_state))

    def uri_of(self, key: str) -> str:
        return f"{self.base}/{key}"


@dataclass
class PendingObjects:
    """A batch in ``staging/pending`` as one listing shows it: when its manifest was written (None: no manifest)
    and when any of its objects last changed (:func:`_upper_bound`)."""

    job_id: str
    manifest: datetime | None
    changed: datetime


def _upper_bound(modified: datetime) -> datetime:
    """A ``LastModified`` as the latest moment it may stand for: S3 lists it truncated to the second (AWS and
    moto send ``.000``), so a whole-second value counts from the end of its second, never making a batch look
    older than it is."""
    return modified + timedelta(seconds=1) if modified.microsecond == 0 else modified

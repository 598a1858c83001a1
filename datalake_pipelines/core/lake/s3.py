"""A lake under ``s3://bucket/prefix``: staging, claiming and processing without rename.

Design (S3 has no rename and no POSIX locks):

* **Atomic staging**: a batch is uploaded to ``staging/pending/<job>/`` file by file and its
  ``_metadata.json`` goes last; a prefix without a manifest is incomplete and never claimed.
* **Exactly-once claiming**: ``staging/processing/<job>/_claim.json`` is created with a conditional
  write (``If-None-Match: *``); only the creator launches a run, whose Dagster ``run_key`` is the job id,
  so a retried tick re-issues the same key and Dagster drops the duplicate. The batch's objects stay in
  ``pending/`` while it is processed (no copy); the claim marker is what "processing" means on S3.
* **Processing** runs the local engine (:class:`BatchProcessor`) in a per-run working folder holding
  the batch, the partition's catalog files and a per-run hash index, then publishes in an order where
  every step is idempotent: new assets, the catalog part, ``_metadata.json``, the hash-index segment,
  the job record, and finally the staging clean-up. A run that dies anywhere can simply run again.
* **Hash index**: append-only Parquet segments ``index/segments/<job>.parquet`` written after their
  assets are uploaded, merged into a local SQLite cache (:func:`cache_dir_for`, keyed by endpoint, bucket
  and prefix) before each run, so a lookup is still a B-tree probe. The cache is validated against the
  bucket's segments first (:mod:`.s3_index`): entries of a segment the bucket no longer has are dropped.
* One run per partition at a time comes from Dagster's tag concurrency limit, not from a lock file.
* New batches are found by listing manifests changed after a ``since`` cursor kept by the caller (a sensor
  cursor), looking back ``OVERLAP_SECONDS`` because ``LastModified`` has one-second resolution; seeing a
  manifest twice is harmless because claiming is a conditional create that only one caller wins.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ..errors import DatalakeError, ValidationError
from ..ingest.manifest import BatchManifest, load_manifest
from ..storage.backends import S3Storage, cache_dir_for, upload_tree
from ..storage.files import utc_now_iso
from . import keys
from .keys import ERROR_FILE
from .layout import LakeLayout, PartitionRef
from .protocol import MAX_ATTEMPTS, BaseLake, Claim, Claimed, ClaimOptions, RunState, claim_state
from .queue_view import REFUSED_MARK, QueueEntry, seconds_left, short_reason
from .s3_work import S3Processing
from .schema import SchemaConfig, load_schema

OVERLAP_SECONDS = 5  # look-back of the since cursor: LastModified has one-second resolution


class S3Lake(S3Processing, BaseLake):
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
    def stage(self, batch_dir: Path, job_id: str) -> str:
        """Move a batch assembled in :meth:`scratch_layout` into ``staging/pending/<job>/``: upload it, manifest
        last, then remove the local folder (also on failure); return its URI. ValidationError for a used job id."""
        try:
            if self.storage.exists(keys.pending_manifest(job_id)) or self.storage.exists(self._claim_key(job_id)):
                raise ValidationError(f"job id {job_id!r} is already used in {self.base}/staging")
            upload_tree(self.storage, batch_dir, keys.pending_batch(job_id), last=keys.BATCH_MANIFEST)
        finally:
            shutil.rmtree(batch_dir, ignore_errors=True)
        return self.uri_of(keys.pending_batch(job_id))

    def read_manifest(self, job_id: str) -> BatchManifest:
        data = self.storage.read_bytes(keys.pending_manifest(job_id))
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / keys.BATCH_MANIFEST).write_bytes(data)
            try:
                return load_manifest(Path(tmp), job_id)
            except ValidationError as exc:  # name the object, not the temporary copy
                raise ValidationError(str(exc).replace(tmp, self.uri_of(keys.pending_batch(job_id)))) from None

    def newest_change(self, job_id: str) -> datetime:
        """Latest ``LastModified`` among a pending batch's objects (hand drops are claimed once it is old)."""
        return max(o.modified for o in self.storage.list(keys.pending_batch(job_id)))

    def pending(self) -> list[str]:
        """Job ids with a complete batch (manifest present) in ``staging/pending``, by manifest time."""
        return [job_id for job_id, _ in self.new_manifests(None)]

    def new_manifests(self, since: datetime | None) -> list[tuple[str, datetime]]:
        """(job id, LastModified) of pending manifests changed after ``since`` minus the look-back, oldest first."""
        after = since - timedelta(seconds=OVERLAP_SECONDS) if since else None
        found = []
        for obj in self.storage.list(keys.PENDING):
            job_id = keys.job_of_manifest_key(obj.key)
            if job_id and (after is None or obj.modified > after):
                found.append((job_id, obj.modified))
        return sorted(found, key=lambda f: f[1])

    def claim_ready(self, state: dict[str, Any], options: ClaimOptions) -> Claimed:
        """Claim each complete batch whose manifest changed since ``state["since"]``; advance that cursor.

        Invalid batches go to failed/; hand drops wait until all their objects are ``quiet_seconds`` old, and
        the cursor never passes a batch still waiting.
        """
        since = datetime.fromisoformat(state["since"]) if state.get("since") else None
        groups: dict[PartitionRef, list[str]] = defaultdict(list)
        staged_at: dict[str, str] = {}
        schema, cursor, waiting, n_waiting = None, since, None, 0
        now = datetime.now(timezone.utc)
        for job_id, modified in self.new_manifests(since):
            try:
                manifest = self.read_manifest(job_id)
            except FileNotFoundError:
                continue  # processed since the listing
            except (DatalakeError, ValueError) as exc:
                self._reject_logged(job_id, str(exc), options.log)
                continue
            if manifest.hand_drop and (now - self.newest_change(job_id)).total_seconds() < options.quiet_seconds:
                waiting = min(waiting, modified) if waiting else modified  # `aws s3 sync` sends the manifest early
                n_waiting += 1
                continue
            cursor = max(cursor, modified) if cursor else modified
            try:
                schema = schema or self.schema()
                manifest.validate(schema)
                if options.key_allowed is not None and not options.key_allowed(manifest.partition.key):
                    raise ValidationError(f"partition key {manifest.partition.key!r} is not allowed")
            except (DatalakeError, ValueError) as exc:
                self._reject_logged(job_id, str(exc), options.log)
                continue
            if self.claim(job_id, job_id, manifest.partition):
                groups[manifest.partition].append(job_id)
                staged_at[job_id] = str(manifest.created_at)
        for job_ids in groups.values():  # staging order: a partition's first batch is the first one staged
            job_ids.sort(key=lambda j: (staged_at[j], j))
        if waiting is not None:
            cursor = min(cursor, waiting) if cursor else waiting
        if cursor:
            state["since"] = cursor.isoformat()
        return Claimed(dict(groups), n_waiting)

    def held_batches(self, options: ClaimOptions, state: dict[str, Any], now: float) -> list[QueueEntry]:
        """Batches in ``staging/pending`` without a claim: pending, a hand drop waiting until all its objects are
        ``quiet_seconds`` old, or incomplete (no manifest uploaded yet, or one that cannot be read)."""
        claimed = set(self.storage.list_dirs(keys.PROCESSING))
        newest: dict[str, datetime] = {}
        manifests = set()
        for obj in self.storage.list(keys.PENDING):
            job_id = obj.key[len(keys.PENDING) + 1 :].split("/", 1)[0]
            newest[job_id] = max(newest.get(job_id, obj.modified), obj.modified)
            if keys.job_of_manifest_key(obj.key):
                manifests.add(job_id)
        entries = []
        for job_id in sorted(set(newest) - claimed):
            since, path = newest[job_id].isoformat(), self.uri_of(keys.pending_batch(job_id))
            if job_id not in manifests:
                reason = "no _metadata.json yet (uploaded last: the batch is complete once it is there)"
                entries.append(QueueEntry(job_id, "incomplete", None, reason, None, None, since, path))
                continue
            try:
                manifest = self.read_manifest(job_id)
            except FileNotFoundError:
                continue  # claimed and processed since the listing
            except (DatalakeError, ValueError) as exc:  # refused at the next claiming round
                entries.append(QueueEntry(job_id, "incomplete", None, short_reason(str(exc)), 0.0, None, since, path))
                continue
            age = now - newest[job_id].timestamp()
            left = seconds_left(options.quiet_seconds, age) if manifest.hand_drop else 0.0
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
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda k: self.storage.copy(k, target + k[len(source) :]), objects))
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
        """pending / queued / running / done / failed for one batch, from staging objects and the job record."""
        entry: dict[str, Any] = {"job_id": job_id}
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            record = json.loads(self.storage.read_bytes(keys.job_record(job_id)))
            entry.update(
                {k: record.get(k) for k in ("partition", "rows_in", "rows_added", "rows_duplicate", "rows_rejected")}
            )
            entry.update(rows=record.get("rows_in"), state=record.get("status"), error=record.get("error"))
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            error = json.loads(self.storage.read_bytes(f"{keys.failed_batch(job_id)}/{ERROR_FILE}"))
            entry.update(state="failed", error=error.get("error"), path=self.uri_of(keys.failed_batch(job_id)))
        marker = self.read_claim(job_id)
        if marker is not None and entry.get("state") not in ("done", "failed"):
            state, run_id = (run_state or claim_state)(marker)
            entry.update(state=state, partition=marker.partition, run_id=run_id or marker.run_id)
        elif "state" not in entry and self.storage.exists(keys.pending_manifest(job_id)):
            entry.update(state="pending", path=self.uri_of(keys.pending_batch(job_id)))
        return entry if "state" in entry else None

    def list_batches(self, run_state: RunState | None = None) -> list[dict[str, Any]]:
        """Every batch of the lake (pending, claimed, with a job record, or failed), one entry per job id."""
        records = [o.key.rsplit("/", 1)[-1][: -len(".json")] for o in self.storage.list(keys.JOBS)]
        names = {
            *self.storage.list_dirs(keys.PENDING),
            *self.storage.list_dirs(keys.PROCESSING),
            *self.storage.list_dirs(keys.FAILED),
            *(r for r in records if r),
        }
        entries = [e for job_id in sorted(names) if (e := self.status(job_id, run_state)) is not None]
        order = {"pending": 0, "queued": 1, "processing": 1, "running": 1, "done": 2, "failed": 3}
        return sorted(entries, key=lambda e: (order.get(e["state"], 9), e["job_id"]))

    def uri_of(self, key: str) -> str:
        return f"{self.base}/{key}"

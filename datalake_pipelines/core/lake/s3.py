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
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..catalog.parts import CompactionResult, compact_partition
from ..errors import DatalakeError, ValidationError
from ..ingest.hash_index import HashIndex, IndexEntry
from ..ingest.manifest import BatchManifest, load_manifest
from ..ingest.processing import BatchProcessor, BatchResult, ProcessOptions
from ..ingest.s3_index import SegmentCache
from ..storage.backends import S3Storage, cache_dir_for, download_tree, upload_tree
from ..storage.files import utc_now_iso
from .layout import BATCH_MANIFEST, ERROR_FILE, PARTITION_METADATA, LakeLayout, PartitionRef
from .schema import SchemaConfig, load_schema

CLAIM_MARKER = "_claim.json"
SCHEMA_KEY = "config/schema.yaml"
MAX_ATTEMPTS = 2


def pending_prefix(job_id: str) -> str:
    return f"staging/pending/{job_id}"


def claim_key(job_id: str) -> str:
    return f"staging/processing/{job_id}/{CLAIM_MARKER}"


def failed_prefix(job_id: str) -> str:
    return f"staging/failed/{job_id}"


def partition_prefix(ref: PartitionRef) -> str:
    return f"catalog/provider={ref.provider}/dataset={ref.dataset}/task={ref.task}/variant={ref.variant}"


def job_of_manifest_key(key: str) -> str | None:
    """``staging/pending/<job>/_metadata.json`` -> ``<job>`` (None for anything else)."""
    parts = key.split("/")
    if len(parts) == 4 and parts[:2] == ["staging", "pending"] and parts[3] == BATCH_MANIFEST:
        return parts[2]
    return None


class TieredHashIndex(HashIndex):
    """A per-run index (new entries) in front of the shared, published cache (read-only here).

    ``present(paths)`` (the S3 lake's HEADs: ``path -> size``, or a set of paths) confirms a published hit's
    object still exists with the indexed size; a hit whose object is gone or has another size counts as
    unknown, so the run stores the content again instead of cataloguing a row that
    points at nothing.
    """

    def __init__(
        self,
        path: Path,
        published: HashIndex,
        present: Callable[[list[str]], set[str] | dict[str, int]] | None = None,
    ):
        super().__init__(path)
        self.published = published
        self.present = present

    def get(self, sha256: str) -> IndexEntry | None:
        return self.get_many([sha256]).get(sha256)

    def get_many(self, hashes: list[str]) -> dict[str, IndexEntry]:
        found = super().get_many(hashes)
        missing = [h for h in hashes if h not in found]
        hits = self.published.get_many(missing) if missing else {}
        if hits and self.present is not None:
            there = self.present(sorted({e.path for e in hits.values()}))
            sizes = there if isinstance(there, dict) else {}  # a wrong size is as broken as a missing object
            hits = {h: e for h, e in hits.items() if e.path in there and sizes.get(e.path, e.size) == e.size}
        return {**hits, **found}

    def new_entries(self) -> list[IndexEntry]:
        return [IndexEntry(*row) for rows in self.iter_rows() for row in rows]


@dataclass
class S3Claim:
    job_id: str
    run_key: str
    partition: str
    attempt: int = 1
    claimed_ts: float = 0.0
    run_id: str | None = None
    pid: int | None = None
    host: str | None = None
    group: list[str] | None = None

    def to_bytes(self) -> bytes:
        return json.dumps(self.__dict__, indent=2).encode()


class S3Lake:
    """Operations on an S3 lake; local work happens under :func:`cache_dir_for` (``$DATALAKE_CACHE_DIR``)."""

    def __init__(self, base: str, storage: S3Storage | None = None):
        self.storage = storage or S3Storage(base)
        self.base = self.storage.uri
        self.cache = cache_dir_for(self.base, self.storage.client.meta.endpoint_url)
        self._sizes_cache: SegmentCache | None = None

    # config ------------------------------------------------------------------------
    def scratch_layout(self) -> LakeLayout:
        """A local lake for assembling batches, holding a fresh copy of the S3 lake's ``config/schema.yaml``."""
        layout = LakeLayout(self.cache / "scratch")
        try:
            layout.schema_file.write_bytes(self.storage.read_bytes(SCHEMA_KEY))
        except FileNotFoundError:
            layout.schema_file.unlink(missing_ok=True)  # the packaged default applies
        return layout

    def schema(self) -> SchemaConfig:
        """``config/schema.yaml`` of the lake (the packaged default when the lake has none)."""
        with tempfile.TemporaryDirectory(dir=self.cache if self.cache.is_dir() else None) as tmp:
            layout = LakeLayout(tmp, create=False)
            with contextlib.suppress(FileNotFoundError):
                data = self.storage.read_bytes(SCHEMA_KEY)
                layout.config_dir.mkdir(parents=True)
                layout.schema_file.write_bytes(data)
            return load_schema(layout)

    def put_schema(self, local_schema: Path) -> None:
        self.storage.upload(local_schema, SCHEMA_KEY)

    # staging -----------------------------------------------------------------------
    def stage(self, batch_dir: Path, job_id: str) -> str:
        """Upload a local batch folder to ``staging/pending/<job>/``, manifest last; return its URI."""
        if self.storage.exists(f"{pending_prefix(job_id)}/{BATCH_MANIFEST}") or self.storage.exists(claim_key(job_id)):
            raise ValidationError(f"job id {job_id!r} is already used in {self.base}/staging")
        upload_tree(self.storage, batch_dir, pending_prefix(job_id), last=BATCH_MANIFEST)
        return f"{self.base}/{pending_prefix(job_id)}"

    def read_manifest(self, job_id: str) -> BatchManifest:
        data = self.storage.read_bytes(f"{pending_prefix(job_id)}/{BATCH_MANIFEST}")
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / BATCH_MANIFEST).write_bytes(data)
            try:
                return load_manifest(Path(tmp), job_id)
            except ValidationError as exc:  # name the object, not the temporary copy
                raise ValidationError(str(exc).replace(tmp, self.uri_of(pending_prefix(job_id)))) from None

    def newest_change(self, job_id: str) -> datetime:
        """Latest ``LastModified`` among a pending batch's objects (hand drops are claimed once it is old)."""
        return max(o.modified for o in self.storage.list(pending_prefix(job_id)))

    def claim_ready(self, candidates, since: datetime | None, quiet_seconds: float, log, key_allowed=None):
        """Claim each complete batch among ``(job_id, manifest LastModified)`` candidates.

        Invalid batches go to failed/; hand drops wait until all their objects are ``quiet_seconds`` old.
        Returns the claimed job ids by partition and a cursor time that never passes a batch still waiting.
        """
        groups: dict[PartitionRef, list[str]] = defaultdict(list)
        staged_at: dict[str, str] = {}
        schema, cursor, waiting = None, since, None
        now = datetime.now(timezone.utc)
        for job_id, modified in candidates:
            try:
                manifest = self.read_manifest(job_id)
            except FileNotFoundError:
                continue  # processed since the listing, or still being uploaded (no manifest yet)
            except (DatalakeError, ValueError) as exc:
                self._reject_logged(job_id, str(exc), log)
                continue
            if manifest.hand_drop and (now - self.newest_change(job_id)).total_seconds() < quiet_seconds:
                waiting = min(waiting, modified) if waiting else modified  # `aws s3 sync` sends the manifest early
                continue
            cursor = max(cursor, modified) if cursor else modified
            try:
                schema = schema or self.schema()
                manifest.validate(schema)
                if key_allowed is not None and not key_allowed(manifest.partition.key):
                    raise ValidationError(f"partition key {manifest.partition.key!r} is not allowed")
            except (DatalakeError, ValueError) as exc:
                self._reject_logged(job_id, str(exc), log)
                continue
            if self.claim(job_id, job_id, manifest.partition):
                groups[manifest.partition].append(job_id)
                staged_at[job_id] = str(manifest.created_at)
        for job_ids in groups.values():  # staging order: a partition's first batch is the first one staged
            job_ids.sort(key=lambda j: (staged_at[j], j))
        if waiting is not None:
            cursor = min(cursor, waiting) if cursor else waiting
        return groups, cursor

    def _reject_logged(self, job_id: str, reason: str, log) -> None:
        if self.reject(job_id, reason):
            log.warning(f"pending batch {job_id} rejected: {reason}")

    def claim(self, job_id: str, run_key: str, partition: PartitionRef, attempt: int = 1) -> bool:
        """Create the claim marker if nobody has; True only for the caller that created it."""
        marker = S3Claim(job_id, run_key, partition.key, attempt, time.time())
        return self.storage.create_exclusive(claim_key(job_id), marker.to_bytes())

    def reject(self, job_id: str, reason: str) -> bool:
        """Send an unusable pending batch to failed/ (claiming it first, so only one caller does)."""
        marker = S3Claim(job_id, f"{job_id}.rejected", "", 1, time.time())
        if not self.storage.create_exclusive(claim_key(job_id), marker.to_bytes()):
            return False
        self.fail(job_id, {"error": reason})
        return True

    def read_claim(self, job_id: str) -> S3Claim | None:
        try:
            doc = json.loads(self.storage.read_bytes(claim_key(job_id)))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return S3Claim(**{k: v for k, v in doc.items() if k in S3Claim.__dataclass_fields__})

    def write_claim(self, marker: S3Claim) -> None:
        self.storage.write_bytes(claim_key(marker.job_id), marker.to_bytes())

    def claims(self) -> list[S3Claim]:
        return [c for job in self.storage.list_dirs("staging/processing") if (c := self.read_claim(job))]

    def requeue_or_fail(self, job_id: str, reason: str, run_id: str | None) -> str:
        """After the run holding a batch died: a new claim with the next attempt's run key, or failed/."""
        marker = self.read_claim(job_id)
        attempt = marker.attempt if marker else MAX_ATTEMPTS
        if marker and attempt < MAX_ATTEMPTS and self.storage.exists(f"{pending_prefix(job_id)}/{BATCH_MANIFEST}"):
            self.write_claim(S3Claim(job_id, f"{job_id}.attempt{attempt + 1}", marker.partition, attempt + 1, 0.0))
            return "requeued"
        self.fail(job_id, {"error": reason, "run_id": run_id, "attempts": attempt})
        return "failed"

    def fail(self, job_id: str, error: dict[str, Any]) -> str:
        """Copy the batch (server side) to ``staging/failed/<job>/`` with ``error.json``; drop it from pending."""
        target = failed_prefix(job_id)
        if self.storage.exists(f"{target}/{ERROR_FILE}"):
            target = f"{target}-{int(time.time())}"
        objects = [o.key for o in self.storage.list(pending_prefix(job_id))]
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda k: self.storage.copy(k, target + k[len(pending_prefix(job_id)) :]), objects))
        doc = {"job_id": job_id, **error, "failed_at": utc_now_iso()}
        self.storage.write_bytes(f"{target}/{ERROR_FILE}", json.dumps(doc, indent=2, default=str).encode())
        self._drop_pending(job_id, objects)
        return f"{self.base}/{target}"

    def _drop_pending(self, job_id: str, objects: list[str] | None = None) -> None:
        """Delete a batch from pending (manifest first, so it never looks complete) and its claim."""
        manifest = f"{pending_prefix(job_id)}/{BATCH_MANIFEST}"
        objects = objects if objects is not None else [o.key for o in self.storage.list(pending_prefix(job_id))]
        self.storage.delete([manifest])
        self.storage.delete([k for k in objects if k != manifest])
        self.storage.delete([claim_key(job_id)])

    def batch_status(self, job_id: str, run_state=None) -> dict[str, Any] | None:
        """pending / queued / running / done / failed for one batch, from staging objects and the job record."""
        entry: dict[str, Any] = {"job_id": job_id}
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            record = json.loads(self.storage.read_bytes(f"logs/jobs/{job_id}.json"))
            entry.update(
                {k: record.get(k) for k in ("partition", "rows_in", "rows_added", "rows_duplicate", "rows_rejected")}
            )
            entry.update(rows=record.get("rows_in"), state=record.get("status"), error=record.get("error"))
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            error = json.loads(self.storage.read_bytes(f"{failed_prefix(job_id)}/{ERROR_FILE}"))
            entry.update(state="failed", error=error.get("error"), path=self.uri_of(failed_prefix(job_id)))
        marker = self.read_claim(job_id)
        if marker is not None and entry.get("state") not in ("done", "failed"):
            state, run_id = (
                run_state(marker.__dict__) if run_state else ("running" if marker.run_id else "queued", None)
            )
            entry.update(state=state, partition=marker.partition, run_id=run_id or marker.run_id)
        elif "state" not in entry and self.storage.exists(f"{pending_prefix(job_id)}/{BATCH_MANIFEST}"):
            entry.update(state="pending", path=self.uri_of(pending_prefix(job_id)))
        return entry if "state" in entry else None

    # hash index --------------------------------------------------------------------
    def index_cache(self) -> SegmentCache:
        """The local cache of the published hash index, checked against the bucket's segments first."""
        cache = SegmentCache(self.storage, self.cache / "index")
        cache.sync()
        return cache

    def existing_assets(self, paths: list[str]) -> dict[str, int]:
        """``path -> size`` for the ``paths`` whose objects exist (HEADs, 16 at a time)."""

        def size(path: str) -> int | None:
            try:
                return self.storage.info(path).size
            except FileNotFoundError:
                return None

        with ThreadPoolExecutor(max_workers=16) as pool:
            return {p: n for p, n in zip(paths, pool.map(size, paths)) if n is not None}

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

    # processing --------------------------------------------------------------------
    @contextlib.contextmanager
    def work_lake(self, job_ids: list[str]) -> Iterator[LakeLayout]:
        """A throwaway local lake for one run, removed afterwards."""
        root = self.cache / "runs" / f"{(job_ids or ['rebuild'])[0]}-{uuid.uuid4().hex[:8]}"
        layout = LakeLayout(root)
        try:
            yield layout
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def fetch_partition(self, work: LakeLayout, ref: PartitionRef) -> int:
        """Download a partition's catalog files (Parquet parts and ``_metadata.json``) into ``work``."""
        return download_tree(self.storage, partition_prefix(ref), work.partition_dir(ref))

    def process(
        self, work: LakeLayout, job_id: str, options: ProcessOptions, run_info: dict[str, Any] | None = None
    ) -> BatchResult:
        """Process one claimed batch in ``work`` and publish the outcome to S3."""
        result = BatchResult(job_id)
        if not self.storage.exists(f"{pending_prefix(job_id)}/{BATCH_MANIFEST}"):
            result.status, result.error = "skipped", "the batch is no longer in staging/pending"
            self.storage.delete([claim_key(job_id)])
            return result
        schema = self.schema()
        download_tree(self.storage, pending_prefix(job_id), work.processing_batch(job_id))
        with contextlib.suppress(ValidationError, ValueError):
            self.fetch_partition(work, load_manifest(work.processing_batch(job_id), job_id).partition)
        cache = self.index_cache()
        run_index = TieredHashIndex(work.index_dir / f"run-{job_id}.sqlite", cache.index, self.existing_assets)
        processor = BatchProcessor(work, options, schema=schema, index=run_index)
        result = processor.process(job_id, run_info)
        if result.status == "done":
            self._publish(work, job_id, result, run_index, cache)
        else:
            error = json.loads((work.failed_batch(job_id) / ERROR_FILE).read_text())
            result.rejected_dir = self.fail(job_id, error)
        self._upload_job_record(work, job_id)
        return result

    def process_pending(self, options: ProcessOptions, quiet_seconds: float = 2.0) -> list[BatchResult]:
        """Claim and process every complete pending batch in this process (no Dagster needed)."""
        candidates = [(job_id, datetime.now(timezone.utc)) for job_id in self.storage.list_dirs("staging/pending")]
        groups, _ = self.claim_ready(candidates, None, quiet_seconds, logging.getLogger("datalake"))
        results = []
        for job_id in [j for job_ids in groups.values() for j in job_ids]:  # each partition's in staging order
            with self.work_lake([job_id]) as work:
                results.append(self.process(work, job_id, options))
        return results

    def _publish(
        self, work: LakeLayout, job_id: str, result: BatchResult, run_index: TieredHashIndex, cache: SegmentCache
    ) -> None:
        entries = run_index.new_entries()
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda e: self.storage.upload(work.base / e.path, e.path), entries))
        if result.part_file:
            ref = PartitionRef.parse(result.partition)
            part = Path(result.part_file)
            self.storage.upload(part, f"{partition_prefix(ref)}/{part.name}")
            conformed = [Path(c) for c in result.conformed_parts]  # older parts rewritten in widened contract types
            for path in conformed:
                self.storage.upload(path, f"{partition_prefix(ref)}/{path.name}")
            result.conformed_parts = [f"{self.base}/{partition_prefix(ref)}/{p.name}" for p in conformed]
            self.storage.upload(work.partition_metadata(ref), f"{partition_prefix(ref)}/{PARTITION_METADATA}")
            result.part_file = f"{self.base}/{partition_prefix(ref)}/{part.name}"
        cache.publish(job_id, entries)
        rejected = work.rejected_batch(job_id)
        if rejected.is_dir():
            upload_tree(self.storage, rejected, f"staging/failed/{rejected.name}", last=BATCH_MANIFEST)
            result.rejected_dir = f"{self.base}/staging/failed/{rejected.name}"
        kept = (result.staging_report or {}).get("kept")
        if kept:  # a hand drop's files no row took (core/hand_drop.py): kept on S3 too, never dropped
            folder = Path(kept["folder"])
            upload_tree(self.storage, folder, f"staging/failed/{folder.name}", last=ERROR_FILE)
            kept["folder"] = f"{self.base}/staging/failed/{folder.name}"
        self._drop_pending(job_id)

    def _upload_job_record(self, work: LakeLayout, job_id: str) -> None:
        record = work.job_record(job_id)
        if record.exists():
            self.storage.upload(record, f"logs/jobs/{job_id}.json")

    def rebuild_partition(self, work: LakeLayout, ref: PartitionRef, batch_size: int) -> CompactionResult:
        """Compact a partition in ``work`` (idempotent rebuild) and publish the result to S3."""
        self.fetch_partition(work, ref)
        folder = work.partition_dir(ref)
        before = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        result = compact_partition(work, ref, batch_size)
        if folder.is_dir():
            self.publish_partition(work, ref, before)
        return result

    def publish_partition(self, work: LakeLayout, ref: PartitionRef, before: set[str]) -> None:
        """After a local rebuild of a partition in ``work``: upload its files, delete the replaced parts."""
        folder = work.partition_dir(ref)
        now = {p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
        for name in sorted(now - {PARTITION_METADATA}):
            self.storage.upload(folder / name, f"{partition_prefix(ref)}/{name}")
        self.storage.upload(folder / PARTITION_METADATA, f"{partition_prefix(ref)}/{PARTITION_METADATA}")
        self.storage.delete(f"{partition_prefix(ref)}/{name}" for name in sorted(before - now))

    def asset_sha256(self, relpath: str) -> str:
        """SHA-256 of a stored asset, streamed from S3; "missing" if there is no such object."""
        if not relpath.startswith("assets/") or ".." in relpath.split("/"):
            return "outside the lake"
        try:
            return self.storage.sha256(relpath)
        except FileNotFoundError:
            return "missing"

    def uri_of(self, key: str) -> str:
        return f"{self.base}/{key}"

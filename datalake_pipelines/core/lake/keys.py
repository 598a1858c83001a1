"""Every key of a lake, relative to its base: ``staging/pending/<job>/...``, ``catalog/provider=.../``, ``assets/...``.

One module builds them all, for both backends: :class:`~.layout.LakeLayout` joins them to a folder
(``base / key``), :class:`~.s3.S3Lake`, the S3 catalog and the S3 hash index use them as object keys.
Keys are ``/``-separated text without a leading or trailing ``/``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # layout imports this module; the reference is only for type hints
    from .layout import PartitionRef

BATCH_MANIFEST = "_metadata.json"
PARTITION_METADATA = "_metadata.json"
ERROR_FILE = "error.json"
COMPACTED_PART = "data.parquet"
LOCAL_CLAIM_MARKER = ".claim.json"  # inside the batch folder moved to processing/ (local lake)
S3_CLAIM_MARKER = "_claim.json"  # the object that *is* the claim on S3 (the batch stays in pending/)

STAGING = "staging"
PENDING = "staging/pending"
PROCESSING = "staging/processing"
FAILED = "staging/failed"
INCOMING = "staging/incoming"
CATALOG = "catalog"
ASSETS = "assets"
INDEX = "index"
SEGMENTS = "index/segments"
ROW_SEGMENTS = "index/rows"  # per-partition row-hash segments of an S3 lake (core/ingest/s3_rows.py)
CONFIG = "config"
SCHEMA = "config/schema.yaml"
LOGS = "logs"
JOBS = "logs/jobs"
CHANGES = "logs/changes"  # the catalog change log: which partitions writers took, in order (lake/changes.py)
CHUNKS = "logs/chunks"  # an ingest run's chunk plans and records, per job, deleted with the batch (ingest/chunks.py)
DUCKDB = "catalog.duckdb"
EXPORTS = "exports"
RETAINED = "catalog_retained"  # catalog files replaced by a deletion, kept for the retention period
DELETION_RECORD = "deletion.json"
LIFECYCLE = "logs/lifecycle"  # one record per delete or GC run: who, what, when, counts
DELETIONS_OPEN = "logs/deletions_open"  # one marker per deletion started and not finished (its record says "started")
STEP_IO = "logs/dagster_io"  # step outputs the Celery executor's workers hand each other (lib/executor.py)

_SHA256 = re.compile(r"[0-9a-f]{64}")


# staging ---------------------------------------------------------------------------------------------------
def pending_batch(job_id: str) -> str:
    return f"{PENDING}/{job_id}"


def pending_temp(job_id: str) -> str:
    """Where a local upload assembles its batch before the rename into ``pending/`` (hidden: never listed)."""
    return f"{PENDING}/.tmp-{job_id}"


def incoming_zip(job_id: str) -> str:
    """A zip being streamed into an S3 lake before its members are staged (``stage_url``)."""
    return f"{INCOMING}/{job_id}.zip"


def pending_manifest(job_id: str) -> str:
    """The object whose presence makes a pending batch complete (uploaded last)."""
    return f"{PENDING}/{job_id}/{BATCH_MANIFEST}"


def processing_batch(job_id: str) -> str:
    return f"{PROCESSING}/{job_id}"


def claim_marker(job_id: str, local: bool) -> str:
    """The claim marker of a batch: ``.claim.json`` in the moved folder (local), ``_claim.json`` object (S3)."""
    return f"{PROCESSING}/{job_id}/{LOCAL_CLAIM_MARKER if local else S3_CLAIM_MARKER}"


def failed_batch(job_id: str) -> str:
    return f"{FAILED}/{job_id}"


def rejected_batch(job_id: str) -> str:
    """Rows quarantined from an otherwise successful batch, kept re-submittable."""
    return f"{FAILED}/{job_id}-rejected"


def job_of_manifest_key(key: str) -> str | None:
    """``staging/pending/<job>/_metadata.json`` -> ``<job>`` (None for any other key)."""
    parts = key.split("/")
    if len(parts) == 4 and "/".join(parts[:2]) == PENDING and parts[3] == BATCH_MANIFEST:
        return parts[2]
    return None


# catalog ---------------------------------------------------------------------------------------------------
def partition(ref: PartitionRef) -> str:
    """``catalog/provider=P/dataset=D/task=T/variant=V`` (hive partitioning)."""
    return f"{CATALOG}/provider={ref.provider}/dataset={ref.dataset}/task={ref.task}/variant={ref.variant}"


def part_file(ref: PartitionRef, job_id: str) -> str:
    return f"{partition(ref)}/part-{job_id}.parquet"


def compacted_file(ref: PartitionRef) -> str:
    return f"{partition(ref)}/{COMPACTED_PART}"


def partition_metadata(ref: PartitionRef) -> str:
    return f"{partition(ref)}/{PARTITION_METADATA}"


# assets, index, logs ---------------------------------------------------------------------------------------
def asset(provider: str, dataset: str, sha256: str, ext: str) -> str:
    """Sharded content path ``assets/provider=P/dataset=D/ab/cd/<sha>.<ext>``; ValueError for a non-digest."""
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    name = f"{sha256}.{ext}" if ext else sha256
    return f"{ASSETS}/provider={provider}/dataset={dataset}/{sha256[:2]}/{sha256[2:4]}/{name}"


def is_asset(key: str) -> bool:
    """True for a key under ``assets/`` that cannot escape it (no ``..`` segment)."""
    return key.startswith(ASSETS + "/") and ".." not in key.split("/")


def row_segments(ref: PartitionRef) -> str:
    """The folder of a partition's row-hash segments on an S3 lake."""
    return f"{ROW_SEGMENTS}/{ref.key}"


def row_segment(ref: PartitionRef, part: str, signature: str) -> str:
    """The row-hash segment of one version (``signature``: ``size-etag``) of the part file ``part``."""
    return f"{row_segments(ref)}/{part}/{signature}.parquet"


def index_segment(job_id: str) -> str:
    """A published hash-index segment of the S3 lake (append-only Parquet, one per job)."""
    return f"{SEGMENTS}/{job_id}.parquet"


def job_record(job_id: str) -> str:
    return f"{JOBS}/{job_id}.json"


# lifecycle: retained catalog files and the records of deletions and GC runs ----------------------------------
def retained(deletion_id: str) -> str:
    """``catalog_retained/<deletion-id>``: what one deletion replaced, kept until GC's retention passes."""
    return f"{RETAINED}/{deletion_id}"


def retained_file(deletion_id: str, catalog_key: str) -> str:
    """Where a deletion keeps the catalog file ``catalog/...``: ``catalog_retained/<id>/provider=.../<name>``."""
    if not catalog_key.startswith(CATALOG + "/"):
        raise ValueError(f"not a catalog key: {catalog_key!r}")
    return f"{retained(deletion_id)}/{catalog_key[len(CATALOG) + 1 :]}"


def deletion_record(deletion_id: str) -> str:
    return f"{retained(deletion_id)}/{DELETION_RECORD}"


def lifecycle_record(op_id: str) -> str:
    return f"{LIFECYCLE}/{op_id}.json"


def deletion_open(deletion_id: str) -> str:
    """The marker of a deletion whose lifecycle record still says ``started``: the next delete or GC finishes it."""
    return f"{DELETIONS_OPEN}/{deletion_id}"


def chunks(job_id: str) -> str:
    """``logs/chunks/<job>``: the chunk plans and records of one batch (core/ingest/chunks.py)."""
    return f"{CHUNKS}/{job_id}"

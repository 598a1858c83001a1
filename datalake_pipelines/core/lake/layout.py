"""Every path of a local lake: staging folders, catalog partitions, sharded assets, index, logs.

Each path is ``base / key`` with the key from :mod:`.keys`, the one module that builds lake keys (the S3 lake
uses the same keys as object names); no other module builds a lake path by hand.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ...settings import BASE_PATH_ENV, DEFAULT_BASE_DIRNAME  # noqa: F401 - re-exported
from ...settings import load as load_settings
from ..ingest.hash_index import HashIndex
from ..ingest.index_store import existing_hash_index
from . import keys
from .keys import BATCH_MANIFEST, COMPACTED_PART, ERROR_FILE, PARTITION_METADATA

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
PARTITION_LEVELS = ("provider", "dataset", "task", "variant")
RAW_TASK = "raw"
BATCH_DATA = "data.parquet"
BATCH_FILES_DIR = "files"
__all__ = ["BATCH_MANIFEST", "COMPACTED_PART", "ERROR_FILE", "PARTITION_METADATA"]  # re-exported from .keys


# Limits every path and key the lake builds must respect (checked by tests with maximum-length names):
# a file name is at most 255 bytes (NAME_MAX of ext4, XFS, btrfs, ZFS, APFS); an S3 key at most 1,024 bytes
# (AWS, "Creating object key names"), which the longest catalog key built from four 64-character names and a
# 128-character job id (about 440 bytes) leaves room for a bucket prefix of about 580 bytes. Dagster stores
# run tags and dynamic partition keys as text without a length limit (only definition tags are held to 63
# characters), and partition keys must not contain "...", which the name rule excludes.
MAX_FILE_NAME_BYTES = 255


def fitted_file_name(stem: str, suffix: str = "") -> str:
    """``stem + suffix`` when it fits :data:`MAX_FILE_NAME_BYTES`, else a readable prefix of ``stem``, ``-`` and
    16 hex digits of its SHA-256, then ``suffix`` (distinct stems stay distinct; no UTF-8 sequence is split)."""
    name = stem + suffix
    if len(name.encode()) <= MAX_FILE_NAME_BYTES:
        return name
    digest = hashlib.sha256(stem.encode()).hexdigest()[:16]
    room = MAX_FILE_NAME_BYTES - len(suffix.encode()) - len(digest) - 1
    prefix = stem.encode()[: max(0, room)].decode("utf-8", errors="ignore")
    return f"{prefix}-{digest}{suffix}"


class InvalidNameError(ValueError):
    """A provider, dataset, task or variant name that cannot be a path segment."""


def check_name(kind: str, value: object) -> str:
    """Return ``value`` if it is a valid lake name (``[a-z0-9_-]``, starting alphanumeric)."""
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise InvalidNameError(
            f"invalid {kind} name {value!r}: use 1-64 characters from [a-z0-9_-], starting with a letter or digit"
        )
    return value


@dataclass(frozen=True, order=True)
class PartitionRef:
    """One catalog partition: provider / dataset / task / variant."""

    provider: str
    dataset: str
    task: str
    variant: str

    def __post_init__(self) -> None:
        for level in PARTITION_LEVELS:
            check_name(level, getattr(self, level))

    @property
    def key(self) -> str:
        """The ``provider/dataset/task/variant`` string used as Dagster partition key."""
        return "/".join(getattr(self, level) for level in PARTITION_LEVELS)

    @classmethod
    def parse(cls, key: str) -> PartitionRef:
        parts = key.split("/")
        if len(parts) != 4:
            raise InvalidNameError(f"partition key {key!r} must look like provider/dataset/task/variant")
        return cls(*parts)

    def as_dict(self) -> dict[str, str]:
        return {level: getattr(self, level) for level in PARTITION_LEVELS}

    def __str__(self) -> str:
        return self.key


def resolve_base_path(base_path: str | os.PathLike | None = None) -> Path:
    """The lake's base path: the argument, else ``$DATALAKE_BASE_PATH``, else ``./lake``."""
    raw = base_path if base_path is not None else load_settings().base_path or DEFAULT_BASE_DIRNAME
    raw = str(raw)
    if raw.startswith("s3://"):
        raise ValueError(f"{raw} is an S3 lake: this operation needs a local or NAS lake folder")
    return Path(raw).expanduser().resolve()


class LakeLayout:
    """Paths of one lake rooted at ``base``. Creates the top-level folders on first use."""

    def __init__(self, base_path: str | os.PathLike | None = None, create: bool = True):
        self.base = resolve_base_path(base_path)
        if create:
            self.ensure()

    def ensure(self) -> None:
        for folder in (
            self.pending,
            self.processing,
            self.failed,
            self.catalog_root,
            self.assets_root,
            self.config_dir,
            self.logs_dir,
            self.jobs_dir,
            self.index_dir,
        ):
            folder.mkdir(parents=True, exist_ok=True)

    # staging -----------------------------------------------------------------
    @property
    def staging(self) -> Path:
        return self.base / keys.STAGING

    @property
    def pending(self) -> Path:
        return self.base / keys.PENDING

    @property
    def processing(self) -> Path:
        return self.base / keys.PROCESSING

    @property
    def failed(self) -> Path:
        return self.base / keys.FAILED

    def pending_batch(self, job_id: str) -> Path:
        return self.base / keys.pending_batch(job_id)

    def pending_temp(self, job_id: str) -> Path:
        """Hidden name a batch is written under before its atomic rename into ``pending/``."""
        return self.base / keys.pending_temp(job_id)

    def processing_batch(self, job_id: str) -> Path:
        return self.base / keys.processing_batch(job_id)

    def failed_batch(self, job_id: str) -> Path:
        return self.base / keys.failed_batch(job_id)

    def rejected_batch(self, job_id: str) -> Path:
        """Where rows quarantined from an otherwise successful batch are kept, re-submittable."""
        return self.base / keys.rejected_batch(job_id)

    # catalog -----------------------------------------------------------------
    @property
    def catalog_root(self) -> Path:
        return self.base / keys.CATALOG

    def partition_dir(self, ref: PartitionRef) -> Path:
        return self.base / keys.partition(ref)

    def part_file(self, ref: PartitionRef, job_id: str) -> Path:
        return self.base / keys.part_file(ref, job_id)

    def compacted_file(self, ref: PartitionRef) -> Path:
        return self.base / keys.compacted_file(ref)

    def partition_metadata(self, ref: PartitionRef) -> Path:
        return self.base / keys.partition_metadata(ref)

    def list_partitions(self) -> list[PartitionRef]:
        """Every partition folder present under ``catalog/``."""
        refs = []
        for path in sorted(self.catalog_root.glob("provider=*/dataset=*/task=*/variant=*")):
            if not path.is_dir():
                continue
            values = [part.split("=", 1)[1] for part in path.relative_to(self.catalog_root).parts]
            try:
                refs.append(PartitionRef(*values))
            except InvalidNameError:
                continue
        return refs

    # assets ------------------------------------------------------------------
    @property
    def assets_root(self) -> Path:
        return self.base / keys.ASSETS

    def asset_relpath(self, provider: str, dataset: str, sha256: str, ext: str) -> str:
        """Lake-relative sharded path of content: ``assets/provider=P/dataset=D/ab/cd/<sha>.<ext>``."""
        return keys.asset(provider, dataset, sha256, ext)

    def asset_path(self, relpath: str) -> Path:
        """Absolute path of an asset path this layout built (no symlink resolution needed: we made it)."""
        if not relpath.startswith("assets/") or ".." in relpath:
            raise ValueError(f"not an asset path: {relpath!r}")
        return self.base / relpath

    def asset_file(self, relpath: str) -> str:
        """:meth:`asset_path` as a string: no ``Path`` built (a dedup hit costs one stat, thousands a batch)."""
        if not relpath.startswith("assets/") or ".." in relpath:
            raise ValueError(f"not an asset path: {relpath!r}")
        return os.path.join(str(self.base), relpath)

    def resolve(self, relpath: str) -> Path:
        """Absolute path of a lake-relative path, refusing anything that escapes the lake."""
        path = (self.base / relpath).resolve()
        if self.base != path and self.base not in path.parents:
            raise ValueError(f"path {relpath!r} escapes the lake")
        return path

    def read_asset(self, relpath: str) -> bytes:
        """The bytes of a lake-relative path a catalog row holds (``assets/...``). Raises ``ValueError`` for a
        path leaving the lake and ``OSError`` (``FileNotFoundError``) when it is missing. A work lake standing in
        for an S3 lake reads what it does not hold from the lake (``s3_work.WorkLayout``)."""
        return self.resolve(relpath).read_bytes()

    # index, config, logs, warehouse -------------------------------------------
    @property
    def index_dir(self) -> Path:
        return self.base / keys.INDEX

    @property
    def hash_index(self) -> Path:
        return self.index_dir / "hash_index.sqlite"

    def open_hash_index(self) -> HashIndex | None:
        """The lake's hash index opened for reading (the caller closes it); None when nothing was ingested yet.
        A work lake standing in for an S3 lake opens the lake's published index instead."""
        return existing_hash_index(self)

    def partition_lock(self, ref: PartitionRef) -> Path:
        """Lock file held by the single writer of a catalog partition."""
        stem = f"{ref.provider}.{ref.dataset}.{ref.task}.{ref.variant}"  # 259 bytes at most: hashed when too long
        return self.index_dir / "locks" / fitted_file_name(stem, ".lock")

    @property
    def warehouse_lock(self) -> Path:
        return self.index_dir / "locks" / "catalog.duckdb.lock"

    @property
    def config_dir(self) -> Path:
        return self.base / keys.CONFIG

    @property
    def schema_file(self) -> Path:
        return self.base / keys.SCHEMA

    @property
    def logs_dir(self) -> Path:
        return self.base / keys.LOGS

    @property
    def jobs_dir(self) -> Path:
        return self.base / keys.JOBS

    def job_record(self, job_id: str) -> Path:
        return self.base / keys.job_record(job_id)

    @property
    def duckdb_file(self) -> Path:
        return self.base / keys.DUCKDB

    @property
    def exports_dir(self) -> Path:
        return self.base / keys.EXPORTS

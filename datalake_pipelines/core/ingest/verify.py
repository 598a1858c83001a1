"""Integrity checks of one catalog partition: asset files, duplicate rows, required meta."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..catalog.parts import BATCH_ID, ROW_HASH, iter_partition_batches, read_partition_metadata
from ..lake import keys
from ..lake.layout import RAW_TASK, LakeLayout, PartitionRef
from ..lake.schema import SchemaConfig
from ..storage.backends import LocalStorage, S3Storage, Storage
from .asset_store import sha256_file
from .hash_index import HashIndex, IndexEntry
from .index_store import existing_hash_index

MAX_REPORTED = 20
MAX_MISSING = 10_000
HEAD_WORKERS = 16


@dataclass
class CheckOutcome:
    passed: bool
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    truncated: bool = False  # more distinct problems than MAX_REPORTED were found

    def add(self, problem: str) -> None:
        """Record a problem once (rows sharing a broken asset give one problem), up to :data:`MAX_REPORTED`."""
        self.passed = False
        if problem in self.problems:
            return
        if len(self.problems) < MAX_REPORTED:
            self.problems.append(problem)
        else:
            self.truncated = True


def stored_file_columns(names: list[str]) -> list[str]:
    return [n for n in names if f"{n}_sha256" in names]


def local_sizes(layout: LakeLayout) -> Callable[[list[str]], dict[str, int]]:
    """Expected sizes from the lake's hash index: stored sha256 -> bytes (only where it is the index key)."""

    def sizes(hashes: list[str]) -> dict[str, int]:
        index = existing_hash_index(layout)
        if index is None:
            return {}
        try:
            return {h: e.size for h, e in index.get_many(hashes).items() if e.stored_sha256 == h}
        finally:
            index.close()

    return sizes


def _object_sizes(storage: Storage, paths: list[str]) -> dict[str, int | str]:
    """``path -> size``, or the reason it is unusable ("missing", "outside the lake"); S3 HEADs run in parallel."""

    def one(path: str) -> int | str:
        if not keys.is_asset(path):
            return "outside the lake"
        try:
            return storage.info(path).size
        except FileNotFoundError:
            return "missing"
        except ValueError:
            return "outside the lake"

    if len(paths) < 8 or not isinstance(storage, S3Storage):
        return {p: one(p) for p in paths}
    with ThreadPoolExecutor(max_workers=HEAD_WORKERS) as pool:
        return dict(zip(paths, pool.map(one, paths)))


def check_asset_files(
    layout: LakeLayout,
    ref: PartitionRef,
    batch_ids: list[str] | None = None,
    sha256_of: Callable[[str], str] | None = None,
    *,
    storage: Storage | None = None,
    sizes_of: Callable[[list[str]], dict[str, int]] | None = None,
    hashes: bool = True,
) -> CheckOutcome:
    """Every stored-file reference of the selected rows (every row with ``batch_ids=None``) names an existing
    asset of the expected size and, with ``hashes``, whose SHA-256 equals its name and recorded hash.

    The catalog files are read from ``layout`` (an S3 partition is fetched into a work lake first); the assets
    are looked up in ``storage`` (default: the local lake), one stat or HEAD per distinct path. The expected
    size is ``<col>_size`` for file columns, else the hash index's (``sizes_of``; default the local index);
    a reference whose size is unknown is checked for existence only. ``sha256_of(relpath)`` hashes an asset
    somewhere else (an S3 lake); it returns "missing" when absent. Missing paths are listed in
    ``outcome.missing`` (up to :data:`MAX_MISSING`), every problem in ``outcome.problems`` (up to
    :data:`MAX_REPORTED`).
    """
    outcome = CheckOutcome(True)
    storage = storage or LocalStorage(layout.base)
    sizes_of = sizes_of or local_sizes(layout)
    stat: dict[str, int | str] = {}
    verified: dict[str, str] = {}
    for table in iter_partition_batches(layout, ref):
        if batch_ids is not None and BATCH_ID in table.column_names:
            table = table.filter(pc.is_in(table.column(BATCH_ID), value_set=pa.array(batch_ids, pa.string())))
        for col in stored_file_columns(table.column_names):
            paths = table.column(col).to_pylist()
            shas = table.column(f"{col}_sha256").to_pylist()
            recorded = table.column(f"{col}_size").to_pylist() if f"{col}_size" in table.column_names else None
            stat.update(_object_sizes(storage, sorted({p for p in paths if p is not None} - stat.keys())))
            expected = sizes_of(sorted({h for h in shas if h})) if recorded is None else {}
            if hashes:
                todo = sorted({p for p in paths if p is not None and p not in verified and isinstance(stat[p], int)})
                verified.update(_hash_all(storage, todo, sha256_of or (lambda p: _local_sha256(layout, p))))
            for i, (path, sha) in enumerate(zip(paths, shas)):
                if path is None:
                    continue
                outcome.checked += 1
                size = stat[path]
                want = recorded[i] if recorded is not None else expected.get(sha)
                if isinstance(size, str):
                    outcome.add(f"{col}: asset {path} is {size}")
                    if size == "missing" and len(outcome.missing) < MAX_MISSING and path not in outcome.missing:
                        outcome.missing.append(path)
                    continue
                if want is not None and size != want:
                    outcome.add(f"{col}: asset {path} has {size} bytes, expected {want}")
                    continue
                if not hashes:
                    continue
                if path not in verified:
                    verified[path] = sha256_of(path) if sha256_of is not None else _local_sha256(layout, path)
                actual = verified[path]
                if actual in ("missing", "outside the lake"):
                    outcome.add(f"{col}: asset {path} is {actual}")
                elif actual != sha or not Path(path).name.startswith(actual):
                    outcome.add(f"{col}: asset {path} has sha256 {actual}, catalog says {sha}")
    return outcome


def _hash_all(storage: Storage, paths: list[str], sha256_of: Callable[[str], str]) -> dict[str, str]:
    """``path -> sha256`` of many assets at once: hashlib releases the GIL, so threads use every core (a serial
    loop made the check of a 10,000-file ingest cost 2.6 s, most of its Dagster overhead); S3 reads overlap."""
    if len(paths) < 8:
        return {p: sha256_of(p) for p in paths}
    workers = HEAD_WORKERS if isinstance(storage, S3Storage) else (os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(paths, pool.map(sha256_of, paths)))


def check_index_assets(
    index: HashIndex, storage: Storage, sha256_of: Callable[[str], str] | None = None, hashes: bool = False
) -> CheckOutcome:
    """Every hash-index entry names an existing asset of the indexed size (``hashes``: and content).

    Covers assets no catalog partition references, such as data files from ``create_data_file``. One stat
    (or HEAD) per entry; ``sha256_of(relpath)`` hashes an asset (default: read through ``storage``).
    """
    outcome = CheckOutcome(True)
    for rows in index.iter_rows():
        entries = [IndexEntry(*row) for row in rows]
        sizes = _object_sizes(storage, sorted({e.path for e in entries}))
        for entry in entries:
            outcome.checked += 1
            size = sizes[entry.path]
            if isinstance(size, str):
                outcome.add(f"index: asset {entry.path} is {size}")
                if size == "missing" and len(outcome.missing) < MAX_MISSING and entry.path not in outcome.missing:
                    outcome.missing.append(entry.path)
            elif entry.size is not None and size != entry.size:
                outcome.add(f"index: asset {entry.path} has {size} bytes, expected {entry.size}")
            elif hashes and sha256_of is not None and sha256_of(entry.path) != entry.stored_sha256:
                outcome.add(f"index: asset {entry.path} does not hash to {entry.stored_sha256}")
    return outcome


def _local_sha256(layout: LakeLayout, path: str) -> str:
    try:
        full = layout.resolve(path)
    except ValueError:
        return "outside the lake"
    return sha256_file(full) if full.is_file() else "missing"


def check_duplicate_rows(layout: LakeLayout, ref: PartitionRef) -> CheckOutcome:
    outcome = CheckOutcome(True)
    seen: set[str] = set()
    for table in iter_partition_batches(layout, ref, columns=[ROW_HASH]):
        for h in table.column(ROW_HASH).to_pylist() if ROW_HASH in table.column_names else []:
            outcome.checked += 1
            if h in seen:
                outcome.add(f"row_hash {h} appears more than once")
            seen.add(h)
    return outcome


def check_required_meta(layout: LakeLayout, ref: PartitionRef, schema: SchemaConfig) -> CheckOutcome:
    """Task partitions: every row carries each required field with an allowed value."""
    outcome = CheckOutcome(True)
    if ref.task == RAW_TASK:
        return outcome
    if ref.task not in schema.tasks:
        outcome.add(f"task {ref.task!r} is not declared in the schema")
        return outcome
    spec = schema.tasks[ref.task]
    for table in iter_partition_batches(layout, ref):
        outcome.checked += table.num_rows
        for name in spec.required_fields:
            if name not in table.column_names:
                outcome.add(f"required field {name!r} is not a column")
                continue
            values = table.column(name).to_pylist()
            if any(v in (None, "") for v in values):
                outcome.add(f"required field {name!r} is empty in some rows")
            allowed = spec.allowed_values.get(name)
            if allowed:
                bad = sorted({str(v) for v in values if v is not None and v not in allowed})
                if bad:
                    outcome.add(f"{name} has values {bad} outside {allowed}")
    return outcome


def partition_summary(layout: LakeLayout, ref: PartitionRef) -> dict[str, Any]:
    meta = read_partition_metadata(layout, ref)
    return {"row_count": meta.get("row_count", 0), "batches": len(meta.get("batches", []))}

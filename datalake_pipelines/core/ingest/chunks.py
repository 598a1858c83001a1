"""Chunks of an ingest run: the files of its batches stored by separate steps, reused by its one commit.

A run whose batches reference more files than ``DATALAKE_CHUNK_FILES`` is planned in chunks: each chunk hashes,
checks and publishes its files (:func:`store_files`: idempotent, content-addressed, safe on any host and twice)
and records what it did in ``logs/chunks/<job>/<n>.json``. The commit (:class:`~.processing.BatchProcessor`
with ``precomputed``) reuses a recorded outcome only when the staged file is still the one the chunk stored
(same identity: locally size, mtime, ctime, inode and device, which no in-place write keeps; on S3 size and
ETag), and stores every other file itself. So a lost, stale or half-written record costs time, never correctness,
and the catalog part and the index rows keep their single writer. A run with fewer files plans no chunk: its
commit stores them as before, so small runs pay nothing for chunking.

Plans and records go through the lake's ``storage`` (a folder or the bucket), never through process memory: the
steps pass each other only a :class:`Chunk` (job id, number, file count).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ...settings import load as load_settings
from ..lake import keys
from ..lake.layout import LakeLayout
from .asset_store import StoredFile, StoreOptions, store_files
from .hash_index import HashIndex, IndexEntry
from .manifest import load_manifest
from .references import BatchFiles

PLAN_SUFFIX = ".plan.json"
STORE_GROUP = 64  # files per store_files call in a chunk, as in processing (one index lookup per group)

FileKey = tuple[str, str]  # (kind "image" or "file", the staged file's path relative to the batch)
Identity = list[Any]  # what a staged file must still be for its recorded outcome to be reused


@dataclass(frozen=True)
class Chunk:
    """One chunk step's work, small and picklable (its file list is in the lake: ``logs/chunks/<job>/<n>``)."""

    job_id: str
    n: int
    files: int

    @property
    def mapping_key(self) -> str:
        """A Dagster dynamic mapping key: letters, digits and underscores only."""
        return "".join(c if c.isalnum() else "_" for c in f"{self.job_id}_{self.n}")


def plan_key(job_id: str, n: int) -> str:
    return f"{keys.chunks(job_id)}/{n}{PLAN_SUFFIX}"


def record_key(job_id: str, n: int) -> str:
    return f"{keys.chunks(job_id)}/{n}.json"


def referenced_files(batch_dir: Path, files: set[str], job_id: str, batch_size: int = 10_000) -> list[FileKey]:
    """Every batch file the rows of ``batch_dir``'s ``data.parquet`` reference, once, in row order.

    ``files`` are the batch's regular files (relative paths). A hand drop, or a batch whose manifest or data
    cannot be read, plans nothing: its commit stores (or refuses) it whole, as without chunks.
    """
    try:
        manifest = load_manifest(batch_dir, job_id)
        if manifest.hand_drop:
            return []
        kinds = {**{c: "file" for c in manifest.file_columns}, **{c: "image" for c in manifest.image_columns}}
        pf = pq.ParquetFile(batch_dir / "data.parquet")
        present = [c for c in kinds if c in pf.schema_arrow.names]
        resolver = BatchFiles(batch_dir, files)
        wanted: dict[FileKey, None] = {}
        for batch in pf.iter_batches(batch_size=batch_size, columns=present):
            for col in present:
                for value in batch.column(col).to_pylist():
                    rel = resolver.resolve(value)[0] if isinstance(value, str) else None
                    if rel is not None:
                        wanted[(kinds[col], rel)] = None
    except Exception:  # noqa: BLE001 - whatever makes the batch unreadable is the commit's to report
        return []
    return list(wanted)


def write_plans(storage: Any, planned: Mapping[str, list[FileKey]], chunk_files: int) -> list[Chunk]:
    """Split each batch's files into chunks of at most ``chunk_files`` and write their plans; none at all when the
    run's files fit in one chunk (one chunk step would only add a step before the commit)."""
    if sum(len(files) for files in planned.values()) <= chunk_files:
        return []
    chunks = []
    for job_id, files in planned.items():
        for n, start in enumerate(range(0, len(files), chunk_files)):
            part = files[start : start + chunk_files]
            storage.write_bytes(plan_key(job_id, n), json.dumps({"files": part}).encode())
            chunks.append(Chunk(job_id, n, len(part)))
    return chunks


def read_plan(storage: Any, chunk: Chunk) -> list[FileKey]:
    return [(kind, rel) for kind, rel in json.loads(storage.read_bytes(plan_key(chunk.job_id, chunk.n)))["files"]]


def fingerprint(options: StoreOptions) -> dict[str, Any]:
    """What makes an outcome depend on more than the bytes: a record made under other options is not reused."""
    return asdict(options)


def store_planned(
    layout: LakeLayout,
    index: HashIndex,
    batch_dir: Path,
    files: list[FileKey],
    provider: str,
    dataset: str,
    job_id: str,
    options: StoreOptions,
    workers: int,
) -> list[StoredFile]:
    """:func:`store_files` for a chunk's files, in groups on ``workers`` threads (one outcome per file, in order)."""
    store = partial(_store_groups, layout, index, batch_dir, provider, dataset, job_id, options, workers)
    pause = load_settings().chunk_pause
    if not pause or len(files) < 2:
        return store(files)
    # a test hook: a worker is killed here, half the chunk's assets published and no record written
    half = len(files) // 2
    first = store(files[:half])
    time.sleep(pause)
    return first + store(files[half:])


def _store_groups(
    layout: LakeLayout,
    index: HashIndex,
    batch_dir: Path,
    provider: str,
    dataset: str,
    job_id: str,
    options: StoreOptions,
    workers: int,
    files: list[FileKey],
) -> list[StoredFile]:
    groups: list[tuple[str, list[str]]] = []
    for start in range(0, len(files), STORE_GROUP):
        group = files[start : start + STORE_GROUP]
        for kind in dict.fromkeys(k for k, _ in group):
            groups.append((kind, [rel for k, rel in group if k == kind]))
    by_key: dict[FileKey, StoredFile] = {}

    def run(group: tuple[str, list[str]]) -> list[StoredFile]:
        kind, rels = group
        paths: list[str | Path] = [os.path.join(batch_dir, rel) for rel in rels]
        return store_files(layout, index, paths, provider, dataset, job_id, kind, options)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for (kind, rels), outcomes in zip(groups, pool.map(run, groups)):
            by_key.update(((kind, rel), o) for rel, o in zip(rels, outcomes))
    return [by_key[f] for f in files]


def write_record(
    storage: Any, chunk: Chunk, options: StoreOptions, stored: Iterable[tuple[FileKey, Identity | None, StoredFile]]
) -> int:
    """Record a chunk's outcomes (after its assets are published); a file without identity or with an error is
    left out, so the commit stores it itself. Returns how many were recorded."""
    files = [
        {"kind": kind, "path": rel, "id": identity, "outcome": asdict(outcome)}
        for (kind, rel), identity, outcome in stored
        if identity is not None and outcome.error is None and outcome.entry is not None
    ]
    doc = {"job_id": chunk.job_id, "n": chunk.n, "options": fingerprint(options), "files": files}
    storage.write_bytes(record_key(chunk.job_id, chunk.n), json.dumps(doc).encode())
    return len(files)


def _read_records(storage: Any, record_keys: Iterable[str], options: StoreOptions) -> dict[FileKey, tuple[Any, Any]]:
    """(kind, path) -> (recorded identity, outcome) from the records made under ``options``."""
    found: dict[FileKey, tuple[Identity, StoredFile]] = {}
    want = fingerprint(options)
    for key in record_keys:
        try:
            doc = json.loads(storage.read_bytes(key))
            if doc.get("options") != want:
                continue
            for f in doc["files"]:
                out = dict(f["outcome"])
                out["entry"] = IndexEntry(**out["entry"])
                found[(f["kind"], f["path"])] = (f["id"], StoredFile(**out))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            continue  # no record, one half written or of another shape: its files are stored again
    return found


def valid_outcomes(
    found: Mapping[FileKey, tuple[Identity, StoredFile]], identity_of: Callable[[list[str]], dict[str, Identity]]
) -> dict[FileKey, tuple[Identity, StoredFile]]:
    """The recorded outcomes whose staged file is still the one recorded (``identity_of``: path -> identity now,
    a missing file left out)."""
    now = identity_of(sorted({rel for _kind, rel in found}))
    return {key: (ident, out) for key, (ident, out) in found.items() if now.get(key[1]) == ident}


def recorded_outcomes(
    storage: Any, job_id: str, options: StoreOptions, identity_of: Callable[[list[str]], dict[str, Identity]]
) -> dict[FileKey, StoredFile]:
    """The chunk outcomes of ``job_id`` the commit may reuse: recorded under the same options, for a staged file
    that is still the one recorded."""
    names = [o.key for o in storage.list(keys.chunks(job_id)) if not o.key.endswith(PLAN_SUFFIX)]
    found = _read_records(storage, [k for k in names if k.endswith(".json")], options)
    return {key: out for key, (_ident, out) in valid_outcomes(found, identity_of).items()}


def own_record(
    storage: Any, chunk: Chunk, options: StoreOptions, identity_of: Callable[[list[str]], dict[str, Identity]]
) -> dict[FileKey, tuple[Identity, StoredFile]]:
    """What an earlier run of this chunk recorded and still holds: a chunk run twice redoes none of it (and keeps
    its first outcomes: the second publish of a file finds its asset there and would count no new bytes)."""
    return valid_outcomes(_read_records(storage, [record_key(chunk.job_id, chunk.n)], options), identity_of)


def drop_chunks(storage: Any, job_id: str) -> None:
    """Delete a batch's chunk plans and records (once its job record is written)."""
    storage.delete([obj.key for obj in storage.list(keys.chunks(job_id))])


def local_identity(path: str | Path) -> Identity | None:
    """A local staged file's identity (None if gone): size, mtime, ctime, inode, device. An in-place write, even
    one that sets the mtime back, changes the ctime."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def chunk_summary(chunk: Chunk, outcomes: list[StoredFile], recorded: int) -> dict[str, Any]:
    """What a chunk step reports (its Dagster output: small, picklable)."""
    return {
        "job_id": chunk.job_id,
        "chunk": chunk.n,
        "files": len(outcomes),
        "new": sum(1 for o in outcomes if o.new and o.bytes_written),
        "errors": sum(1 for o in outcomes if o.error),
        "recorded": recorded,
    }


def store_local_chunk(layout: LakeLayout, storage: Any, chunk: Chunk, options: StoreOptions, workers: int) -> dict:
    """A chunk of a batch claimed in a local lake (``staging/processing/<job>``), stored in place: the assets are
    linked from the staged files and the record written. No index row is added (the commit adds them); only the
    missing pHash of a known image is filled in, an idempotent update any run makes."""
    batch_dir = layout.processing_batch(chunk.job_id)
    files = read_plan(storage, chunk)
    done = own_record(storage, chunk, options, local_identities(batch_dir))
    todo = [f for f in files if f not in done]
    manifest = load_manifest(batch_dir, chunk.job_id)
    paths = [batch_dir / rel for _kind, rel in todo]
    before = [local_identity(p) for p in paths]
    outcomes = store_planned(
        layout, HashIndex(layout.hash_index), batch_dir, todo, manifest.provider, manifest.dataset, chunk.job_id,
        options, workers,
    )  # fmt: skip
    # the identity after the publish (a link and the read-only mode change the ctime), kept only when size, mtime
    # and inode are still those before the read: a file changed while the chunk read it is left to the commit
    outcomes = [own_earlier_link(layout, p, o) for p, o in zip(paths, outcomes)]
    after = [local_identity(p) for p in paths]
    kept = [b if a and b and (a[:2], a[3:]) == (b[:2], b[3:]) else None for a, b in zip(before, after)]
    stored = [(f, ident, out) for f, (ident, out) in done.items()] + list(zip(todo, kept, outcomes))
    recorded = write_record(storage, chunk, options, stored)
    return chunk_summary(chunk, [out for _f, _i, out in stored], recorded)


def own_earlier_link(layout: LakeLayout, staged: Path, outcome: StoredFile) -> StoredFile:
    """A new file whose asset already existed is the batch's new content all the same when that asset is the staged
    file itself: an earlier run of this chunk linked it and died before its record. Counted new (and its asset
    this batch's to remove should another writer's entry win), not deduplicated."""
    if not outcome.new or outcome.bytes_written or outcome.entry is None:
        return outcome
    try:
        same = os.path.samefile(staged, layout.asset_path(outcome.entry.path))
    except OSError:
        return outcome
    return replace(outcome, bytes_written=outcome.entry.size) if same else outcome


def local_identities(batch_dir: Path) -> Callable[[list[str]], dict[str, Identity]]:
    """``identity_of`` for the staged files of a batch folder."""

    def identities(rels: list[str]) -> dict[str, Identity]:
        return {rel: ident for rel in rels if (ident := local_identity(batch_dir / rel)) is not None}

    return identities


def local_outcomes(storage: Any, batch_dir: Path, job_id: str, options: StoreOptions) -> dict[FileKey, StoredFile]:
    """:func:`recorded_outcomes` of a batch in a local folder, checked against its staged files."""
    return recorded_outcomes(storage, job_id, options, local_identities(batch_dir))

"""Uploading data units of a collection: resilient copies, one catalog row per unit, staged in batches.

Per unit, :func:`upload_data_file` copies each file once (hashing while copying; above 50 MB in 8 MB chunks,
so memory stays bounded) into a scratch folder inside ``staging/``, retrying transient ``OSError``\\ s with
exponential backoff and jitter. :func:`create_data_units` turns uploaded units into one batch through
:class:`BatchStager` (whose copy becomes a hard link from the scratch folder, so nothing is written twice).
A unit whose file vanishes or cannot be read fails alone; a batch that cannot be staged stops the upload but
the batches already in ``staging/pending`` stay. Units whose catalog row (same ``row_hash`` the processing
computes, see ``row_identity``) is already in the partition, with every file in the hash index, are skipped.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
from tqdm import tqdm

from ...settings import load as load_settings
from ..errors import DatalakeError
from ..ingest.hash_index import HashIndex
from ..ingest.row_identity import RowIdentity, content_digests, row_hashes
from ..ingest.staging import BatchStager, build_manifest
from ..lake.layout import BATCH_FILES_DIR, LakeLayout, PartitionRef
from ..lake.schema import load_schema
from ..storage.files import utc_now, write_json_atomic
from .backend import CollectionLake, LocalCollectionLake
from .config import UNIT_META_COLUMNS, Collection, find_collection, validate_against_schema
from .units import DataUnit, Organized, check_json, format_table, organize, read_text

MiB = 1024 * 1024
CHUNKED_THRESHOLD = 50 * MiB
CHUNK_SIZE = 8 * MiB
# Errors worth another try: flaky disks and network file systems. Anything else is not retried.
TRANSIENT_ERRNOS = frozenset(
    {
        errno.EIO,
        errno.EAGAIN,
        errno.EWOULDBLOCK,
        errno.EINTR,
        errno.EBUSY,
        errno.ETIMEDOUT,
        errno.ESTALE,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ENETRESET,
        errno.EREMOTEIO,
    }
)
# Errors that concern one source file only: its unit fails, the upload goes on.
UNIT_ERRNOS = frozenset(
    {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.ELOOP, errno.ENXIO}
)


class UploadError(DatalakeError):
    """The upload stopped (or was refused); ``report`` says what was staged and what was not."""

    def __init__(self, message: str, report: dict[str, Any] | None = None):
        super().__init__(message)
        self.report = report or {}


class UnitFailed(DatalakeError):
    """One unit cannot be uploaded (a file vanished, is unreadable, or kept failing)."""

    def __init__(self, kind: str, detail: str, spec: str | None = None, file: str | None = None):
        super().__init__(detail)
        self.kind, self.detail, self.spec, self.file = kind, detail, spec, file


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; the n-th retry waits ``base_delay * 2**(n-1)`` (capped) times 0.5-1.5."""

    attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 10.0
    sleep: Callable[[float], None] = time.sleep

    def delay(self, retry: int) -> float:
        return min(self.max_delay, self.base_delay * 2 ** (retry - 1)) * (0.5 + random.random())


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


def with_retries(fn: Callable[[], Any], policy: RetryPolicy, what: str) -> Any:
    """``fn()``, retried on transient ``OSError``; after the last try an :class:`OSError` naming the attempts."""
    for attempt in range(1, max(1, policy.attempts) + 1):
        try:
            return fn()
        except OSError as exc:
            if not is_transient(exc):
                raise
            if attempt >= policy.attempts:
                raise OSError(
                    exc.errno, f"{what}: gave up after {attempt} attempts, last error: {exc.strerror or exc}"
                ) from exc
            policy.sleep(policy.delay(attempt))
    raise AssertionError("unreachable")


# copying ---------------------------------------------------------------------------------------------------
def copy_file(
    source: str, dest: str, progress: Callable[[int], None] | None = None, chunked: bool = False
) -> tuple[int, str]:
    """Copy ``source`` to ``dest`` and return ``(size, sha256)``; in bounded 8 MB chunks above 50 MB or when
    ``chunked`` (the reference's ``use_chunked_upload``)."""
    digest = hashlib.sha256()
    size = 0
    with open(source, "rb", buffering=0) as src, open(dest, "wb", buffering=0) as dst:
        if not chunked and os.fstat(src.fileno()).st_size <= CHUNKED_THRESHOLD:
            data = src.readall()
            digest.update(data)
            dst.write(data)
            size = len(data)
            if progress:
                progress(size)
        else:
            buf = bytearray(CHUNK_SIZE)
            view = memoryview(buf)
            while n := src.readinto(buf):
                digest.update(view[:n])
                dst.write(view[:n])
                size += n
                if progress:
                    progress(n)
    return size, digest.hexdigest()


def hash_file(source: str) -> str:
    digest = hashlib.sha256()
    with open(source, "rb", buffering=0) as src:
        buf = bytearray(min(CHUNK_SIZE, max(1, os.fstat(src.fileno()).st_size)))
        view = memoryview(buf)
        while n := src.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def _unit_failure(exc: OSError, spec: str, source: str) -> UnitFailed:
    if exc.errno == errno.ENOENT:
        # One message for a path that never existed and one removed meanwhile: both do not exist now.
        return UnitFailed("vanished", f"the file does not exist: {source}", spec, source)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return UnitFailed("unreadable", f"permission denied: {source}", spec, source)
    if exc.errno in TRANSIENT_ERRNOS:
        return UnitFailed("upload_failed", str(exc.strerror or exc), spec, source)
    return UnitFailed("unreadable", f"cannot read: {exc.strerror or exc}", spec, source)


class _Progress:
    """A thread-safe bytes bar (tqdm locks its own updates) with a files counter in the postfix."""

    def __init__(self, total: int, total_files: int, desc: str, enabled: bool):
        self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not enabled)
        self.files, self.total_files = 0, total_files

    def bytes(self, n: int) -> None:
        self.bar.update(n)

    def file_done(self) -> None:
        self.files += 1
        self.bar.set_postfix_str(f"files {self.files}/{self.total_files}", refresh=False)

    def close(self) -> None:
        self.bar.close()


# one unit --------------------------------------------------------------------------------------------------
def upload_data_file(
    layout: LakeLayout,
    organized_file: dict[str, Any],
    collection: Collection | str,
    scratch: Path | None = None,
    policy: RetryPolicy = RetryPolicy(),
    progress: _Progress | None = None,
    known_rows: set[str] | None = None,
    index: HashIndex | None = None,
    chunked: bool = False,
) -> dict[str, Any]:
    """Copy one organized unit (``{"files": {spec: path}, "meta": {...}[, "texts": {spec: json}]}``) into
    the lake's upload scratch; return the uploaded unit (``files`` with sha256/size, ``texts``, ``meta``,
    ``row_hash``, ``skipped``). With ``known_rows`` a unit already in the catalog is hashed, not copied.
    Raises :class:`UnitFailed` when a file vanished, cannot be read, or kept failing."""
    if not isinstance(collection, Collection):
        collection = find_collection(layout, collection)
    scratch = scratch or upload_scratch(layout)
    scratch.mkdir(parents=True, exist_ok=True)
    texts = dict(organized_file.get("texts") or {})
    meta = dict(organized_file.get("meta") or {})
    sources = {name: str(path) for name, path in organized_file["files"].items()}
    for name in collection.columns_of("json"):
        if name in sources and name not in texts:
            texts[name] = _read_json_text(sources[name], name)
    file_specs = [n for n in sources if collection.spec(n).kind != "json"]
    uploaded: dict[str, Any] = {
        "collection": collection.id,
        "unit": meta.get("origin_file_stem"),
        "files": {},
        "texts": texts,
        "meta": meta,
        "skipped": False,
    }
    if known_rows:
        shas = {n: _retry_io(partial(hash_file, sources[n]), policy, n, sources[n]) for n in file_specs}
        uploaded["files"] = {n: {"sha256": s, "source": sources[n], "path": None} for n, s in shas.items()}
        row = unit_row_hash(collection, uploaded)
        if row in known_rows and all(index is None or index.get(s) for s in shas.values()):
            if progress:
                for name in file_specs:
                    progress.bytes(os.path.getsize(sources[name]))
                    progress.file_done()
            uploaded.update(row_hash=row, skipped=True)
            return uploaded
    token = uuid.uuid4().hex[:12]
    for name in file_specs:
        source = sources[name]
        dest = str(scratch / f"{token}-{name}{Path(source).suffix.lower()[:12]}")
        done = [0]

        def count(n: int, done: list[int] = done) -> None:
            done[0] += n
            if progress:
                progress.bytes(n)

        def attempt(source: str = source, dest: str = dest, done: list[int] = done) -> tuple[int, str]:
            if done[0] and progress:  # a retry: take back what the failed try counted
                progress.bytes(-done[0])
            done[0] = 0
            return copy_file(source, dest, count, chunked) if chunked else copy_file(source, dest, count)

        size, sha = _retry_io(attempt, policy, name, source)
        if progress:
            progress.file_done()
        uploaded["files"][name] = {"path": dest, "sha256": sha, "size": size, "source": source}
    uploaded["row_hash"] = unit_row_hash(collection, uploaded)
    return uploaded


def _retry_io(fn: Callable[[], Any], policy: RetryPolicy, spec: str, source: str) -> Any:
    try:
        return with_retries(fn, policy, f"copying {source}")
    except OSError as exc:
        if exc.errno in UNIT_ERRNOS or exc.errno in TRANSIENT_ERRNOS:
            raise _unit_failure(exc, spec, source) from exc
        raise


def _read_json_text(path: str, spec: str) -> str:
    try:
        text = check_json(read_text(path))
    except OSError as exc:
        raise _unit_failure(exc, spec, path) from exc
    except ValueError as exc:
        raise UnitFailed("invalid_json", f"not valid JSON: {exc}", spec, path) from None
    return text


def unit_content(collection: Collection, uploaded: dict[str, Any]) -> pa.Table:
    """The one-row content table processing hashes for this unit's catalog row (see ``row_identity``): the
    columns of :func:`units_table` with each file as its SHA-256 and JSON as text, plus the collection's meta."""
    content: dict[str, pa.Array] = {}
    for spec in collection.file_specifications:
        if spec.kind == "json":
            content[spec.name] = pa.array([uploaded["texts"].get(spec.name)], pa.string())
        else:
            entry = uploaded["files"].get(spec.name)
            content[spec.name] = pa.array([entry["sha256"] if entry else None], pa.string())
    meta = uploaded["meta"]
    for column, column_type in zip(UNIT_META_COLUMNS, (pa.string(), pa.string(), pa.int64())):
        content[column] = pa.array([meta.get(column)], column_type)
    content.update({key: pa.array([value]) for key, value in collection.meta.items()})
    return pa.table(content)


def unit_row_hash(collection: Collection, uploaded: dict[str, Any]) -> str:
    """The ``row_hash`` processing gives this unit's catalog row as the first of its content in its batch."""
    return row_hashes(unit_content(collection, uploaded))[0]


# one batch -------------------------------------------------------------------------------------------------
class _LinkingStager(BatchStager):
    """A :class:`BatchStager` that hard-links files already copied into the upload scratch (same file system)
    instead of copying them a second time; falls back to a copy where links are not supported."""

    def __init__(self, *args: Any, sources: dict[str, str], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.sources = sources

    def _copy_one(self, job: tuple[int, str, Any], base_dir: Path, tmp: Path) -> tuple[str, int, str] | None:
        row, col, value = job
        if not isinstance(value, str) or value not in self.sources:
            return super()._copy_one(job, base_dir, tmp)
        rel = f"{BATCH_FILES_DIR}/{col}/{row:08d}{Path(value).suffix.lower()[:12]}"
        dest = tmp / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(value, dest)
        except OSError:
            shutil.copyfile(value, dest)
        return rel, dest.stat().st_size, self.sources[value]


def units_table(collection: Collection, uploaded_files: list[dict[str, Any]]) -> pa.Table:
    """One row per unit: a column per spec (paths for image/file specs, text for JSON) plus unit meta."""
    columns: dict[str, pa.Array] = {}
    for spec in collection.file_specifications:
        if spec.kind == "json":
            values = [u["texts"].get(spec.name) for u in uploaded_files]
        else:
            values = [(u["files"].get(spec.name) or {}).get("path") for u in uploaded_files]
        columns[spec.name] = pa.array(values, pa.string())
    columns["origin_file_stem"] = pa.array([u["meta"].get("origin_file_stem") for u in uploaded_files], pa.string())
    columns["origin_file_extension"] = pa.array(
        [u["meta"].get("origin_file_extension") for u in uploaded_files], pa.string()
    )
    columns["file_size"] = pa.array([u["meta"].get("file_size") for u in uploaded_files], pa.int64())
    return pa.table(columns)


def create_data_units(
    layout: LakeLayout,
    uploaded_files: list[dict[str, Any]],
    collection: Collection | str | None = None,
    job_id: str | None = None,
    num_proc: int | None = None,
    batch_size: int = 1000,
) -> list[dict[str, Any]]:
    """Stage uploaded units as one batch in ``staging/pending``; return the data units (id = row hash)."""
    if not uploaded_files:
        return []
    if not isinstance(collection, Collection):
        collection = find_collection(layout, collection or uploaded_files[0]["collection"])
    manifest = build_manifest(
        collection.data_type,
        collection.provider,
        collection.dataset,
        collection.task,
        collection.variant,
        collection.meta,
        f"collection {collection.name}: {len(uploaded_files)} data units",
        job_id,
    )
    sources = {f["path"]: f["source"] for u in uploaded_files for f in u["files"].values() if f.get("path")}
    stager = _LinkingStager(layout, num_proc, batch_size, progress=False, sources=sources)
    staged = stager.stage(
        units_table(collection, uploaded_files),
        manifest,
        collection.columns_of("image"),
        file_columns=collection.columns_of("file"),
    )
    for path in sources:
        Path(path).unlink(missing_ok=True)
    for folder in {Path(p).parent for p in sources}:
        try:
            folder.rmdir()  # only once empty: a running upload_collection still uses its scratch folder
        except OSError:
            pass
    # Occurrences are counted batch-wide in row order, as processing does: two identical units get distinct ids.
    identity = RowIdentity()
    ids = [identity.next_hash(content_digests(unit_content(collection, u))[0]) for u in uploaded_files]
    return [
        {
            "id": row_id,
            "unit": u["unit"],
            "job_id": staged.job_id,
            "files": {name: f["sha256"] for name, f in u["files"].items()},
            "meta": {**u["meta"], "batch_id": staged.job_id},
        }
        for u, row_id in zip(uploaded_files, ids)
    ]


def upload_scratch(layout: LakeLayout, upload_id: str | None = None) -> Path:
    """A private folder beside ``staging/pending`` (same file system, so staging can hard-link from it)."""
    return layout.staging / ".uploads" / (upload_id or f"{utc_now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}")


# a whole folder --------------------------------------------------------------------------------------------
def upload_collection(
    layout: LakeLayout,
    folder: str | os.PathLike,
    collection: Collection | str,
    strict: bool = False,
    batch_size: int = 1000,
    progress: bool = True,
    retries: int = 4,
    group_by: str = "stem",
    pattern: str | None = None,
    num_proc: int | None = None,
    report_path: str | os.PathLike | None = None,
    policy: RetryPolicy | None = None,
    lake: CollectionLake | None = None,
) -> dict[str, Any]:
    """Organize ``folder`` into units, validate them and stage complete units in batches; return the report.

    Strict mode refuses the whole upload (:class:`UploadError`, nothing staged) if any unit has a problem or a
    file matches no spec; lenient mode uploads complete units and reports the rest. The report (also written
    as JSON to ``report_path`` or ``logs/collections/``) lists every unit with its upload status. ``lake``
    (default: ``layout`` itself) says where batches and dedup facts live (an S3 lake: :mod:`.backend`).
    """
    started = time.perf_counter()
    num_proc = num_proc or load_settings().num_proc  # default: $DATALAKE_NUM_PROC or the CPU count
    if not isinstance(collection, Collection):
        collection = find_collection(layout, collection)
    validate_against_schema(collection, load_schema(layout))
    policy = policy or RetryPolicy(attempts=max(1, retries))
    organized = organize(folder, collection, group_by, pattern, skip=[layout.base])
    state = _UploadState(organized, strict)
    target = (
        Path(report_path)
        if report_path
        else layout.logs_dir / "collections" / (f"{collection.name}-{utc_now():%Y%m%dT%H%M%S%f}.json")
    )
    try:
        if strict and (organized.bad_units or organized.unmatched_files):
            state.refuse()
            raise UploadError(
                f"strict mode: upload refused, {len(organized.bad_units)} units have problems and "
                f"{len(organized.unmatched_files)} files match no unit (nothing was staged)"
            )
        lake = lake or LocalCollectionLake(layout)
        _upload_units(layout, collection, organized, state, batch_size, progress, num_proc, policy, lake)
    except UploadError as exc:
        state.error = str(exc)
        exc.report = state.finish(target, started)
        raise
    except Exception as exc:  # noqa: BLE001 - the report must say how far the upload got
        state.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, DatalakeError) else str(exc)
        raise UploadError(f"upload stopped: {state.error}", state.finish(target, started)) from exc
    return state.finish(target, started)


class _UploadState:
    """Upload status per unit, and the report built from it."""

    def __init__(self, organized: Organized, strict: bool):
        self.organized = organized
        self.strict = strict
        self.status: dict[str, dict[str, Any]] = {
            u.key: {"upload": "pending" if u.complete else "not_uploaded"} for u in organized.units
        }
        self.batches: list[dict[str, Any]] = []
        self.bytes = 0
        self.error: str | None = None

    def refuse(self) -> None:
        for entry in self.status.values():
            entry["upload"] = "refused"

    def finish(self, target: Path, started: float) -> dict[str, Any]:
        report = self.organized.report()
        for unit in report["units"]:
            st = self.status[unit["unit"]]
            unit.update({k: v for k, v in st.items() if k != "upload"})
            unit["upload"] = "not_uploaded" if st["upload"] == "pending" else st["upload"]
        counts = {k: 0 for k in ("uploaded", "skipped", "failed", "not_uploaded", "refused")}
        for unit in report["units"]:
            counts[unit["upload"]] = counts.get(unit["upload"], 0) + 1
        report["upload"] = {
            "mode": "strict" if self.strict else "lenient",
            "status": "refused" if counts["refused"] else "failed" if self.error else "done",
            **counts,
            "bytes": self.bytes,
            "batches": self.batches,
            "error": self.error,
            "seconds": round(time.perf_counter() - started, 3),
        }
        report["report_path"] = str(target)
        write_json_atomic(target, report)
        return report


def _upload_units(
    layout: LakeLayout,
    collection: Collection,
    organized: Organized,
    state: _UploadState,
    batch_size: int,
    progress: bool,
    num_proc: int,
    policy: RetryPolicy,
    lake: CollectionLake,
) -> None:
    units = organized.complete_units
    partition = PartitionRef(collection.provider, collection.dataset, collection.task, collection.variant)
    known_rows = lake.known_rows(partition)
    index = lake.hash_index()
    scratch = upload_scratch(layout)
    n_files = sum(len(u.files) - len(u.texts) for u in units)
    n_bytes = sum(f.size for u in units for name, f in u.files.items() if name not in u.texts)
    bar = _Progress(n_bytes, n_files, f"upload {collection.name}", progress)
    try:
        with ThreadPoolExecutor(max(1, num_proc)) as pool:
            for start in range(0, len(units), max(1, batch_size)):
                chunk = units[start : start + batch_size]

                def one(unit: DataUnit) -> dict[str, Any] | UnitFailed:
                    organized_file = {**unit.organized_file(), "texts": unit.texts}
                    try:
                        return upload_data_file(
                            layout, organized_file, collection, scratch, policy, bar, known_rows, index
                        )
                    except UnitFailed as exc:
                        return exc

                ready = []
                for unit, outcome in zip(chunk, pool.map(one, chunk)):
                    st = state.status[unit.key]
                    if isinstance(outcome, UnitFailed):
                        unit.add_problem(outcome.kind, outcome.detail, outcome.spec, [outcome.file or ""])
                        st["upload"] = "failed"
                    elif outcome["skipped"]:
                        st.update(upload="skipped", row_hash=outcome["row_hash"])
                    else:
                        ready.append(outcome)
                if state.strict and any(state.status[u.key]["upload"] == "failed" for u in chunk):
                    raise UploadError("strict mode: a unit failed during the upload; this batch was not staged")
                if ready:
                    data_units = create_data_units(layout, ready, collection, num_proc=num_proc, batch_size=batch_size)
                    job_id = data_units[0]["job_id"]
                    for du in data_units:
                        state.status[du["unit"]].update(upload="uploaded", batch_id=job_id, row_hash=du["id"])
                    state.bytes += sum(f.get("size") or 0 for u in ready for f in u["files"].values())
                    state.batches.append({"job_id": job_id, "units": len(ready), "staging_dir": lake.publish(job_id)})
    finally:
        bar.close()
        shutil.rmtree(scratch, ignore_errors=True)


__all__ = [
    "RetryPolicy",
    "TRANSIENT_ERRNOS",
    "UnitFailed",
    "UploadError",
    "copy_file",
    "create_data_units",
    "format_table",
    "upload_collection",
    "upload_data_file",
    "with_retries",
]

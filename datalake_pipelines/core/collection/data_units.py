"""Data units of the reference client's API: one unit copied into the upload scratch, units staged as a batch.

Per unit, :func:`upload_data_file` copies each file once (:mod:`.file_copy`) into a scratch folder inside
``staging/``. :func:`create_data_units` turns uploaded units into one batch through :class:`BatchStager`
(whose copy becomes a hard link from the scratch folder, so nothing is written twice). A unit whose file
vanishes, cannot be read or keeps failing raises :class:`UnitFailed`, for that unit alone.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..errors import DatalakeError
from ..ingest.hash_index import HashIndex
from ..ingest.provenance import collection_source
from ..ingest.row_identity import RowIdentity, content_digests, row_hashes
from ..ingest.staging import BatchStager, build_manifest
from ..lake.layout import BATCH_FILES_DIR, LakeLayout
from ..storage.files import utc_now
from .config import UNIT_META_COLUMNS, Collection, find_collection
from .file_copy import TRANSIENT_ERRNOS, CopyProgress, RetryPolicy, copy_file, hash_file, with_retries
from .reading import check_json, read_text

DEFAULT_RETRIES = RetryPolicy()  # frozen, so one shared default is safe
# Errors that concern one source file only: its unit fails, the upload goes on.
UNIT_ERRNOS = frozenset(
    {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.ELOOP, errno.ENXIO}
)


class UnitFailed(DatalakeError):
    """One unit cannot be uploaded (a file vanished, is unreadable, or kept failing)."""

    def __init__(self, kind: str, detail: str, spec: str | None = None, file: str | None = None):
        super().__init__(detail)
        self.kind, self.detail, self.spec, self.file = kind, detail, spec, file


def _unit_failure(exc: OSError, spec: str, source: str) -> UnitFailed:
    if exc.errno == errno.ENOENT:
        # One message for a path that never existed and one removed meanwhile: both do not exist now.
        return UnitFailed("vanished", f"the file does not exist: {source}", spec, source)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return UnitFailed("unreadable", f"permission denied: {source}", spec, source)
    if exc.errno in TRANSIENT_ERRNOS:
        return UnitFailed("upload_failed", str(exc.strerror or exc), spec, source)
    return UnitFailed("unreadable", f"cannot read: {exc.strerror or exc}", spec, source)


# one unit --------------------------------------------------------------------------------------------------
def upload_data_file(
    layout: LakeLayout,
    organized_file: dict[str, Any],
    collection: Collection | str,
    scratch: Path | None = None,
    policy: RetryPolicy = DEFAULT_RETRIES,
    progress: CopyProgress | None = None,
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

    def _copy_one(self, job: tuple[int, str, Any], base_dir: Path, tmp: Path) -> tuple[str, int, str, None] | None:
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
        return rel, dest.stat().st_size, self.sources[value], None


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
    source_folder: str | None = None,
) -> list[dict[str, Any]]:
    """Stage uploaded units as one batch in ``staging/pending``; return the data units (id = row hash).

    ``source_folder``: the folder the units were organized from, recorded in the batch's source."""
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
    unit_files = [(str(f.get("source")), str(f.get("sha256"))) for u in uploaded_files for f in u["files"].values()]
    manifest.source = collection_source(collection.name, source_folder, unit_files)
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

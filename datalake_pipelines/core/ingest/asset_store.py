"""The content-addressed asset store: hash a file, look it up, store new content once.

Hashed once, while in cache: each staged file is read once (just written by the upload, so from the page cache);
its SHA-256, the image check and the pHash all use those bytes. New content is published from the staged file
itself (:mod:`.asset_files`: a hard link, the bytes written once). Content the upload found in the lake is not
staged at all (:mod:`.known_content`): the batch names it by SHA-256 and :func:`known_references` finds it in the
index, so a re-ingest reads, writes and uploads no asset bytes after the upload's hashing.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..lake.layout import LakeLayout
from ..neardup.phash import FrameHasher, phash_enabled, phash_of
from ..storage.files import utc_now_iso
from .asset_files import (  # noqa: F401 - re-exported: the store's callers and tests name them here
    CHUNK,
    StagedFileChanged,
    asset_problem,
    publish,
    restore_asset,
    sha256_file,
)
from .hash_index import HashIndex, IndexEntry
from .images import (
    MAX_PIXELS_ENV,
    ImageRejected,
    displayed_size,
    exif_orientation,
    inspect_image,
    max_pixels_from_env,
    optimize_image,
)
from .known_content import usable_reference

IN_MEMORY_LIMIT = 64 * 1024 * 1024


@dataclass
class StoredFile:
    """What happened to one source file."""

    sha256: str | None = None
    entry: IndexEntry | None = None
    new: bool = False
    bytes_written: int = 0
    error: str | None = None


@dataclass(frozen=True)
class StoreOptions:
    max_pixels: int = field(default_factory=max_pixels_from_env)
    optimize_images: bool = False
    full_decode: bool = False
    phash: bool = field(default_factory=phash_enabled)  # $DATALAKE_PHASH: perceptual hash of each new image


@dataclass
class _Hashed:
    source: str
    data: bytes | None = None
    sha256: str | None = None
    error: str | None = None
    read: os.stat_result | None = None  # fstat at open: what a publish checks the staged file against


def _read_and_hash(source: str) -> _Hashed:
    try:
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if st.st_size <= IN_MEMORY_LIMIT:
                data = _read_size(fd, st.st_size)
                return _Hashed(source, data, hashlib.sha256(data).hexdigest(), read=st)
            digest = hashlib.sha256()
            while chunk := os.read(fd, CHUNK):
                digest.update(chunk)
        finally:
            os.close(fd)
        return _Hashed(source, None, digest.hexdigest(), read=st)
    except OSError as exc:
        return _Hashed(source, error=f"cannot read file: {exc.strerror or exc}")


def _read_size(fd: int, size: int) -> bytes:
    """The first ``size`` bytes (the size ``fstat`` gave), fewer if the file ends before.

    Raw reads: Python's buffered ``read()`` adds an fstat, an ioctl and an lseek, and a last read for the EOF.
    Bytes past ``size`` need no read: the publish compares the staged file's size with that ``fstat``, so a file
    that grew (or shrank) is refused there.
    """
    data = os.read(fd, size) if size else os.read(fd, CHUNK)
    if len(data) == size and size:
        return data
    parts = [data]
    while chunk := os.read(fd, CHUNK):
        parts.append(chunk)
    return b"".join(parts)


def store_files(
    layout: LakeLayout,
    index: HashIndex,
    sources: list[str | Path],
    provider: str,
    dataset: str,
    batch_id: str,
    kind: str = "image",
    options: StoreOptions | None = None,
) -> list[StoredFile]:
    """Hash every source, look them up in one query, validate and store only unknown content.

    A dedup hit whose asset is missing or has another size than the index records (deleted or damaged
    by hand) is stored again from the upload's bytes (:func:`_restore`) and counts as new.

    Never raises for bad data: a per-file problem is reported in ``StoredFile.error``. ``options`` defaults to
    :class:`StoreOptions` (pixel limit from ``$DATALAKE_MAX_IMAGE_PIXELS``).
    """
    options = options or StoreOptions()
    hashed = [_read_and_hash(str(source)) for source in sources]
    stored_at = utc_now_iso()  # one time for the call's new entries: formatting it per file cost ~3% of a store
    known = index.get_many(sorted({h.sha256 for h in hashed if h.sha256}))
    # An S3 run's index (TieredHashIndex, with ``published``) already HEADs every hit and hides a missing
    # object; on a local lake the asset is checked here, one stat per hit.
    local_assets = getattr(index, "published", None) is None
    results = []
    hashed_now: dict[str, int] = {}  # known images without a pHash yet: computed here, recorded in the index
    for item in hashed:
        if item.error:
            results.append(StoredFile(error=item.error))
        elif item.sha256 in known:
            entry = known[item.sha256]
            if entry.needs_geometry:  # an index row from before orientation was recorded
                entry = _with_geometry(entry, item.data if item.data is not None else item.source)
            outcome = _known(item, entry, kind, options)
            if outcome.entry is not None and outcome.entry.kind == "image" and options.phash:
                outcome.entry = _with_phash(outcome.entry, item, hashed_now)
            if local_assets and outcome.error is None and asset_problem(layout, entry) is not None:
                outcome = _restore(layout, item, entry, outcome.entry or entry, options)
            results.append(outcome)
        else:
            results.append(_store_new(layout, item, provider, dataset, batch_id, kind, options, stored_at))
    if hashed_now:
        index.fill_phash(hashed_now)
    return results


def _with_phash(entry: IndexEntry, item: _Hashed, hashed_now: dict[str, int]) -> IndexEntry:
    """A known image's entry with its pHash: from the index when it has one (computed once per content), else
    computed from the upload's bytes and remembered for the index."""
    if entry.phash is not None:
        return entry
    value = hashed_now.get(entry.sha256)
    if value is None:
        value = phash_of(item.data if item.data is not None else item.source)
        if value is None:
            return entry
        hashed_now[entry.sha256] = value
    return replace(entry, phash=value)


def _known(item: _Hashed, entry: IndexEntry, kind: str, options: StoreOptions) -> StoredFile:
    """A dedup hit. The pixel limit of this run still applies to a known image (from the index's width and
    height, no decode); content first stored as a plain file is inspected now before it can be an image."""
    if kind != "image":
        return StoredFile(sha256=item.sha256, entry=entry)
    if entry.kind != "image" or entry.width is None or entry.height is None:
        try:
            info = inspect_image(
                item.data if item.data is not None else item.source, options.max_pixels, options.full_decode
            )
        except ImageRejected as exc:
            return StoredFile(sha256=item.sha256, error=str(exc))
        content = item.data if item.data is not None else item.source
        orientation = exif_orientation(content)
        width, height = displayed_size(info.width, info.height, orientation, info.format)
        facts = replace(
            entry, kind="image", format=info.format, width=width, height=height, mode=info.mode,
            orientation=orientation or 0,
        )  # fmt: skip
        return StoredFile(sha256=item.sha256, entry=facts)
    if entry.width * entry.height > options.max_pixels:
        return StoredFile(
            sha256=item.sha256,
            error=f"decompression bomb: {entry.width}x{entry.height} = {entry.width * entry.height:,} pixels exceeds "
            f"the limit of {options.max_pixels:,} pixels ({MAX_PIXELS_ENV} / max_pixels)",
        )
    return StoredFile(sha256=item.sha256, entry=entry)


def store_file(
    layout: LakeLayout,
    index: HashIndex,
    source: Path,
    provider: str,
    dataset: str,
    batch_id: str,
    kind: str = "image",
    options: StoreOptions | None = None,
) -> StoredFile:
    """:func:`store_files` for a single file."""
    return store_files(layout, index, [source], provider, dataset, batch_id, kind, options)[0]


def _store_new(
    layout: LakeLayout,
    item: _Hashed,
    provider: str,
    dataset: str,
    batch_id: str,
    kind: str,
    options: StoreOptions,
    stored_at: str,
) -> StoredFile:
    source, data, sha = Path(item.source), item.data, item.sha256
    assert sha is not None  # _read_and_hash sets sha256 on every item without an error
    phash = None
    fmt: str | None
    width: int | None
    height: int | None
    mode: str | None
    orientation: int | None
    if kind == "image":
        hasher = FrameHasher() if options.phash else None
        try:
            info = inspect_image(data if data is not None else source, options.max_pixels, options.full_decode, hasher)
        except ImageRejected as exc:
            return StoredFile(sha256=sha, error=str(exc))
        if hasher is not None:
            phash = hasher.result(data if data is not None else source)
        ext, fmt, mode = info.extension, info.format, info.mode
        orientation = (
            info.orientation if info.orientation_read else exif_orientation(data if data is not None else source)
        )
        width, height = displayed_size(info.width, info.height, orientation, info.format)
        orientation = orientation or 0  # 0 = no orientation tag (NULL would mean "not recorded")
    else:
        ext = source.suffix.lower().lstrip(".")[:16]
        fmt = width = height = mode = orientation = None
    content: bytes | Path = source  # the staged file itself: linked, not copied
    stored_sha = sha
    if kind == "image" and options.optimize_images and data is not None:
        optimized = optimize_image(data, info)
        if optimized is not None:
            content, stored_sha = optimized, hashlib.sha256(optimized).hexdigest()
    relpath = layout.asset_relpath(provider, dataset, stored_sha, ext)
    try:
        written = publish(content, layout.asset_path(relpath), item.read)
    except StagedFileChanged as exc:
        return StoredFile(sha256=sha, error=f"cannot store file: {exc}")
    except OSError as exc:
        return StoredFile(sha256=sha, error=f"cannot store file: {exc.strerror or exc}")
    stored_size = len(content) if isinstance(content, bytes) else item.read.st_size if item.read else 0
    entry = IndexEntry(
        sha,
        stored_sha,
        relpath,
        stored_size,
        kind,
        fmt,
        width,
        height,
        mode,
        provider,
        dataset,
        batch_id,
        stored_at,
        orientation,
        phash,
    )
    return StoredFile(sha256=sha, entry=entry, new=True, bytes_written=written)


def _restore(
    layout: LakeLayout, item: _Hashed, indexed: IndexEntry, entry: IndexEntry, options: StoreOptions
) -> StoredFile:
    """A dedup hit whose asset is broken: store the upload's bytes again at the indexed path (new content)."""
    content: bytes | Path | None = item.data if item.data is not None else Path(item.source)
    if indexed.stored_sha256 != item.sha256:  # stored optimized: only the same optimization restores it
        content = None
        if item.data is not None:
            content = optimize_image(item.data, inspect_image(item.data, options.max_pixels))
    try:
        if content is None:
            raise ValueError("the stored asset was an optimized copy that cannot be rebuilt")
        written = restore_asset(layout.asset_path(indexed.path), content, indexed.stored_sha256)
    except (OSError, ValueError, ImageRejected) as exc:
        return StoredFile(
            sha256=item.sha256, error=f"the stored asset {indexed.path} is broken and cannot be stored again: {exc}"
        )
    return StoredFile(sha256=item.sha256, entry=entry, new=True, bytes_written=written)


def _with_geometry(entry: IndexEntry, content: bytes | str) -> IndexEntry:
    """``entry`` with its displayed size and orientation read from the same content's header.

    The stored size comes from ``entry`` (Pillow's header size is the stored one); only the swap for
    orientations 5-8 is applied, so no decode is needed.
    """
    orientation = exif_orientation(content)
    if entry.width is None or entry.height is None:
        return replace(entry, orientation=orientation or 0)
    width, height = displayed_size(entry.width, entry.height, orientation, entry.format)
    return replace(entry, width=width, height=height, orientation=orientation or 0)


def lacks_phash(outcome: StoredFile, kind: str, options: StoreOptions) -> bool:
    """A dedup hit of an image whose index entry has no pHash while this run computes them (from the bytes)."""
    return options.phash and kind == "image" and outcome.entry is not None and outcome.entry.phash is None


def known_references(
    layout: LakeLayout, index: HashIndex, hashes: list[str], kind: str, options: StoreOptions | None = None
) -> list[StoredFile]:
    """Files named by the SHA-256 the upload recorded (:mod:`.known_content`): one index query, no byte read.

    A hash the index holds, usable by a ``kind`` column and (locally) with a sound asset, is a dedup hit. Any other
    gets an error: the caller stores the staged file when the batch has it, and rejects the row when the upload did
    not stage it (the content left the lake after the upload looked).
    """
    options = options or StoreOptions()
    found = index.get_many(sorted(set(hashes))) if hashes else {}
    local_assets = getattr(index, "published", None) is None  # an S3 run's index confirms hits with HEADs
    out = []
    for sha in hashes:
        entry = found.get(sha)
        problem = None
        if entry is None:
            problem = "is no longer in the lake"
        elif not usable_reference(entry, kind):
            problem = f"is recorded as {entry.kind} content without an image's size"
        elif local_assets and (broken := asset_problem(layout, entry)) is not None:
            problem = f"has a broken asset {entry.path} ({broken})"
        if entry is not None and problem is None:
            out.append(_known(_Hashed(sha, sha256=sha), entry, kind, options))
        else:
            # the batch has no file for it: the upload left it unstaged (the lake held it then), or it was removed
            error = f"its content (sha256 {sha}, as the upload hashed it) is not in the batch and {problem}"
            out.append(StoredFile(sha256=sha, error=f"{error}: upload the file again"))
    return out

"""The content-addressed asset store: hash a file, look it up, store new content once.

A stored file is written under a temporary name and published with ``os.link`` (which fails when the
target exists), so an existing asset is never rewritten and no reader ever sees a half-written file.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .files import temp_sibling, utc_now_iso
from .hash_index import HashIndex, IndexEntry
from .images import DEFAULT_MAX_PIXELS, ImageRejected, inspect_image, optimize_image
from .layout import LakeLayout

IN_MEMORY_LIMIT = 64 * 1024 * 1024
CHUNK = 1024 * 1024


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def publish(data_or_path: bytes | Path, target: Path) -> int:
    """Create ``target`` with the given content unless it exists; return the bytes written (0 if it existed)."""
    if target.exists():
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target)
    try:
        if isinstance(data_or_path, Path):
            with open(data_or_path, "rb") as src, open(tmp, "wb") as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
        else:
            with open(tmp, "wb") as dst:
                dst.write(data_or_path)
        size = tmp.stat().st_size
        try:
            os.link(tmp, target)
        except FileExistsError:
            return 0
        return size
    finally:
        tmp.unlink(missing_ok=True)


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
    max_pixels: int = DEFAULT_MAX_PIXELS
    optimize_images: bool = False


def store_file(
    layout: LakeLayout,
    index: HashIndex,
    source: Path,
    provider: str,
    dataset: str,
    batch_id: str,
    kind: str = "image",
    options: StoreOptions = StoreOptions(),
) -> StoredFile:
    """Hash ``source``; reuse the indexed asset if known, else validate and store it. Never raises for bad data."""
    try:
        size = source.stat().st_size
        data: bytes | None = None
        if size <= IN_MEMORY_LIMIT:
            data = source.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
        else:
            sha = sha256_file(source)
    except OSError as exc:
        return StoredFile(error=f"cannot read file: {exc.strerror or exc}")
    known = index.get(sha)
    if known is not None:
        return StoredFile(sha256=sha, entry=known)
    if kind == "image":
        try:
            info = inspect_image(data if data is not None else source, options.max_pixels)
        except ImageRejected as exc:
            return StoredFile(sha256=sha, error=str(exc))
        ext, fmt, width, height, mode = info.extension, info.format, info.width, info.height, info.mode
    else:
        ext = source.suffix.lower().lstrip(".")[:16]
        fmt = width = height = mode = None
    content: bytes | Path = data if data is not None else source
    stored_sha = sha
    if kind == "image" and options.optimize_images and data is not None:
        optimized = optimize_image(data, info)
        if optimized is not None:
            content, stored_sha = optimized, hashlib.sha256(optimized).hexdigest()
    relpath = layout.asset_relpath(provider, dataset, stored_sha, ext)
    written = publish(content, layout.resolve(relpath))
    stored_size = len(content) if isinstance(content, bytes) else size
    entry = IndexEntry(
        sha, stored_sha, relpath, stored_size, kind, fmt, width, height, mode, provider, dataset, batch_id,
        utc_now_iso(),
    )
    return StoredFile(sha256=sha, entry=entry, new=True, bytes_written=written)

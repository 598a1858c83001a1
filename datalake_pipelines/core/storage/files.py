"""Small file-system helpers: atomic writes, JSON documents, safe paths inside a folder."""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..lake.layout import fitted_file_name


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def utc_now_iso() -> str:
    return utc_now().isoformat(timespec="microseconds")


def temp_sibling(path: Path) -> Path:
    """A hidden, unique temporary name next to ``path`` (same file system, so rename is atomic)."""
    return path.with_name(fitted_file_name(f".{path.name}.{uuid.uuid4().hex[:12]}", ".tmp"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, doc: Any, indent: int | None = 2) -> None:
    """``doc`` as JSON at ``path``, atomically. ``indent=None`` for a long document: Python's JSON encoder is
    pure Python once indenting (a batch manifest of 3,000 files: 24 ms, against 11 ms in C without indent)."""
    write_bytes_atomic(path, json.dumps(doc, indent=indent, ensure_ascii=False, default=str).encode("utf-8"))


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


class UnsafePathError(ValueError):
    """A path that leaves its folder: ``..``, absolute, or through a symlink."""


def safe_join(root: Path, relpath: str) -> Path:
    """``root / relpath`` if it stays inside ``root`` without following any symlink, else raise."""
    if not isinstance(relpath, str) or not relpath:
        raise UnsafePathError(f"empty or non-text path {relpath!r}")
    if os.path.isabs(relpath) or relpath.startswith(("/", "\\")):
        raise UnsafePathError(f"absolute path {relpath!r} is not allowed inside a batch")
    parts = Path(relpath).parts
    if any(part == ".." for part in parts):
        raise UnsafePathError(f"path {relpath!r} escapes the batch with '..'")
    current = root
    for part in parts:
        current = current / part
        if current.is_symlink():
            raise UnsafePathError(f"path {relpath!r} goes through a symlink, which is not allowed")
    return current


# copy_file_range may fail before the first byte for these: another file system on older kernels, a file system
# or a file kind it does not support. Anything else is a real I/O error and is raised.
_NO_COPY_RANGE = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM, errno.EBADF})


def copy_file(source: str | os.PathLike[str], dest: str | os.PathLike[str]) -> int:
    """Copy ``source`` to a new file ``dest`` in the kernel; return the bytes copied.

    ``os.copy_file_range`` first: the bytes never pass through Python, and a file system with reflinks
    (btrfs, XFS) shares the extents instead of writing them. Python 3.11's ``shutil.copyfile`` uses
    ``sendfile`` (also in-kernel, never a reflink) and is the fallback when ``copy_file_range`` is refused.
    Never a hard link: the copy must not change when the source does.
    """
    # Raw descriptors: Python's open() adds an fstat, an ioctl and an lseek per file, which a copy never uses.
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dst = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            size = os.fstat(src).st_size
            copied = 0
            try:
                while True:
                    n = os.copy_file_range(src, dst, max(size - copied, 1 << 20))
                    copied += n
                    # Done at EOF, or once the stat's size is copied (no extra call to read an EOF); a size of 0
                    # may be a file whose size is not known in advance (procfs), read to EOF.
                    if n == 0 or (size and copied == size):
                        return copied
            except OSError as exc:
                if copied or exc.errno not in _NO_COPY_RANGE:
                    raise
        finally:
            os.close(dst)
    finally:
        os.close(src)
    shutil.copyfile(source, dest)
    return os.stat(dest).st_size

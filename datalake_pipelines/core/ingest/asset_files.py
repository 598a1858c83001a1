"""Publishing asset files: link a staged file into ``assets/`` (or write bytes made here), never rewriting one.

Zero extra copies: the staging copy is the only time an asset's bytes are written. A staged file (staging and
assets live in one lake, on one file system) is published by ``os.link`` from the staged file itself; ``os.link``
fails when the target exists, so an existing asset is never rewritten and no reader sees a half-written file.
Bytes made here (an optimized image) are written under a temporary name and linked the same way.

What is published is the staged file, so a publish checks that it is the very file that was read and hashed (same
inode, size and mtime as at open; one stat): a staged file changed meanwhile is refused, never published under a
hash it no longer has. A published asset is made read-only: a link shares the inode with the staged file, which a
failed batch keeps in ``staging/failed/``, and neither name may be edited in place (a fix is a new upload).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
from pathlib import Path

from ..lake.layout import LakeLayout
from ..storage.files import temp_sibling
from .hash_index import IndexEntry

CHUNK = 1024 * 1024
_made_dirs: set[Path] = set()  # shard folders known to exist (saves a mkdir per stored file)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class StagedFileChanged(OSError):
    """The staged file is not the one that was hashed (modified or replaced after it was read)."""


# A hard link is refused across file systems (EXDEV), by some file systems and mounts (EPERM, ENOTSUP) and past
# an inode's link limit (EMLINK): the asset is then copied once, as before links were used.
_NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP})
_READ_ONLY = ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


def _shard(target: Path) -> None:
    if target.parent not in _made_dirs:
        target.parent.mkdir(parents=True, exist_ok=True)
        _made_dirs.add(target.parent)


def publish(data_or_path: bytes | Path, target: Path, read: os.stat_result | None = None) -> int:
    """Create ``target`` with the given content unless it exists; return its size (0 if it existed).

    A path is linked, never copied (unless the file system refuses the link); ``read`` is the path's
    ``fstat`` when it was read and hashed, and the published file must still be that file.
    """
    if isinstance(data_or_path, Path):
        _shard(target)
        return _link(data_or_path, target, read)  # no stat first: the link itself fails when the target exists
    if target.exists():
        return 0
    _shard(target)
    return _write_new(data_or_path, target)


def _link(source: Path, target: Path, read: os.stat_result | None) -> int:
    try:
        try:
            os.link(source, target)
        except FileNotFoundError:  # the cached shard folder was removed meanwhile, or the source is gone
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(source, target)
    except FileExistsError:
        return 0
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        size = _write_new(source, target)
        if size and read is not None and not _same_file(os.stat(source), read, same_inode=True):
            target.unlink(missing_ok=True)  # copied from a file changed since it was hashed
            raise StagedFileChanged(f"{source} changed while it was processed") from None
        return size
    st = os.stat(target)
    if read is not None and not _same_file(st, read, same_inode=True):
        target.unlink(missing_ok=True)  # ours: nobody else can have linked this name between link and stat
        raise StagedFileChanged(f"{source} changed while it was processed")
    os.chmod(target, st.st_mode & _READ_ONLY)
    return st.st_size


def _same_file(now: os.stat_result, read: os.stat_result, same_inode: bool) -> bool:
    return (now.st_size, now.st_mtime_ns) == (read.st_size, read.st_mtime_ns) and (
        not same_inode or (now.st_ino, now.st_dev) == (read.st_ino, read.st_dev)
    )


def _write_new(content: bytes | Path, target: Path) -> int:
    """Write ``content`` under a temporary name, then link it to ``target``: the bytes' only copy (0 if it exists)."""
    tmp = temp_sibling(target)
    try:
        try:
            dst = open(tmp, "xb")
        except FileNotFoundError:  # the cached shard folder was removed meanwhile
            target.parent.mkdir(parents=True, exist_ok=True)
            dst = open(tmp, "xb")
        with dst:
            if isinstance(content, Path):
                with open(content, "rb") as src:
                    shutil.copyfileobj(src, dst, CHUNK)
            else:
                dst.write(content)
        size = os.stat(tmp).st_size
        os.chmod(tmp, 0o444)
        try:
            os.link(tmp, target)
        except FileExistsError:
            return 0
        return size
    finally:
        tmp.unlink(missing_ok=True)


def asset_problem(layout: LakeLayout, entry: IndexEntry) -> str | None:
    """Why the local asset of ``entry`` is unusable (missing, not a file, wrong size), or ``None``; one stat."""
    try:
        st = os.stat(layout.asset_file(entry.path))
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if entry.size is not None and st.st_size != entry.size:
        return f"size {st.st_size:,} bytes, the index records {entry.size:,}"
    return None


def restore_asset(target: Path, content: bytes | Path, stored_sha: str) -> int:
    """Publish ``content`` over a broken asset at ``target``: written to a temp sibling, its SHA-256 checked
    against ``stored_sha`` (the content address), then renamed over the target (atomic on POSIX).

    Returns the bytes written; raises ``ValueError`` when the content does not hash to ``stored_sha``.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target)
    try:
        if isinstance(content, Path):
            with open(content, "rb") as src, open(tmp, "wb") as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
        else:
            tmp.write_bytes(content)
        if sha256_file(tmp) != stored_sha:
            raise ValueError(f"the content does not hash to {stored_sha}")
        size = tmp.stat().st_size
        os.chmod(tmp, 0o444)  # read-only like every published asset
        os.replace(tmp, target)
        return size
    finally:
        tmp.unlink(missing_ok=True)

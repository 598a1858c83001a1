"""Small file-system helpers: atomic writes, JSON documents, safe paths inside a folder."""

from __future__ import annotations

import json
import os
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


def write_json_atomic(path: Path, doc: Any) -> None:
    write_bytes_atomic(path, json.dumps(doc, indent=2, ensure_ascii=False, default=str).encode("utf-8"))


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

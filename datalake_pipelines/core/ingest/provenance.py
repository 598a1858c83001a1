"""Where a batch came from: the ``source`` record of its ``_metadata.json``, copied into its job record.

Every upload path fills it when it stages a batch (a hand drop, written by hand, gets it when it is processed):

* ``method``: ``client`` (the Python client), ``cli`` (``datalake upload``), ``hand_drop``, ``ingest_url``,
  ``collection``;
* ``kind`` and what was read: ``file`` (``path`` of the Parquet file, ``sha256`` and ``bytes`` of it),
  ``folder`` (``path`` and a ``sha256`` over its file list: each file's path relative to the folder and its
  size, one ``<path>\\t<size>`` line each, sorted), ``table`` (an in-memory DataFrame or Arrow table: ``sha256``
  and ``bytes`` of the ``data.parquet`` it was staged as), ``url`` (``url``, ``sha256`` and ``bytes`` of the
  body transferred), ``collection`` (its folder, and a ``sha256`` over each unit file's source path and sha256);
* ``host`` and ``user`` that staged it and ``staged_at`` (UTC, ISO 8601). ``digest_of`` says what ``sha256``
  is a digest of.

The user comes from the password database (the environment is ``settings.py``'s alone); a hand drop's user is
the owner of its ``_metadata.json`` on a local lake and unknown (None) on S3, its host unknown.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import socket
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..lake import keys
from ..storage.files import utc_now_iso
from .asset_store import sha256_file
from .manifest import BatchManifest

METHODS = ("client", "cli", "hand_drop", "ingest_url", "collection")


def user_name(uid: int | None = None) -> str:
    """The login name of ``uid`` (default: this process's user), or the number when it has no name."""
    uid = os.getuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def staged_by() -> dict[str, str]:
    """``{"host", "user"}`` of this process."""
    return {"host": socket.gethostname(), "user": user_name()}


def list_digest(lines: Iterable[str]) -> str:
    """Hex SHA-256 over the sorted ``lines``, each ended by a newline (independent of listing order)."""
    digest = hashlib.sha256()
    for line in sorted(lines):
        digest.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


def folder_listing(folder: Path) -> list[str]:
    """``<relative path>\\t<size>`` of every regular file under ``folder`` (symbolic links not followed)."""
    lines = []
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(root, name)
            if path.is_file() and not path.is_symlink():
                lines.append(f"{path.relative_to(folder).as_posix()}\t{path.stat().st_size}")
    return lines


def _record(method: str, kind: str, **facts: Any) -> dict[str, Any]:
    if method not in METHODS:
        raise ValueError(f"upload method {method!r} is none of {', '.join(METHODS)}")
    return {"method": method, "kind": kind, **facts, **staged_by(), "staged_at": utc_now_iso()}


def upload_source(origin: Any, method: str, staged_data: Path) -> dict[str, Any]:
    """The source of an upload staged from ``origin`` (a path, or an in-memory table staged as ``staged_data``)."""
    if isinstance(origin, (str, os.PathLike)):
        path = Path(origin).expanduser().resolve()
        if path.is_dir():
            digest = list_digest(folder_listing(path))
            return _record(method, "folder", path=str(path), sha256=digest, digest_of="file list (path, size)")
        return _record(method, "file", path=str(path), sha256=sha256_file(path), bytes=path.stat().st_size)
    return _record(
        method,
        "table",
        path=None,
        sha256=sha256_file(staged_data),
        bytes=staged_data.stat().st_size,
        digest_of="staged data.parquet",
        type=type(origin).__name__,
    )


def url_source(url: str, kind: str, sha256: str, size: int) -> dict[str, Any]:
    """The source of a batch staged from ``url`` by ``ingest-url`` (``kind``: parquet or zip)."""
    return _record("ingest_url", "url", url=url, format=kind, sha256=sha256, bytes=size)


def collection_source(name: str, folder: str | None, files: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The source of a collection upload: ``files`` are ``(source path, sha256)`` of every unit file."""
    digest = list_digest(f"{path}\t{sha}" for path, sha in files)
    return _record(
        "collection", "collection", collection=name, path=folder, sha256=digest, digest_of="files (path, sha256)"
    )


def batch_source(batch_dir: Path, manifest: BatchManifest, local: bool = True) -> dict[str, Any]:
    """The source a processed batch records in its job record: its manifest's, or a hand drop's, computed now
    (a ``source`` its writer put in the hand-written ``_metadata.json`` is kept as ``declared``, unchecked)."""
    given = manifest.source
    if not manifest.hand_drop:
        return dict(given) if isinstance(given, dict) else {"declared": given}
    found = hand_drop_source(batch_dir, keys.pending_batch(manifest.job_id), local)
    return {**found, "declared": given} if given else found


def hand_drop_source(batch_dir: Path, key: str, local: bool) -> dict[str, Any]:
    """The source of a hand drop being processed from ``batch_dir`` (``key``: where it was dropped, lake-relative).

    A ``data.parquet`` is digested whole; a folder of files by its file list. ``local``: the lake is a folder, so
    the owner of ``_metadata.json`` is the user who dropped it."""
    data = batch_dir / "data.parquet"
    claim = {".claim.json"}  # written by the lake when it claims the batch: not the user's
    if data.is_file():
        facts: dict[str, Any] = {"sha256": sha256_file(data), "bytes": data.stat().st_size, "digest_of": "data.parquet"}
    else:
        lines = [ln for ln in folder_listing(batch_dir) if ln.split("\t")[0] not in claim]
        facts = {"sha256": list_digest(lines), "digest_of": "file list (path, size)"}
    manifest = batch_dir / "_metadata.json"
    known = local and manifest.exists()
    user = user_name(manifest.stat().st_uid) if known else None
    staged_at = datetime.fromtimestamp(manifest.stat().st_mtime, timezone.utc).isoformat() if known else None
    return {
        "method": "hand_drop",
        "kind": "folder",
        "path": key,
        **facts,
        "host": None,
        "user": user,
        "staged_at": staged_at,
    }

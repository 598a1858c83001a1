"""Content the lake already holds is never staged, fetched or stored again: the batch names it by SHA-256.

The upload hashes a source while it copies it (the bytes it reads are the bytes it writes, so no extra read)
and asks the lake's hash index, one query per chunk of files. Content the index holds, with every fact a row
needs (:func:`usable_reference`), is not copied into the batch (on S3: not uploaded); every hashed file is
listed in the manifest's ``files`` with its ``sha256``. Processing then looks those hashes up again
(:func:`~.asset_store.known_references`): a hit is a dedup hit that reads no byte, and on S3 a staged file whose
content was published since the upload (an earlier batch of the same run) is not even downloaded.

Trust: a manifest's hash is only ever used to find content the index already holds, so a wrong or forged hash
can only point a row at an asset that is in the lake, under the hash of its own bytes. New content is always
hashed by processing from the staged bytes (:mod:`.asset_store`). A hash whose content has gone from the lake
since (collected, or its asset broken) is stored again from the staged file when there is one; a row whose file
was never staged is then rejected with a reason to upload it again. Hand drops name no hashes.

When to hash: hashing costs a SHA-256 pass over the upload (about a third of a kernel copy here), which a batch
of new content gains nothing from. A lake without an index (nothing ingested) is never probed; otherwise each
chunk is hashed while the last probed chunk had a hit, and after a chunk without one only every
:data:`PROBE_EVERY` th chunk is (new content pays about 1/8 of a SHA-256 pass). On S3 every file is hashed: a
staged object costs a PUT and a GET, a hash only CPU.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

from ..neardup.phash import phash_enabled
from .hash_index import HashIndex, IndexEntry
from .manifest import BatchManifest

PROBE_EVERY = 8
HASH_IN_MEMORY = 16 * 1024 * 1024  # larger sources are hashed in 1 MB reads, then copied in the kernel
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def usable_reference(entry: IndexEntry, kind: str, phash: bool = False) -> bool:
    """Whether a row of a ``kind`` column can take ``entry`` without the file's bytes: an image needs its
    recorded geometry (and its pHash when ``phash`` asks for it, which is computed from the staged bytes)."""
    if kind != "image":
        return True
    complete = entry.kind == "image" and entry.width is not None and entry.height is not None
    return complete and not entry.needs_geometry and (not phash or entry.phash is not None)


class KnownContent:
    """The upload's view of the lake's hash index (``None``: nothing ingested yet) and when to probe it."""

    def __init__(
        self,
        index: HashIndex | None,
        always: bool = False,
        phash: bool | None = None,
        sound: Callable[[list[IndexEntry]], set[str]] | None = None,
    ):
        # sound: which hits' assets are there (the lake's stat or HEAD): an index hit alone is not enough not to
        # stage a file, since processing could not store it again from bytes the batch does not have
        self.index, self.always, self.sound = index, always, sound
        self.phash = phash_enabled() if phash is None else phash  # processing computes a missing pHash
        self._lock = threading.Lock()
        self._chunks = 0
        self._last_hit = True  # the first chunk is probed

    def probe(self) -> bool:
        """Whether the next chunk of files is hashed and looked up (threads: a race only shifts a probe)."""
        if self.index is None:
            return self.always
        with self._lock:
            self._chunks += 1
            return self.always or self._last_hit or self._chunks % PROBE_EVERY == 0

    def lookup(self, hashes: list[str], kind: str) -> set[str]:
        """The hashes whose content the lake holds with what a ``kind`` column needs (one query)."""
        if self.index is None:
            return set()
        found = self.index.get_many(sorted(set(hashes)))
        self._last_hit = bool(found)
        usable = [e for e in found.values() if usable_reference(e, kind, self.phash)]
        return {e.sha256 for e in usable} if self.sound is None or not usable else self.sound(usable)


def hash_source(source: Path) -> tuple[bytes | None, str, int]:
    """``(bytes, sha256, size)`` of a file; the bytes only up to :data:`HASH_IN_MEMORY` (raw reads)."""
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size <= HASH_IN_MEMORY:
            # the fstat's size, as the kernel copy it replaces takes (no read for the EOF); a short read goes on
            data = os.read(fd, size) if size else b""
            if len(data) < size or not size:
                parts = [data]
                while chunk := os.read(fd, 1 << 20):
                    parts.append(chunk)
                data = b"".join(parts)
            return data, hashlib.sha256(data).hexdigest(), len(data)
        digest = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
        return None, digest.hexdigest(), size
    finally:
        os.close(fd)


def write_new(dest: Path, data: bytes) -> int:
    """Write ``data`` to a new file ``dest`` (raw descriptor, as the kernel copy it replaces)."""
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        view, written = memoryview(data), 0
        while written < len(data):
            written += os.write(fd, view[written:])
    finally:
        os.close(fd)
    return len(data)


def manifest_hashes(manifest: BatchManifest) -> dict[str, str]:
    """Batch-relative path -> SHA-256 the upload recorded (none for a hand drop, whose manifest names no files)."""
    if manifest.hand_drop:
        return {}
    found = {}
    for item in manifest.files:
        if isinstance(item, dict) and isinstance(item.get("path"), str) and isinstance(item.get("sha256"), str):
            if SHA256.match(item["sha256"]):
                found[item["path"]] = item["sha256"]
    return found


def known_staged_files(
    manifest: BatchManifest, index: HashIndex, sound: Callable[[list[IndexEntry]], set[str]]
) -> set[str]:
    """The files of a staged batch whose content ``index`` holds with an image's every fact (usable in any
    column; with its pHash while pHashes are computed) and whose asset ``sound`` confirms: an S3 run does not
    download them (a hit whose object went is downloaded and stored again)."""
    hashes = manifest_hashes(manifest)
    found = index.get_many(sorted(set(hashes.values())))
    entries = [e for e in found.values() if usable_reference(e, "image", phash_enabled())]
    usable = sound(entries) if entries else set()
    return {path for path, sha in hashes.items() if sha in usable}

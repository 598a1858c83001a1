"""Reading a folder of loose files fast: one ``os.scandir`` walk, permissions from the mode bits already in
hand, whole-file reads with ``os.read`` and a JSON check with ``raw_decode``.

Measured on 10,000 small JSON files (ms per 10,000): open+read+close 54, ``json.loads`` 40, ``raw_decode``
15, ``decode("utf-8-sig")`` 11 (a Python codec) against ``decode("utf-8")`` 2. So reading, not parsing, is
the expensive part; validation reads with ``os.read`` and parses with ``raw_decode`` plus a whitespace check,
and keeps the text on the unit (it becomes the catalog's JSON column, so nothing is read twice).
"""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path
from stat import S_IRGRP, S_IROTH, S_IRUSR

READ_CHUNK = 64 * 1024
OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in never blocks the walk
EUID = os.geteuid() if hasattr(os, "geteuid") else -1
GROUPS = set(os.getgroups()) if hasattr(os, "getgroups") else set()


def split_ext(rel: str, multi: tuple[str, ...] = ()) -> tuple[str, str]:
    """``("dir/name", ".ext")`` of a relative path; the extension comes from the last path part only."""
    start = rel.rfind("/") + 1
    if multi:
        lower = rel.lower()
        for ext in multi:
            if lower.endswith(ext) and len(rel) - len(ext) > start:
                return rel[: -len(ext)], ext
    dot = rel.rfind(".")
    if dot <= start:
        return rel, ""
    return rel[:dot], rel[dot:].lower()


def nfc(text: str) -> str:
    """Korean names from macOS arrive decomposed (NFD); group them with their composed (NFC) siblings."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def walk_files(folder: Path, skip: frozenset[str] = frozenset()) -> list[tuple[os.DirEntry, str]]:
    """Every non-hidden entry that is not a directory, with its path relative to ``folder`` (posix).

    Folders in ``skip`` (absolute paths, e.g. the lake itself when it lives inside the uploaded folder) are
    not entered.
    """
    found = []
    stack = [(str(folder), "")]
    while stack:
        path, prefix = stack.pop()
        with os.scandir(path) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if entry.path not in skip:
                        stack.append((entry.path, prefix + entry.name + "/"))
                else:
                    found.append((entry, prefix + entry.name))
    return found


def readable(st: os.stat_result) -> bool:
    """Read permission from the mode bits already in hand (no extra syscall); root reads everything."""
    if EUID == 0:
        return True
    if st.st_uid == EUID:
        return bool(st.st_mode & S_IRUSR)
    if st.st_gid in GROUPS:
        return bool(st.st_mode & S_IRGRP)
    return bool(st.st_mode & S_IROTH)


def read_text(path: str) -> bytes:
    """The whole file with ``os.read`` (a right-sized buffer; ``open()`` costs about twice as much)."""
    fd = os.open(path, OPEN_FLAGS)
    try:
        parts = []
        while chunk := os.read(fd, READ_CHUNK):
            parts.append(chunk)
            if len(chunk) < READ_CHUNK:
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)
    finally:
        os.close(fd)


_DECODER = json.JSONDecoder()
_JSON_WS = " \t\n\r"


def check_json(data: bytes) -> str:
    """The text of a JSON document, or ``UnicodeDecodeError``/``ValueError`` (the parser's message).

    ``raw_decode`` plus a whitespace check costs about 40% of ``json.loads`` (measured: 15 ms against 40 ms
    per 10,000 small documents); ``json.loads`` runs only to word the error of a bad document.
    """
    if data[:3] == b"\xef\xbb\xbf":
        data = data[3:]
    text = data.decode("utf-8")  # the C codec; "utf-8-sig" is implemented in Python and 5x slower
    try:
        start = 0 if text[:1] not in _JSON_WS else len(text) - len(text.lstrip(_JSON_WS))
        end = _DECODER.raw_decode(text, start)[1]
        if end == len(text) or not text[end:].strip(_JSON_WS):
            return text
    except ValueError:
        pass
    json.loads(text)  # raises with the canonical message
    raise ValueError("not a JSON document")

"""Every file of a folder accounted for: an image, another file, or skipped with a reason.

A folder upload (``upload_raw_data(folder)``, ``datalake upload --data folder``) and a hand drop into
``staging/pending`` become one row per file:

* **image** (column ``image``): Pillow identifies the file by content. ``Image.open`` reads only the header
  (no pixel is decoded), for every format this Pillow can open and decode: JPEG, PNG, GIF, WebP, TIFF, BMP,
  JPEG 2000, PSD, SGI, PCX, DDS, ICO, TGA, ... (``PIL.Image.OPEN``). Two refinements keep the rule honest:
  formats Pillow only recognises by trying to parse (no signature: TGA, IM, IMT, IPTC, PCD, SPIDER) count only
  with one of their own extensions, and a file that Pillow cannot identify but whose extension names an image
  format stays an image, so a broken image is rejected with its reason instead of being stored as a plain file.
  Formats Pillow identifies but cannot decode here (stubs such as HDF5, GRIB, BUFR, WMF; MPEG; EPS without
  Ghostscript) are other files.
* **other file** (column ``file``): stored content-addressed as a file row (``file``, ``file_sha256``,
  ``file_size``), so nothing is dropped.
* **skipped**, listed with its reason in the batch's staging report: hidden files and folders (a name starting
  with ``.``), special files (FIFOs, sockets, devices), unreadable files, in a folder upload symbolic links to
  folders or to nothing, and in a hand drop the lake's own control files (``error.json``, ...). In a hand drop
  every symbolic link is a row that processing rejects with its reason (it reads only regular files of a batch).

``file_name`` holds the path relative to the folder, Unicode-normalised to NFC (macOS writes NFD, Linux keeps
what it is given), so the same folder dropped twice with differently normalised names adds nothing.
"""

from __future__ import annotations

import json
import os
import stat
import unicodedata
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from PIL import EpsImagePlugin, Image, ImageFile

from ..lake.layout import BATCH_DATA, BATCH_MANIFEST, ERROR_FILE
from . import images  # noqa: F401 - its warning filter and Pillow guard apply to identification too

IMAGE_COLUMN = "image"
FILE_COLUMN = "file"
FILE_NAME_COLUMN = "file_name"
# The lake's own files inside a hand-dropped batch folder (top level only); never rows.
CLAIM_MARKER = ".claim.json"  # the marker queue.claim writes into a claimed batch (queue.CLAIM_MARKER)
CONTROL_FILES = frozenset({BATCH_MANIFEST, BATCH_DATA, ERROR_FILE, "manifest.yaml", CLAIM_MARKER})

Image.init()  # registers every plugin, so OPEN and the extension table are complete


def _undecodable_formats() -> frozenset[str]:
    stubs = {fmt for fmt, (factory, _accept) in Image.OPEN.items() if _is_stub(factory)}
    # MPEG: Pillow reads the header only and has no decoder. EPS needs the Ghostscript binary.
    extra = {"MPEG"} | (set() if EpsImagePlugin.has_ghostscript() else {"EPS"})
    return frozenset(stubs | extra)


def _is_stub(factory: Any) -> bool:
    return isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile)


UNDECODABLE_FORMATS = _undecodable_formats()
# Plugins registered without an ``_accept`` signature test: Pillow tries to parse any file with them.
UNSIGNED_FORMATS = frozenset(fmt for fmt, (_factory, accept) in Image.OPEN.items() if accept is None)
_EXTENSION_FORMATS = {
    ext: fmt
    for ext, fmt in Image.registered_extensions().items()
    if (fmt in Image.OPEN or fmt == "MPO") and fmt not in UNDECODABLE_FORMATS
}
IMAGE_EXTENSIONS = frozenset(_EXTENSION_FORMATS)
"""Extensions of every image format this Pillow can open and decode (``.jpg``, ``.j2k``, ``.sgi``, ...)."""

HAND_DROP_EXTENSIONS = IMAGE_EXTENSIONS  # the former name, kept for importers
OVERSIZED = "OVERSIZED"  # what identify_image says of a header Pillow refuses as a decompression bomb


def identify_image(path: str | os.PathLike) -> str | None:
    """The Pillow format of an image file, identified from its header only, or ``None`` if it is not one.

    A header that Pillow refuses as a decompression bomb is still an image (the pixel limit rejects it
    later, with its reason). Raises ``OSError`` only when the file cannot be opened at all.
    """
    with open(path, "rb") as fh:
        try:
            with Image.open(fh) as im:  # images.py silences Pillow's size warning: sizes are judged per file later
                fmt, stub = im.format, isinstance(im, ImageFile.StubImageFile)
        except Image.DecompressionBombError:
            return OVERSIZED
        except Exception:  # noqa: BLE001 - any plugin may raise anything on foreign data: not an image
            return None
    if fmt is None or stub or fmt in UNDECODABLE_FORMATS:
        return None
    if fmt in UNSIGNED_FORMATS and _EXTENSION_FORMATS.get(Path(path).suffix.lower()) != fmt:
        return None
    return fmt


def is_image_file(path: str | os.PathLike) -> bool:
    """True if Pillow identifies the file as an image, or it cannot and the extension names an image format."""
    return identify_image(path) is not None or Path(path).suffix.lower() in IMAGE_EXTENSIONS


def display_name(rel: str) -> str:
    """``rel`` printable and JSON-safe: a name that is not valid UTF-8 shows its undecodable bytes escaped."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def is_utf8_name(rel: str) -> bool:
    """False for a name ``os.fsdecode`` could only decode with lone surrogates (bytes that are not UTF-8)."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_lake_claim_marker(path: Path) -> bool:
    """True when ``path`` is the claim marker the lake writes (a JSON object with ``job_id`` and ``run_key``,
    see queue.write_claim), not a user's file of the same name."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 64 * 1024:
            return False
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and {"job_id", "run_key"} <= set(doc)


def nfc(name: str) -> str:
    """``name`` in Unicode normalisation form C (the identity of a file name the lake derives)."""
    return unicodedata.normalize("NFC", name)


@dataclass
class FolderScan:
    """The files of one folder, sorted by path: images, other files and skipped entries with reasons."""

    images: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def table(self) -> pa.Table:
        """One row per image or other file: ``image`` | ``file`` (the path, the other null), ``file_name`` (NFC)."""
        rows = sorted([(p, True) for p in self.images] + [(p, False) for p in self.others])
        return pa.table(
            {
                IMAGE_COLUMN: pa.array([p if is_img else None for p, is_img in rows], pa.string()),
                FILE_COLUMN: pa.array([None if is_img else p for p, is_img in rows], pa.string()),
                FILE_NAME_COLUMN: pa.array([nfc(p) for p, _ in rows], pa.string()),
            }
        )

    @property
    def skipped_count(self) -> int:
        return sum(int(s.get("files", 1)) for s in self.skipped)

    def report(self) -> dict[str, Any]:
        """The staging report's file accounting: counts and every skipped entry with its reason."""
        return {
            "images": len(self.images),
            "other_files": len(self.others),
            "skipped_count": self.skipped_count,
            "skipped": self.skipped,
        }


def scan_folder(folder: Path, hand_drop: bool = False, workers: int = 4) -> FolderScan:
    """Walk ``folder`` without following symlinked folders and sort every entry into a :class:`FolderScan`.

    ``hand_drop=True`` leaves out the lake's control files at the top level (``_metadata.json`` unlisted, the
    others listed as skipped) and makes a symbolic link to a file an image row without reading it (processing
    reads only regular files of a batch, so it rejects the row with its reason and keeps it in the quarantine);
    a client folder upload follows symbolic links to files, since the user chose them. Identification runs
    on ``workers`` threads; each file costs one ``open`` and a header parse.
    """
    scan = FolderScan()
    candidates: list[str] = []
    stack = [("", Path(folder))]
    while stack:
        prefix, current = stack.pop()
        with os.scandir(current) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                rel = f"{prefix}{entry.name}"
                reason = _skip_reason(entry, rel, hand_drop)
                if reason == "":
                    continue
                if reason is None and entry.is_dir(follow_symlinks=False):
                    stack.append((f"{rel}/", Path(entry.path)))
                elif reason is None:
                    candidates.append(rel)
                elif reason.startswith("hidden folder") or (
                    reason.startswith("the file name") and entry.is_dir(follow_symlinks=False)
                ):
                    scan.skipped.append(
                        {"path": f"{display_name(rel)}/", "reason": reason, "files": _count_files(entry.path)}
                    )
                else:
                    scan.skipped.append({"path": display_name(rel), "reason": reason})

    def classify(rel: str) -> tuple[str, str | None]:
        if hand_drop and os.path.islink(os.path.join(folder, rel)):
            return rel, "image"  # never read through: processing rejects it with its reason
        try:
            return rel, "image" if is_image_file(os.path.join(folder, rel)) else "file"
        except OSError as exc:
            return rel, f"cannot read the file: {exc.strerror or exc}"

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for rel, kind in pool.map(classify, candidates):
            if kind == "image":
                scan.images.append(rel)
            elif kind == "file":
                scan.others.append(rel)
            else:
                scan.skipped.append({"path": rel, "reason": kind})
    scan.images.sort()
    scan.others.sort()
    scan.skipped.sort(key=lambda s: s["path"])
    return scan


def _skip_reason(entry: os.DirEntry, rel: str, hand_drop: bool) -> str | None:
    """Why ``entry`` is no row (``""``: not even listed), or ``None`` when it is a file or folder to scan."""
    top = "/" not in rel
    if not is_utf8_name(rel):
        return f"the file name is not valid UTF-8: {os.fsencode(rel)!r} (not uploaded)"
    if hand_drop and top and entry.name == CLAIM_MARKER:
        if is_lake_claim_marker(Path(entry.path)):
            return ""
        return "a user file named like the lake's claim marker (not uploaded)"
    if hand_drop and top and entry.name in CONTROL_FILES:
        return "" if entry.name == BATCH_MANIFEST else "named like a control file of the lake (not uploaded)"
    try:
        mode = entry.stat(follow_symlinks=False).st_mode
    except OSError as exc:
        return f"cannot read the entry: {exc.strerror or exc}"
    if entry.name.startswith("."):
        return "hidden folder (not uploaded)" if stat.S_ISDIR(mode) else "hidden file (not uploaded)"
    if stat.S_ISLNK(mode):
        if hand_drop:  # a row that processing rejects (it reads regular files only), kept in the quarantine
            return None
        try:
            target = os.stat(entry.path).st_mode
        except OSError:
            return "broken symbolic link"
        if stat.S_ISDIR(target):
            return "symbolic link to a folder (not followed)"
        mode = target
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        return None
    return "not a regular file (FIFO, socket or device)"


def _count_files(path: str) -> int:
    return sum(len(files) for _root, _dirs, files in os.walk(path))


def hand_drop_table(batch_dir: Path, workers: int = 4) -> pa.Table:
    """Rows for a hand-dropped folder: see :func:`scan_folder` and :meth:`FolderScan.table`."""
    return scan_folder(batch_dir, hand_drop=True, workers=workers).table()


def walk_files(folder: Path) -> Iterator[tuple[str, os.DirEntry]]:
    """Yield ``(relative posix path, os.DirEntry)`` for every entry under ``folder`` that is not a folder
    (regular files, symlinks, FIFOs, ...); symlinked folders are not entered. Order is not defined."""
    stack = [("", folder)]
    while stack:
        prefix, current = stack.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                rel = f"{prefix}{entry.name}"
                if entry.is_dir(follow_symlinks=False):
                    stack.append((f"{rel}/", Path(entry.path)))
                else:
                    yield rel, entry


def regular_files(folder: Path) -> set[str]:
    """Relative paths of the regular files under ``folder``; symlinks (to files or folders) are left out."""
    return {rel for rel, entry in walk_files(folder) if entry.is_file(follow_symlinks=False)}

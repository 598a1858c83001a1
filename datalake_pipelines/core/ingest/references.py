"""Which staged file a row's file reference names: the one rule shared by processing and chunk planning.

A reference is resolved against the batch's regular files (reached without symlinks): ``imgs\\a.png`` like
``imgs/a.png``, an NFC reference to an NFD file name (or the reverse), ``./files/a.jpg``; anything else that
stays inside the batch but is not one of its files is missing, and a path leaving the batch is refused.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

    from .manifest import BatchManifest

from ..storage.files import UnsafePathError, safe_join


class BatchFiles:
    """The files of one staged batch (relative paths) and how a reference resolves to one of them."""

    def __init__(self, batch_dir: Path, files: set[str]):
        self.batch_dir = batch_dir
        self.files = files
        self._by_nfc: dict[str, str] | None = None  # built on first need: most batches never ask

    def resolve(self, value: str) -> tuple[str | None, str | None]:
        """``(relative path, None)`` for a reference to a batch file, else ``(None, why not)``."""
        files = self.files
        if "\\" in value and value not in files:  # imgs\a.png: resolved like imgs/a.png
            value = value.replace("\\", "/")
        if value not in files:  # an NFC reference to an NFD file name, or the reverse
            value = self._nfc().get(unicodedata.normalize("NFC", value), value)
        if value in files:  # a regular file inside the batch, reached without symlinks
            return value, None
        try:
            rel = os.path.relpath(safe_join(self.batch_dir, value), self.batch_dir)
        except UnsafePathError as exc:
            return None, str(exc)
        if rel in files:  # e.g. "./files/a.jpg"
            return rel, None
        return None, f"file {value!r} is missing from the batch"

    def _nfc(self) -> dict[str, str]:
        if self._by_nfc is None:
            self._by_nfc = {unicodedata.normalize("NFC", f): f for f in self.files}
        return self._by_nfc


def absent_files(batch_dir: Path, files: BatchFiles, tables: list[pa.Table], manifest: BatchManifest) -> list[str]:
    """The batch files the rows of ``tables`` reference that ``batch_dir`` does not hold (an S3 work lake leaves
    out what the run's chunks stored)."""
    wanted = set()
    for table in tables:
        for col in manifest.image_columns + manifest.file_columns:
            for value in table.column(col).to_pylist():
                rel = files.resolve(value)[0] if isinstance(value, str) else None
                if rel is not None and not os.path.lexists(batch_dir / rel):
                    wanted.add(rel)
    return sorted(wanted)

"""Which staged file a row's file reference names: the one rule shared by processing and chunk planning.

A reference is resolved against the batch's regular files (reached without symlinks): ``imgs\\a.png`` like
``imgs/a.png``, an NFC reference to an NFD file name (or the reverse), ``./files/a.jpg``; anything else that
stays inside the batch but is not one of its files is missing, and a path leaving the batch is refused.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

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

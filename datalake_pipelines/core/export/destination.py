"""Where an export is written: a local folder or ``s3://bucket/prefix``, both complete-or-absent.

Both write the export into a private local folder first (beside the result locally; in the cache folder
``$DATALAKE_CACHE_DIR`` for S3), then publish it:

- local: ``os.rename`` of ``<destination>/.<name>.tmp-*`` onto ``<destination>/<name>/``;
- S3: every file uploaded with boto3's managed transfer (:func:`..storage.transfer.upload_file_to_s3`,
  multipart for big files) to ``<destination>/<name>/``, ``export.json`` last. A reader that sees
  ``export.json`` sees a complete export; a failed publish deletes what it uploaded. The scratch folder is
  removed either way.

:func:`open_destination` opens the one that :data:`DESTINATIONS` gives for the destination's kind of storage, as
:func:`..storage.backends.storage_kind` tells it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Protocol

from ..storage.backends import StorageKind, storage_kind
from .errors import UNWRITABLE_DESTINATION, ExportError

MANIFEST = "export.json"


class Destination(Protocol):
    def start(self, name: str) -> Path:
        """A new empty local folder to write the export ``name`` into (``ExportError`` if ``name`` exists)."""
        ...

    def publish(self, tmp: Path, name: str) -> str:
        """Make the folder written by :meth:`start` the export ``name``; return its path or URI."""
        ...

    def discard(self, tmp: Path) -> None:
        """Remove the folder written by :meth:`start` after a failure."""
        ...


class LocalDestination:
    @staticmethod
    def normalize(destination: str) -> str:
        return str(Path(destination).expanduser().resolve())

    def __init__(self, destination: str):
        folder = Path(self.normalize(destination))
        if folder.exists() and not folder.is_dir():
            raise ExportError(UNWRITABLE_DESTINATION, f"{folder} exists and is not a folder")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExportError(UNWRITABLE_DESTINATION, f"cannot create {folder}: {exc.strerror or exc}") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ExportError(UNWRITABLE_DESTINATION, f"{folder} is not writable")
        self.folder = folder

    def start(self, name: str) -> Path:
        if (self.folder / name).exists():
            raise ExportError(UNWRITABLE_DESTINATION, f"{self.folder / name} already exists")
        tmp = self.folder / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir()
        except OSError as exc:
            message = f"cannot write into {self.folder}: {exc.strerror or exc}"
            raise ExportError(UNWRITABLE_DESTINATION, message) from None
        return tmp

    def publish(self, tmp: Path, name: str) -> str:
        final = self.folder / name
        tmp.rename(final)
        return str(final)

    def discard(self, tmp: Path) -> None:
        shutil.rmtree(tmp, ignore_errors=True)


class S3Destination:
    @staticmethod
    def normalize(destination: str) -> str:
        return destination.rstrip("/")

    def __init__(self, uri: str):
        from botocore.exceptions import BotoCoreError, ClientError

        from ..storage.backends import S3Storage, cache_dir_for

        try:
            self.storage = S3Storage(uri)
            self.storage.client.head_bucket(Bucket=self.storage.bucket)
        except (ValueError, ClientError, BotoCoreError) as exc:
            raise ExportError(UNWRITABLE_DESTINATION, f"{uri}: cannot write there: {exc}") from None
        self.uri = self.storage.uri
        self.scratch = cache_dir_for(self.uri) / "exports"

    def start(self, name: str) -> Path:
        if next(iter(self.storage.list(name)), None) is not None:
            raise ExportError(UNWRITABLE_DESTINATION, f"{self.uri}/{name} already exists")
        self.scratch.mkdir(parents=True, exist_ok=True)
        tmp = self.scratch / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        return tmp

    def publish(self, tmp: Path, name: str) -> str:
        from ..storage.transfer import upload_file_to_s3

        files = sorted((p for p in tmp.rglob("*") if p.is_file()), key=lambda p: p.name == MANIFEST)  # last
        keys: list[str] = []
        try:
            for path in files:
                key = f"{name}/{path.relative_to(tmp).as_posix()}"
                keys.append(key)
                upload_file_to_s3(path, f"{self.uri}/{key}", progress=False, client=self.storage.client)
        except BaseException:
            manifest = f"{name}/{MANIFEST}"
            self.storage.delete([k for k in keys if k == manifest])  # first: never a complete-looking half
            self.storage.delete([k for k in keys if k != manifest])
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return f"{self.uri}/{name}"

    def discard(self, tmp: Path) -> None:
        shutil.rmtree(tmp, ignore_errors=True)


def open_destination(destination: str | os.PathLike) -> Destination:
    """The destination of an export: ``s3://bucket/prefix`` or a local folder (created if needed).

    Raises :class:`ExportError` ``UNWRITABLE_DESTINATION`` when it cannot be written (not a folder, not
    writable, no such bucket or no access)."""
    return DESTINATIONS[storage_kind(destination)](str(destination))


def normalize_destination(destination: str | os.PathLike) -> str:
    """An absolute folder path, or the ``s3://`` URI without a trailing ``/``."""
    return DESTINATIONS[storage_kind(destination)].normalize(str(destination))


# by the kind of storage the destination is on (``storage.backends`` tells)
DESTINATIONS: dict[StorageKind, type[LocalDestination] | type[S3Destination]] = {
    "local": LocalDestination,
    "s3": S3Destination,
}

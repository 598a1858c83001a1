"""Where a batch staged from a URL is written: straight into a lake's staging, piece by piece, published whole.

A lake hands out its sink (``Lake.batch_sink(job_id)``), so the stager never asks where bytes live:

* :class:`S3BatchSink`: objects under ``staging/pending/<job>/`` (a zip under ``staging/incoming/``, outside
  ``pending/``, so never claimed), streamed up part by part and read back with range requests; the batch is
  complete once ``_metadata.json`` (written last by the caller) exists.
* :class:`LocalBatchSink`: files in ``staging/pending/.tmp-<job>`` on the lake's own disk, renamed into place
  by :meth:`~LocalBatchSink.publish`.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from tqdm import tqdm

from ..errors import ValidationError
from ..lake import keys
from ..lake.batches import JOB_ID_USED, check_job_id_free
from ..lake.layout import BATCH_MANIFEST
from ..storage.backends import LocalStorage, S3Storage
from ..storage.transfer import MiB, TransferError, TransferSettings

if TYPE_CHECKING:
    from ..lake.local import LocalLake
    from ..lake.s3 import S3Lake

log = logging.getLogger(__name__)

INCOMING = keys.INCOMING


class BatchSink:
    """A batch being written: ``storage`` keys under ``batch``; the zip (if any) at ``zip_name``.

    Names are relative to the batch (``data.parquet``, ``files/a.jpg``), or the ``zip_name`` itself. A
    subclass provides the backend's steps: :meth:`check_free`, :meth:`fetch`, :meth:`put`, :meth:`publish`,
    :meth:`discard`.
    """

    storage: LocalStorage | S3Storage
    batch: str
    zip_name: str

    def check_free(self) -> None:
        """Claim the job id for this batch; ``ValidationError`` when the lake already uses it."""
        raise NotImplementedError

    def fetch(self, url: str, name: str, settings: TransferSettings, progress: bool) -> dict[str, Any]:
        """Stream ``url`` into ``name``; return ``{"bytes": int, "sha256": hex}`` (``TransferError`` on failure)."""
        raise NotImplementedError

    def put(self, name: str, src: BinaryIO, size: int, settings: TransferSettings) -> None:
        """Write the stream ``src`` (``size`` bytes) to ``name`` in bounded memory (a part or a buffer at a time)."""
        raise NotImplementedError

    def publish(self) -> str:
        """Make the complete batch pending; return where it is (path or URI)."""
        raise NotImplementedError

    def discard(self) -> None:
        """Remove everything written for the batch (after a failure)."""
        raise NotImplementedError

    def key(self, name: str) -> str:
        return name if name.startswith(INCOMING + "/") else f"{self.batch}/{name}"

    def open(self, name: str):
        fs, root = self.storage.arrow()
        return fs.open_input_file(f"{root}/{self.key(name)}")

    def write(self, name: str, data: bytes) -> None:
        self.storage.write_bytes(self.key(name), data)

    def tidy(self) -> None:
        """After success: drop what is no longer needed (best effort)."""


class S3BatchSink(BatchSink):
    storage: S3Storage

    def __init__(self, lake: S3Lake, job_id: str):
        self.lake = lake
        self.storage, self.job_id = lake.storage, job_id
        self.batch, self.zip_name = keys.pending_batch(job_id), keys.incoming_zip(job_id)

    def check_free(self) -> None:
        check_job_id_free(self.storage, self.job_id)

    def _full(self, name: str) -> str:
        key = self.key(name)
        return f"{self.storage.prefix}/{key}" if self.storage.prefix else key

    def fetch(self, url: str, name: str, settings: TransferSettings, progress: bool) -> dict[str, Any]:
        from ..storage.url_stream import stream_url_to_s3  # S3 only: botocore stays unloaded for a local lake

        return stream_url_to_s3(url, f"s3://{self.storage.bucket}/{self._full(name)}", settings, progress=progress)

    def put(self, name: str, src: BinaryIO, size: int, settings: TransferSettings) -> None:
        """Upload a stream: one put if it fits a part, else a multipart upload of one part at a time."""
        client, bucket, key = self.storage.client, self.storage.bucket, self._full(name)
        part_size = settings.part_size_for(size)
        data = src.read(part_size)
        if len(data) < part_size:
            client.put_object(Bucket=bucket, Key=key, Body=data)
            return
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        parts: list[dict[str, Any]] = []
        try:
            while data:
                number = len(parts) + 1
                etag = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data)
                parts.append({"PartNumber": number, "ETag": etag["ETag"]})
                del data  # free the part before reading the next one
                data = src.read(part_size)
            client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(Exception):  # the original error matters more
                client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise

    def publish(self) -> str:
        return self.lake.uri_of(self.batch)

    def discard(self) -> None:
        """Delete everything staged for the job (manifest first, so it never looks complete)."""
        keys = [o.key for o in self.storage.list(self.batch)]
        manifest = f"{self.batch}/{BATCH_MANIFEST}"
        self.storage.delete([k for k in keys if k == manifest])
        self.storage.delete([k for k in keys if k != manifest] + [self.zip_name])

    def tidy(self) -> None:
        try:
            self.storage.delete([self.zip_name])
        except Exception as exc:  # noqa: BLE001 - the batch is staged; a lifecycle rule can clean up
            log.warning("could not delete %s: %s", self.lake.uri_of(self.zip_name), exc)


class LocalBatchSink(BatchSink):
    def __init__(self, lake: LocalLake, job_id: str):
        self.layout = lake.layout
        self.storage, self.job_id = lake.storage, job_id
        self.tmp = self.layout.pending_temp(job_id)
        self.batch, self.zip_name = self.tmp.relative_to(self.layout.base).as_posix(), ".source.zip"

    def check_free(self) -> None:
        check_job_id_free(self.storage, self.job_id)
        try:
            self.tmp.mkdir()  # claims the name: a concurrent stager with the same job id fails here
        except FileExistsError:
            raise ValidationError(JOB_ID_USED.format(job_id=self.job_id)) from None

    def fetch(self, url: str, name: str, settings: TransferSettings, progress: bool) -> dict[str, Any]:
        return download(url, self.tmp / name, progress=progress)

    def put(self, name: str, src: BinaryIO, size: int, settings: TransferSettings) -> None:
        dest = self.tmp / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(dest, "xb") as out:
                shutil.copyfileobj(src, out, MiB)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise

    def publish(self) -> str:
        (self.tmp / self.zip_name).unlink(missing_ok=True)
        final = self.layout.pending_batch(self.job_id)
        os.rename(self.tmp, final)
        return str(final)

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def download(url: str, dest: Path, progress: bool = False, timeout: float = 60) -> dict[str, Any]:
    """Stream ``url`` into ``dest`` 1 MiB at a time; return its bytes and sha256 (``TransferError`` on failure)."""
    try:
        resp = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - http(s) URLs from the caller
    except urllib.error.HTTPError as exc:
        raise TransferError(f"GET {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise TransferError(f"GET {url} failed: {exc}") from exc
    digest, nbytes = hashlib.sha256(), 0
    length = resp.headers.get("Content-Length")
    size = int(length) if length and length.isdigit() else None
    try:
        with (
            resp,
            open(dest, "wb") as out,
            tqdm(total=size, unit="B", unit_scale=True, disable=not progress, leave=False, desc=dest.name) as bar,
        ):
            while chunk := resp.read(MiB):
                digest.update(chunk)
                out.write(chunk)
                nbytes += len(chunk)
                bar.update(len(chunk))
    except (OSError, http.client.HTTPException) as exc:
        raise TransferError(f"reading {url} failed after {nbytes} bytes: {exc}") from exc
    if size is not None and nbytes != size:
        raise TransferError(f"{url} ended after {nbytes} of {size} bytes (Content-Length)")
    return {"bytes": nbytes, "sha256": digest.hexdigest()}

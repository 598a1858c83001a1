"""Move large bodies into S3: local files through boto3's managed transfer, URLs streamed part by part.

``upload_file_to_s3`` hands a (seekable) file to boto3 ``upload_fileobj``, which already uploads parts
concurrently, retries each request through botocore and aborts the multipart upload when it fails.

``stream_url_to_s3`` is hand-written on purpose. boto3 *can* take a non-seekable HTTP response
(s3transfer's ``UploadNonSeekableInputManager``), but for this job it falls short:

* it first reads ``multipart_threshold`` bytes (100 MB here) into memory to decide between a single put
  and multipart, then keeps up to ``max_in_memory_upload_chunks`` (10, not a boto3 ``TransferConfig``
  argument) parts in memory, so memory is about threshold + 10 x part instead of part x (concurrency + 2);
* once a part has failed, its submission loop still reads the source to EOF before raising (tasks
  become no-ops, the reads do not stop), so a failed 2 GB transfer downloads 2 GB for nothing;
* it cannot tell how many parts had been uploaded when it gave up, and it has no Content-Length to
  size parts from (we read it from the response and choose the part size ourselves).

So the stream path reads parts into a bounded queue, hashes them (sha256 of the whole body), and lets
``max_concurrency`` threads upload them with per-part exponential backoff + jitter; any final failure
aborts the multipart upload so no orphaned parts remain.
"""

from __future__ import annotations

import hashlib
import io
import math
import queue
import random
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import boto3
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from tqdm import tqdm

from ...settings import load as load_settings

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * 1024 * MiB
MAX_PARTS = 10_000
MAX_OBJECT_SIZE = 5 * 1024 * 1024 * MiB
TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "RequestLimitExceeded",
    "TooManyRequestsException",
}


class TransferError(Exception):
    """A transfer failed for good; the message says how far it got."""


def s3_client(
    endpoint_url: str | None = None,
    max_attempts: int = 5,
    retry_mode: str = "standard",
    connect_timeout: float = 10,
    read_timeout: float = 120,
):
    """An S3 client from the standard AWS environment, with botocore retries and timeouts."""
    endpoint_url = endpoint_url or load_settings().aws_endpoint_url
    # botocore's "max_attempts" counts retries only; "total_max_attempts" includes the first request.
    config = Config(
        retries={"mode": retry_mode, "total_max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=32,
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url or None, config=config)


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into ``(bucket, key)``."""
    if not isinstance(url, str) or not url.startswith("s3://"):
        raise ValueError(f"not an S3 URL (expected s3://bucket/key): {url!r}")
    bucket, _, key = url[5:].partition("/")
    if not bucket or not key:
        raise ValueError(f"S3 URL needs both a bucket and a key: {url!r}")
    return bucket, key


@dataclass
class TransferSettings:
    """Knobs of a transfer; backoff_* apply to the hand-written per-part retries."""

    multipart_threshold: int = 100 * MiB
    part_size: int = 16 * MiB
    max_concurrency: int = 4
    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 20.0

    def part_size_for(self, total_size: int | None) -> int:
        """The part size to use for ``total_size`` bytes: >= 5 MiB and at most 10,000 parts."""
        part = max(self.part_size, MIN_PART_SIZE)
        if total_size:
            if total_size > MAX_OBJECT_SIZE:
                raise ValueError(f"{total_size} bytes exceeds the S3 object limit of 5 TiB")
            part = max(part, math.ceil(total_size / MAX_PARTS / MiB) * MiB)
        return min(part, MAX_PART_SIZE)


def _progress_bar(total: int | None, enabled: bool, desc: str) -> tqdm:
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=not enabled, desc=desc, leave=False)


def _result(bucket, key, nbytes, sha256, parts, etag, started) -> dict:
    seconds = time.monotonic() - started
    return {
        "s3_url": f"s3://{bucket}/{key}",
        "bytes": nbytes,
        "sha256": sha256,
        "parts": parts,
        "etag": etag,
        "seconds": round(seconds, 3),
        "mb_per_s": round(nbytes / MiB / seconds, 2) if seconds > 0 else None,
    }


class _HashingReader(io.RawIOBase):
    """A binary file seen from ``start``; hashes bytes the first time they are read in order.

    boto3 may re-read (retries, checksums); re-read bytes are not hashed twice, and a skipped range
    marks the digest unusable so the caller falls back to hashing the file again.
    """

    def __init__(self, raw: BinaryIO, start: int = 0):
        self._raw, self._start = raw, start
        self._digest, self._hashed, self.sequential = hashlib.sha256(), 0, True

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=io.SEEK_SET):
        base = self._start if whence == io.SEEK_SET else 0
        return self._raw.seek(base + offset, whence) - self._start

    def tell(self):
        return self._raw.tell() - self._start

    def read(self, size=-1):
        pos = self.tell()
        data = self._raw.read(size)
        end = pos + len(data)
        if pos > self._hashed:
            self.sequential = False
        elif end > self._hashed:
            self._digest.update(memoryview(data)[self._hashed - pos :])
            self._hashed = end
        return data

    def hexdigest(self, size: int) -> str | None:
        return self._digest.hexdigest() if self.sequential and self._hashed == size else None


def upload_file_to_s3(
    path_or_fileobj, s3_url: str, settings: TransferSettings | None = None, progress: bool = True, client=None
) -> dict:
    """Upload a local file (path or seekable binary file) with boto3's managed transfer."""
    settings = settings or TransferSettings()
    bucket, key = parse_s3_url(s3_url)
    client = client or s3_client(max_attempts=settings.max_attempts)
    owned = isinstance(path_or_fileobj, (str, Path))
    fh = open(path_or_fileobj, "rb") if owned else path_or_fileobj
    started = time.monotonic()
    try:
        start_pos = fh.tell()
        size = fh.seek(0, io.SEEK_END) - start_pos
        fh.seek(start_pos)
        config = TransferConfig(
            multipart_threshold=settings.multipart_threshold,
            multipart_chunksize=settings.part_size_for(size),
            max_concurrency=settings.max_concurrency,
            preferred_transfer_client="classic",
        )
        reader = _HashingReader(fh, start_pos)
        with _progress_bar(size, progress, key) as bar:
            try:
                client.upload_fileobj(reader, bucket, key, Config=config, Callback=bar.update)
            except Exception as exc:
                raise TransferError(f"upload of {size} bytes to {s3_url} failed: {exc}") from exc
        sha256 = reader.hexdigest(size) or _sha256_of(fh, start_pos)
        head = client.head_object(Bucket=bucket, Key=key)
    finally:
        if owned:
            fh.close()
    if head["ContentLength"] != size:
        raise TransferError(f"{s3_url} has {head['ContentLength']} bytes, expected {size}")
    etag = head["ETag"].strip('"')
    parts = int(etag.rsplit("-", 1)[1]) if "-" in etag else 1
    return _result(bucket, key, size, sha256, parts, etag, started)


def _sha256_of(fh: BinaryIO, start: int) -> str:
    digest = hashlib.sha256()
    fh.seek(start)
    while chunk := fh.read(8 * MiB):
        digest.update(chunk)
    return digest.hexdigest()


def _is_transient(exc: BaseException) -> bool:
    if isinstance(
        exc, (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError, TimeoutError, ConnectionError)
    ):
        return True
    if isinstance(exc, botocore.exceptions.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return exc.response.get("Error", {}).get("Code") in TRANSIENT_CODES or status >= 500 or status == 429
    return False


def _with_retries(settings: TransferSettings, stop: threading.Event, call, *args, **kwargs):
    """Call ``call`` and retry transient errors with exponential backoff and jitter."""
    for attempt in range(1, settings.max_attempts + 1):
        try:
            return call(*args, **kwargs)
        except Exception as exc:
            if attempt == settings.max_attempts or not _is_transient(exc) or stop.is_set():
                raise
            cap = min(settings.backoff_max, settings.backoff_base * 2 ** (attempt - 1))
            stop.wait(cap / 2 + random.uniform(0, cap / 2))


def _open_url(url: str, timeout: float):
    try:
        return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - http(s) URLs from the caller
    except urllib.error.HTTPError as exc:
        raise TransferError(f"GET {url} failed: HTTP {exc.code} {exc.reason}; nothing uploaded") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise TransferError(f"GET {url} failed: {exc}; nothing uploaded") from exc


def _read_part(resp, size: int) -> bytes:
    """Read up to ``size`` bytes (fewer only at end of body)."""
    data = resp.read(size)
    if len(data) < size and data:
        pieces, got = [data], len(data)
        while got < size and (more := resp.read(size - got)):
            pieces.append(more)
            got += len(more)
        data = b"".join(pieces)
    return data


class _Uploads:
    """Shared state of the part uploaders: done parts, counters, the first failure."""

    def __init__(self):
        self.lock, self.etags, self.bytes, self.error = threading.Lock(), {}, 0, None
        self.stop = threading.Event()

    def fail(self, exc: BaseException):
        with self.lock:
            self.error = self.error or exc
        self.stop.set()


def stream_url_to_s3(
    url: str,
    s3_url: str,
    settings: TransferSettings | None = None,
    progress: bool = True,
    expected_size: int | None = None,
    client=None,
    timeout: float = 60,
) -> dict:
    """Download ``url`` and upload it to ``s3_url`` part by part from memory, never touching disk.

    Memory stays near part_size x (max_concurrency + 2). Raises ``TransferError`` (after aborting the
    multipart upload) with the bytes and parts uploaded so far.
    """
    settings = settings or TransferSettings()
    bucket, key = parse_s3_url(s3_url)
    # botocore does one attempt per call; _with_retries owns the retries and their backoff.
    client = client or s3_client(max_attempts=1)
    started = time.monotonic()
    resp = _open_url(url, timeout)
    with resp:
        length = resp.headers.get("Content-Length")
        size = int(length) if length is not None and length.isdigit() else None
        if size is not None and expected_size is not None and size != expected_size:
            raise TransferError(f"{url} announces {size} bytes, expected {expected_size}; nothing uploaded")
        size = size if size is not None else expected_size
        part_size = settings.part_size_for(size)
        digest = hashlib.sha256()
        first: bytes | None  # dropped to None once handed to _pump
        try:
            first = _read_part(resp, part_size)
        except Exception as exc:
            raise TransferError(f"reading {url} failed before any upload: {exc}") from exc
        digest.update(first)
        with _progress_bar(size, progress, key) as bar:
            if len(first) < part_size:
                _check_size(url, len(first), size, expected_size, "nothing uploaded")
                try:
                    etag = _with_retries(
                        settings, threading.Event(), client.put_object, Bucket=bucket, Key=key, Body=first
                    )["ETag"].strip('"')
                except Exception as exc:
                    raise TransferError(f"put_object of {len(first)} bytes to {s3_url} failed: {exc}") from exc
                bar.update(len(first))
                return _result(bucket, key, len(first), digest.hexdigest(), 1, etag, started)
            head, first = [first], None  # _pump pops it, so no frame keeps the first part alive
            try:
                upload_id = _with_retries(
                    settings, threading.Event(), client.create_multipart_upload, Bucket=bucket, Key=key
                )["UploadId"]
            except Exception as exc:
                raise TransferError(f"cannot start a multipart upload to {s3_url}: {exc}") from exc
            state = _Uploads()
            try:
                nbytes, parts = _pump(
                    resp, head, digest, client, bucket, key, upload_id, part_size, size, settings, state, bar, url
                )
                _check_size(url, nbytes, size, expected_size, _progress_note(state, nbytes))
                etag = _with_retries(
                    settings,
                    state.stop,
                    client.complete_multipart_upload,
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": [{"PartNumber": n, "ETag": state.etags[n]} for n in range(1, parts + 1)]},
                )["ETag"].strip('"')
            except BaseException as exc:
                _abort(client, bucket, key, upload_id, settings)
                if isinstance(exc, TransferError) or not isinstance(exc, Exception):
                    raise
                raise TransferError(
                    f"streaming {url} to {s3_url} failed ({_progress_note(state)}): {type(exc).__name__}: {exc}"
                ) from exc
    return _result(bucket, key, nbytes, digest.hexdigest(), parts, etag, started)


def _pump(resp, head, digest, client, bucket, key, upload_id, part_size, size, settings, state, bar, url):
    """Feed parts into a bounded queue consumed by ``max_concurrency`` uploader threads."""
    work: queue.Queue = queue.Queue(maxsize=1)

    def uploader():
        while (item := work.get()) is not None:
            number, data = item
            if state.stop.is_set():
                continue
            try:
                etag = _with_retries(settings, state.stop, _upload_part, client, bucket, key, upload_id, number, data)
            except BaseException as exc:  # noqa: B036 - recorded and re-raised by the caller
                state.fail(exc)
                continue
            with state.lock:
                state.etags[number] = etag
                state.bytes += len(data)
                bar.update(len(data))

    threads = [
        threading.Thread(target=uploader, daemon=True, name=f"s3-part-{i}") for i in range(settings.max_concurrency)
    ]
    for thread in threads:
        thread.start()
    nbytes, number, data = 0, 0, head.pop()
    try:
        while data and not state.stop.is_set():
            number += 1
            if number > MAX_PARTS:
                raise TransferError(
                    f"{url} needs more than {MAX_PARTS} parts of {part_size} bytes; "
                    f"pass expected_size or a larger part_size ({_progress_note(state)})"
                )
            nbytes += len(data)
            work.put((number, data))
            data = None  # drop our reference so memory is freed once the part is uploaded
            data = _read_part(resp, part_size)
            digest.update(data)
            if len(data) < part_size and size is not None and nbytes + len(data) != size:
                nbytes += len(data)  # the body ended early: upload nothing more, the caller reports it
                state.stop.set()
                break
    except BaseException as exc:
        state.fail(exc)
    finally:
        for _ in threads:
            work.put(None)
        for thread in threads:
            thread.join()
    if state.error is not None:
        raise state.error
    return nbytes, number


def _upload_part(client, bucket, key, upload_id, number, data) -> str:
    # bytes, not a file: urllib3 sends them with one sendall (a BytesIO body goes out in 16 KiB
    # blocks, which halved the rate with 4 uploader threads) and retries simply resend them.
    return client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data)["ETag"]


def _check_size(url, got, size, expected_size, note):
    for label, want in (("Content-Length", size), ("expected_size", expected_size)):
        if want is not None and got != want:
            raise TransferError(f"{url} ended after {got} of {want} bytes ({label}); {note}")


def _progress_note(state: _Uploads, read: int | None = None) -> str:
    note = f"{state.bytes} bytes in {len(state.etags)} parts had been uploaded"
    return note + (f" of {read} read" if read is not None else "") + ", multipart upload aborted"


def _abort(client, bucket, key, upload_id, settings):
    try:
        _with_retries(
            settings, threading.Event(), client.abort_multipart_upload, Bucket=bucket, Key=key, UploadId=upload_id
        )
    except Exception:  # noqa: BLE001 - the original error matters more; S3 lifecycle rules clean up
        pass

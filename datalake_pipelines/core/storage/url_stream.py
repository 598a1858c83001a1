"""Stream a URL into S3 part by part from memory, never touching disk: :func:`stream_url_to_s3`.

Hand-written on purpose. boto3 *can* take a non-seekable HTTP response (s3transfer's
``UploadNonSeekableInputManager``), but for this job it falls short:

* it first reads ``multipart_threshold`` bytes (100 MB here) into memory to decide between a single put
  and multipart, then keeps up to ``max_in_memory_upload_chunks`` (10, not a boto3 ``TransferConfig``
  argument) parts in memory, so memory is about threshold + 10 x part instead of part x (concurrency + 2);
* once a part has failed, its submission loop still reads the source to EOF before raising (tasks
  become no-ops, the reads do not stop), so a failed 2 GB transfer downloads 2 GB for nothing;
* it cannot tell how many parts had been uploaded when it gave up, and it has no Content-Length to
  size parts from (we read it from the response and choose the part size ourselves).

So this reads parts into a bounded queue, hashes them (sha256 of the whole body), and lets ``max_concurrency``
threads upload them with per-part exponential backoff + jitter (:func:`with_retries`); any final
failure aborts the multipart upload so no orphaned parts remain.
"""

from __future__ import annotations

import hashlib
import queue
import random
import threading
import time
import urllib.error
import urllib.request

import botocore.exceptions

from .transfer import (
    MAX_PARTS,
    TransferError,
    TransferSettings,
    parse_s3_url,
    progress_bar,
    s3_client,
    transfer_result,
)

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


def is_transient(exc: BaseException) -> bool:
    """True for an error worth retrying: a connection or timeout error, a throttling or timeout code from S3,
    or an HTTP 5xx/429 answer."""
    if isinstance(
        exc, (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError, TimeoutError, ConnectionError)
    ):
        return True
    if isinstance(exc, botocore.exceptions.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return exc.response.get("Error", {}).get("Code") in TRANSIENT_CODES or status >= 500 or status == 429
    return False


def with_retries(settings: TransferSettings, stop: threading.Event, call, *args, **kwargs):
    """Call ``call`` and retry transient errors with exponential backoff and jitter."""
    for attempt in range(1, settings.max_attempts + 1):
        try:
            return call(*args, **kwargs)
        except Exception as exc:
            if attempt == settings.max_attempts or not is_transient(exc) or stop.is_set():
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
    # botocore does one attempt per call; with_retries owns the retries and their backoff.
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
        with progress_bar(size, progress, key) as bar:
            if len(first) < part_size:
                _check_size(url, len(first), size, expected_size, "nothing uploaded")
                try:
                    etag = with_retries(
                        settings, threading.Event(), client.put_object, Bucket=bucket, Key=key, Body=first
                    )["ETag"].strip('"')
                except Exception as exc:
                    raise TransferError(f"put_object of {len(first)} bytes to {s3_url} failed: {exc}") from exc
                bar.update(len(first))
                return transfer_result(bucket, key, len(first), digest.hexdigest(), 1, etag, started)
            head, first = [first], None  # _pump pops it, so no frame keeps the first part alive
            try:
                upload_id = with_retries(
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
                etag = with_retries(
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
    return transfer_result(bucket, key, nbytes, digest.hexdigest(), parts, etag, started)


def _pump(resp, head, digest, client, bucket, key, upload_id, part_size, size, settings, state, bar, url):
    """Feed parts into a bounded queue consumed by ``max_concurrency`` uploader threads."""
    work: queue.Queue = queue.Queue(maxsize=1)

    def uploader():
        while (item := work.get()) is not None:
            number, data = item
            if state.stop.is_set():
                continue
            try:
                etag = with_retries(settings, state.stop, _upload_part, client, bucket, key, upload_id, number, data)
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
        with_retries(
            settings, threading.Event(), client.abort_multipart_upload, Bucket=bucket, Key=key, UploadId=upload_id
        )
    except Exception:  # noqa: BLE001 - the original error matters more; S3 lifecycle rules clean up
        pass

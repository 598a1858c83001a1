"""Stream a URL into S3 from memory, never touching disk: :func:`stream_url_to_s3`.

boto3's managed transfer (``TransferManager.upload`` of the HTTP response, a non-seekable stream) does the
parts, their threads and the abort of a failed multipart upload; :class:`_HashingSource` in front of the response
hashes the body (sha256) as s3transfer reads it, checks its length and stops the reads once the transfer failed.
A hand-written part loop (queue + uploader threads) ran at 0.36 x ``upload_fileobj`` from the same stream into the
same endpoint (57 vs 160 MiB/s, 512 MiB on moto), so the library does the transfer.

Memory: s3transfer reads ``multipart_threshold`` bytes first and keeps at most ``max_in_memory_upload_chunks``
parts in memory; both are set to one part and ``max_concurrency`` parts, so memory stays near
part x (concurrency + 2). Retries are botocore's "standard" mode (exponential backoff with jitter, throttling
codes such as SlowDown included) with ``settings.max_attempts`` attempts per request; for a caller's client
whose own policy gave up earlier, a ``needs-retry`` hook retries transient errors up to the same count.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import botocore.exceptions

from .transfer import MAX_PARTS, TransferError, TransferSettings, parse_s3_url, progress_bar, s3_client, transfer_result


def _open_url(url: str, timeout: float):
    try:
        return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - http(s) URLs from the caller
    except urllib.error.HTTPError as exc:
        raise TransferError(f"GET {url} failed: HTTP {exc.code} {exc.reason}; nothing uploaded") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise TransferError(f"GET {url} failed: {exc}; nothing uploaded") from exc


class _SourceEnded(Exception):
    """The body ended before its announced or expected size (raised inside s3transfer's reads)."""


class _Stopped(Exception):
    """The transfer already failed: stop downloading the rest of the body."""


class _HashingSource:
    """The HTTP response as s3transfer reads it: sha256 of every byte, full reads, a length check at the end."""

    def __init__(self, resp, url: str, sizes: tuple[tuple[str, int | None], ...], part_size: int):
        self._resp, self._url, self._sizes, self._part_size = resp, url, sizes, part_size
        self.digest, self.read_bytes, self.future = hashlib.sha256(), 0, None

    def read(self, amount: int = -1) -> bytes:
        if self.future is not None and self.future.done():
            raise _Stopped()
        data = self._resp.read(amount)
        if 0 < len(data) < amount:  # the socket gave less: fill the part (a short part must be the last one)
            pieces, got = [data], len(data)
            while got < amount and (more := self._resp.read(amount - got)):
                pieces.append(more)
                got += len(more)
            data = b"".join(pieces)
        self.digest.update(data)
        self.read_bytes += len(data)
        if self.read_bytes > self._part_size * MAX_PARTS:
            raise TransferError(
                f"{self._url} needs more than {MAX_PARTS} parts of {self._part_size} bytes; "
                "pass expected_size or a larger part_size"
            )
        if len(data) < amount or amount < 0:
            for label, want in self._sizes:
                if want is not None and self.read_bytes != want:
                    raise _SourceEnded(f"{self._url} ended after {self.read_bytes} of {want} bytes ({label})")
        return data


class _Hooks:
    """Parts and bytes S3 acknowledged, the final ETag, and retries up to ``max_attempts``, as botocore events
    on the client for the duration of one transfer (a caller's client keeps its own policy first: botocore
    takes the first handler that asks for a retry)."""

    def __init__(self, client, key: str, settings: TransferSettings):
        self.client, self.key, self.settings = client, key, settings
        self.lock, self.parts, self.bytes, self.etag = threading.Lock(), 0, 0, None
        self.uid = f"datalake-url-stream-{id(self)}"
        self.events = (
            ("before-call.s3.UploadPart", self._mark),
            ("before-call.s3.PutObject", self._mark),
            ("before-call.s3.CompleteMultipartUpload", self._mark),
            ("after-call.s3.UploadPart", self._part),
            ("after-call.s3.PutObject", self._done),
            ("after-call.s3.CompleteMultipartUpload", self._done),
            ("needs-retry.s3", self._retry),
        )

    def __enter__(self) -> _Hooks:
        for name, handler in self.events:
            self.client.meta.events.register(name, handler, unique_id=f"{self.uid}-{name}")
        return self

    def __exit__(self, *exc) -> None:
        for name, handler in self.events:
            self.client.meta.events.unregister(name, handler, unique_id=f"{self.uid}-{name}")

    def _ours(self, params) -> bool:
        return self.key in urllib.parse.unquote(str(params.get("url_path", "")))

    def _mark(self, params, context, **_):
        """Tag our requests (a caller's client may serve other keys meanwhile) with their body size."""
        if self._ours(params):
            body = params.get("body")
            context[self.uid] = len(body) if hasattr(body, "__len__") else 0  # a part: s3transfer's ReadFileChunk

    def _part(self, http_response, context, **_):
        if http_response.status_code == 200 and self.uid in context:
            with self.lock:
                self.parts += 1
                self.bytes += context[self.uid]

    def _done(self, http_response, parsed, context, **_):
        if http_response.status_code == 200 and self.uid in context:
            self.etag = parsed.get("ETag", "").strip('"')

    def _retry(self, attempts, response, caught_exception, request_dict, **_):
        if attempts >= self.settings.max_attempts or not self._ours(request_dict):
            return None
        if caught_exception is not None:
            transient = isinstance(caught_exception, (botocore.exceptions.ConnectionError, ConnectionError))
        else:
            http, parsed = response
            code = parsed.get("Error", {}).get("Code")
            transient = code in TRANSIENT_CODES or http.status_code >= 500 or http.status_code == 429
        if not transient:
            return None
        cap = min(self.settings.backoff_max, self.settings.backoff_base * 2 ** (attempts - 1))
        return cap / 2 + random.uniform(0, cap / 2)  # exponential backoff with jitter

    def note(self) -> str:
        return f"{self.bytes} bytes in {self.parts} parts had been uploaded, multipart upload aborted"


TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeoutException"}
TRANSIENT_CODES |= {"InternalError", "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequestsException"}


def stream_url_to_s3(
    url: str,
    s3_url: str,
    settings: TransferSettings | None = None,
    progress: bool = True,
    expected_size: int | None = None,
    client=None,
    timeout: float = 60,
) -> dict:
    """Download ``url`` and upload it to ``s3_url`` with boto3's managed transfer, from memory.

    Memory stays near part_size x (max_concurrency + 2). Raises ``TransferError`` (after s3transfer aborted the
    multipart upload) with the bytes and parts uploaded so far.
    """
    from boto3.s3.transfer import TransferConfig
    from s3transfer.manager import TransferManager  # type: ignore[import-untyped]

    settings = settings or TransferSettings()
    bucket, key = parse_s3_url(s3_url)
    client = client or s3_client(max_attempts=settings.max_attempts)
    started = time.monotonic()
    resp = _open_url(url, timeout)
    with resp:
        length = resp.headers.get("Content-Length")
        size = int(length) if length is not None and length.isdigit() else None
        if size is not None and expected_size is not None and size != expected_size:
            raise TransferError(f"{url} announces {size} bytes, expected {expected_size}; nothing uploaded")
        part_size = settings.part_size_for(size if size is not None else expected_size)
        config = TransferConfig(
            multipart_threshold=part_size,
            multipart_chunksize=part_size,
            max_concurrency=settings.max_concurrency,
            preferred_transfer_client="classic",
        )
        config.max_in_memory_upload_chunks = settings.max_concurrency  # s3transfer's default is 10 parts
        source = _HashingSource(resp, url, (("Content-Length", size), ("expected_size", expected_size)), part_size)
        with progress_bar(size or expected_size, progress, key) as bar:
            try:
                with _Hooks(client, key, settings) as uploaded, TransferManager(client, config) as manager:
                    # progress counts bytes handed to botocore; retries rewind it, so it stays net
                    future = manager.upload(source, bucket, key, subscribers=[_Progress(bar)])
                    source.future = future
                    future.result()
            except (_SourceEnded, TransferError) as exc:
                raise TransferError(f"{exc}; {uploaded.note()}") from None
            except Exception as exc:
                if uploaded.parts == 0 and source.read_bytes <= part_size and uploaded.etag is None:
                    what = f"upload of {source.read_bytes} bytes to {s3_url} failed"
                else:
                    what = f"streaming {url} to {s3_url} failed ({uploaded.note()})"
                raise TransferError(f"{what}: {type(exc).__name__}: {exc}") from exc
    parts = max(uploaded.parts, 1)
    return transfer_result(bucket, key, source.read_bytes, source.digest.hexdigest(), parts, uploaded.etag, started)


class _Progress:
    """An s3transfer subscriber moving the progress bar."""

    def __init__(self, bar):
        self.bar = bar

    def on_progress(self, bytes_transferred: int, **_) -> None:
        self.bar.update(bytes_transferred)

    def on_queued(self, **_):
        pass

    def on_done(self, **_):
        pass

"""Transfers into S3: what every transfer shares, and local files through boto3's managed transfer.

Shared: :class:`TransferSettings` (part size, concurrency, retries), :class:`TransferError`, the S3 client with
botocore retries and timeouts (:func:`s3_client`), ``s3://`` URL parsing, the progress bar and the result dict
(:func:`transfer_result`). Streaming a URL into S3 part by part is :mod:`.url_stream`.

``upload_file_to_s3`` hands a (seekable) file to boto3 ``upload_fileobj``, which already uploads parts
concurrently, retries each request through botocore and aborts the multipart upload when it fails; the file's
SHA-256 is computed from the bytes boto3 reads.
"""

from __future__ import annotations

import hashlib
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from ...settings import load as load_settings

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * 1024 * MiB
MAX_PARTS = 10_000
MAX_OBJECT_SIZE = 5 * 1024 * 1024 * MiB


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
    import boto3  # here: a local lake, which imports this module, never loads boto3 (~0.3 s)
    from botocore.config import Config

    settings = load_settings()
    endpoint_url = endpoint_url or settings.aws_endpoint_url
    # botocore's "max_attempts" counts retries only; "total_max_attempts" includes the first request. "standard"
    # retries throttling (SlowDown, 503) and connection errors with exponential backoff and jitter.
    # One pooled connection per thread of s3_map (plus a few for a transfer running beside it): a pool smaller
    # than the threads makes urllib3 drop and reopen connections.
    config = Config(
        retries={"mode": retry_mode, "total_max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=settings.s3_concurrency + 8,
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
    """Knobs of a transfer; backoff_* apply to the retries :mod:`.url_stream` adds to a caller's client."""

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


def progress_bar(total: int | None, enabled: bool, desc: str) -> tqdm:
    """A byte progress bar on stderr (``total`` None: unknown size), shown only when ``enabled``."""
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=not enabled, desc=desc, leave=False)


def transfer_result(bucket, key, nbytes, sha256, parts, etag, started) -> dict:
    """What a transfer returns: ``s3_url``, ``bytes``, ``sha256`` (hex), ``parts``, ``etag``, ``seconds`` since
    ``started`` (a ``time.monotonic()``) and ``mb_per_s`` (MiB/s; None for no elapsed time)."""
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
    from boto3.s3.transfer import TransferConfig

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
        with progress_bar(size, progress, key) as bar:
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
    return transfer_result(bucket, key, size, sha256, parts, etag, started)


def _sha256_of(fh: BinaryIO, start: int) -> str:
    digest = hashlib.sha256()
    fh.seek(start)
    while chunk := fh.read(8 * MiB):
        digest.update(chunk)
    return digest.hexdigest()

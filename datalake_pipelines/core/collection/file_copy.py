"""Copying one source file resiliently: retries of transient errors, hashing while copying, bounded memory.

:func:`copy_file` copies a file once while hashing it (above 50 MB in 8 MB chunks, so memory stays bounded);
:func:`with_retries` retries transient ``OSError``\\ s with exponential backoff and jitter; :class:`CopyProgress`
is the bytes bar an upload shows.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

MiB = 1024 * 1024
CHUNKED_THRESHOLD = 50 * MiB
CHUNK_SIZE = 8 * MiB
# Errors worth another try: flaky disks and network file systems. Anything else is not retried.
TRANSIENT_ERRNOS = frozenset(
    {
        errno.EIO,
        errno.EAGAIN,
        errno.EWOULDBLOCK,
        errno.EINTR,
        errno.EBUSY,
        errno.ETIMEDOUT,
        errno.ESTALE,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ENETRESET,
        errno.EREMOTEIO,
    }
)


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; the n-th retry waits ``base_delay * 2**(n-1)`` (capped) times 0.5-1.5."""

    attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 10.0
    sleep: Callable[[float], None] = time.sleep

    def delay(self, retry: int) -> float:
        return min(self.max_delay, self.base_delay * 2 ** (retry - 1)) * (0.5 + random.random())


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


def with_retries(fn: Callable[[], Any], policy: RetryPolicy, what: str) -> Any:
    """``fn()``, retried on transient ``OSError``; after the last try an :class:`OSError` naming the attempts."""
    for attempt in range(1, max(1, policy.attempts) + 1):
        try:
            return fn()
        except OSError as exc:
            if not is_transient(exc):
                raise
            if attempt >= policy.attempts:
                raise OSError(
                    exc.errno, f"{what}: gave up after {attempt} attempts, last error: {exc.strerror or exc}"
                ) from exc
            policy.sleep(policy.delay(attempt))
    raise AssertionError("unreachable")


# copying ---------------------------------------------------------------------------------------------------
def copy_file(
    source: str, dest: str, progress: Callable[[int], None] | None = None, chunked: bool = False
) -> tuple[int, str]:
    """Copy ``source`` to ``dest`` and return ``(size, sha256)``; in bounded 8 MB chunks above 50 MB or when
    ``chunked`` (the reference's ``use_chunked_upload``)."""
    digest = hashlib.sha256()
    size = 0
    with open(source, "rb", buffering=0) as src, open(dest, "wb", buffering=0) as dst:
        if not chunked and os.fstat(src.fileno()).st_size <= CHUNKED_THRESHOLD:
            data = src.readall()
            digest.update(data)
            dst.write(data)
            size = len(data)
            if progress:
                progress(size)
        else:
            buf = bytearray(CHUNK_SIZE)
            view = memoryview(buf)
            while n := src.readinto(buf):
                digest.update(view[:n])
                dst.write(view[:n])
                size += n
                if progress:
                    progress(n)
    return size, digest.hexdigest()


def hash_file(source: str) -> str:
    digest = hashlib.sha256()
    with open(source, "rb", buffering=0) as src:
        buf = bytearray(min(CHUNK_SIZE, max(1, os.fstat(src.fileno()).st_size)))
        view = memoryview(buf)
        while n := src.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


class CopyProgress:
    """A thread-safe bytes bar (tqdm locks its own updates) with a files counter in the postfix."""

    def __init__(self, total: int, total_files: int, desc: str, enabled: bool):
        self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not enabled)
        self.files, self.total_files = 0, total_files

    def bytes(self, n: int) -> None:
        self.bar.update(n)

    def file_done(self) -> None:
        self.files += 1
        self.bar.set_postfix_str(f"files {self.files}/{self.total_files}", refresh=False)

    def close(self) -> None:
        self.bar.close()

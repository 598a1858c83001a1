"""Advisory file locks: one writer per catalog partition, whatever launched the writer.

Dagster's tag concurrency limit already keeps two runs of one partition apart; this lock also
covers runs started in-process (``datalake process start``) or by hand.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import DatalakeError


class LockTimeout(DatalakeError):
    """Another writer holds the lock for longer than we are willing to wait."""


class PartitionBusy(DatalakeError):
    """A run holds the partition (its lock, or a claim of a batch of it): a delete is refused meanwhile."""


@contextmanager
def exclusive_lock(path: Path, timeout: float = 600.0, poll: float = 0.2) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(f"another writer holds {path} (waited {timeout:.0f} s)") from None
                time.sleep(poll)
        yield
    finally:
        os.close(fd)

"""Many small S3 requests at once: :func:`s3_map`.

Each S3 request waits 20-50 ms on the network, so a loop over objects is paced by latency, not bandwidth.
``s3_map`` runs one step's requests (PUTs, GETs, HEADs, deletes) on ``DATALAKE_S3_CONCURRENCY`` threads; the S3
client's connection pool is sized to match (:func:`.transfer.s3_client`) and its "standard" retries back off on
throttling. It returns only when every call has finished, so a publish step completes before the next one starts
(the order in ARCHITECTURE.md, "Publish order on S3"); the first error is raised after that.

boto3 rather than obstore: obstore (Rust, async) is not installed, and with one pooled connection per thread
boto3 keeps the retry policy, conditional writes and moto tests the rest of the lake already uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ...settings import load as load_settings

T = TypeVar("T")
R = TypeVar("R")


def s3_map(call: Callable[[T], R], items: Iterable[T], workers: int | None = None) -> list[R]:
    """``[call(item) for item in items]``, with up to ``workers`` (default the S3 concurrency) calls at once."""
    items = list(items)
    workers = min(workers or load_settings().s3_concurrency, len(items))
    if workers <= 1:
        return [call(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s3") as pool:
        futures = [pool.submit(call, item) for item in items]
    return [f.result() for f in futures]  # all done here: the pool's exit waited for every call

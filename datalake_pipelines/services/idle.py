"""Waiting until the instance is idle: no run queued or in progress, and catalog.duckdb refreshed after the last ingest.

``make demo`` stops ``dagster-daemon`` only after :func:`wait_until_idle` says so: stopping it while a run is in
flight kills that run's process and leaves a red failed run (and a half-done refresh) in the UI.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import dagster as dg

from ..lib import after_ingest

IN_FLIGHT = after_ingest.IN_FLIGHT


def in_flight_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """Runs queued, not started, starting, started or canceling, newest first."""
    return list(instance.get_runs(filters=dg.RunsFilter(statuses=list(IN_FLIGHT))))


def refresh_is_current(instance: dg.DagsterInstance) -> bool:
    """True when the newest ``duckdb_catalog`` materialization covers the newest ``catalog_partition`` one (any
    partition), or nothing was ingested yet (``lib/after_ingest.py``)."""
    return not after_ingest.refresh_state(instance).stale


def wait_until_idle(
    instance: dg.DagsterInstance,
    timeout: float,
    settle: float = 3.0,
    poll: float = 0.5,
    ready: Callable[[], bool] | None = None,
) -> tuple[bool, list[dg.DagsterRun]]:
    """Poll until no run is in flight, the refresh is current and ``ready()`` (if given) holds, for ``settle``
    seconds in a row (a sensor may launch a run between two polls). Returns ``(True, [])`` when idle, or
    ``(False, runs still in flight)`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    idle_since: float | None = None
    runs: list[dg.DagsterRun] = []
    while True:
        runs = in_flight_runs(instance)
        now = time.monotonic()
        if not runs and refresh_is_current(instance) and (ready is None or ready()):
            idle_since = idle_since if idle_since is not None else now
            if now - idle_since >= settle:
                return True, []
        else:
            idle_since = None
        if now >= deadline:
            return False, runs
        time.sleep(poll)

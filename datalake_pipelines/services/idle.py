"""Waiting until the instance is idle: no run queued or in progress, and catalog.duckdb refreshed after the last ingest.

``make demo`` stops ``dagster-daemon`` only after :func:`wait_until_idle` says so: stopping it while a run is in
flight kills that run's process and leaves a red failed run (and a half-done refresh) in the UI.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import dagster as dg

CATALOG_PARTITION = dg.AssetKey("catalog_partition")
DUCKDB_CATALOG = dg.AssetKey("duckdb_catalog")
S = dg.DagsterRunStatus
IN_FLIGHT = (S.QUEUED, S.NOT_STARTED, S.STARTING, S.STARTED, S.CANCELING)


def in_flight_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """Runs queued, not started, starting, started or canceling, newest first."""
    return list(instance.get_runs(filters=dg.RunsFilter(statuses=list(IN_FLIGHT))))


def _latest_materialization(instance: dg.DagsterInstance, key: dg.AssetKey) -> float | None:
    event = instance.get_latest_materialization_event(key)
    return event.timestamp if event is not None else None


def refresh_is_current(instance: dg.DagsterInstance) -> bool:
    """True when ``duckdb_catalog`` was materialized after the latest ``catalog_partition`` materialization
    (any partition), or nothing was ingested yet."""
    ingested = _latest_materialization(instance, CATALOG_PARTITION)
    if ingested is None:
        return True
    refreshed = _latest_materialization(instance, DUCKDB_CATALOG)
    return refreshed is not None and refreshed >= ingested


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

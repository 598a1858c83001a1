"""Follow-ups of ingests: when ``catalog.duckdb`` needs a refresh, and coalesced follow-up run requests.

``catalog.duckdb`` is refreshed inside the ingest runs themselves (``ingest_job``'s ``duckdb_catalog`` step, in the
``catalog_warehouse`` pool), never by a run per ingest. That step leaves the refresh to a later ingest run already
queued or in progress (which refreshes after its own catalog step), unless the last refresh is older than
:data:`MAX_REFRESH_LAG_SECONDS`; a burst of ingests ends with one refresh. What no ingest run refreshes (an asset
backfill or a UI rebuild of a partition, an ingest whose catalog step failed) is refreshed by the
``refresh_on_ingest`` sensor once no catalog writer is in flight: :func:`refresh_when_settled`.

Which ingests a refresh saw is recorded in its materialization: :data:`COVERS_KEY` holds the storage id of the
newest ``catalog_partition`` materialization when the refresh started (every ingest up to it had published its
files by then).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg

CATALOG_PARTITION = dg.AssetKey("catalog_partition")
DUCKDB_CATALOG = dg.AssetKey("duckdb_catalog")
INGEST_JOB = "ingest_job"
REFRESH_JOB = "refresh_catalog_db"
COVERS_KEY = "covers_ingest_event"
# Run tag of an ingest run whose caller refreshes later itself (``datalake process start``: all but its last run)
REFRESH_TAG, REFRESH_LATER = "datalake/refresh", "later"
MAX_REFRESH_LAG_SECONDS = 120.0  # an ingest run refreshes anyway when the last refresh is older than this
S = dg.DagsterRunStatus
IN_FLIGHT = (S.QUEUED, S.NOT_STARTED, S.STARTING, S.STARTED, S.CANCELING)


@dataclass(frozen=True)
class RefreshState:
    """The newest ingest and what the newest refresh covered, as event-log storage ids (None: no such event);
    ``refreshed_at`` is the Unix time in seconds of the newest ``duckdb_catalog`` materialization."""

    latest_ingest: int | None
    covered: int | None
    refreshed_at: float | None

    @property
    def stale(self) -> bool:
        """True when some ``catalog_partition`` materialization is newer than what the last refresh saw."""
        return self.latest_ingest is not None and (self.covered is None or self.latest_ingest > self.covered)


def latest_ingest_event(instance: dg.DagsterInstance) -> int | None:
    """Storage id of the newest ``catalog_partition`` materialization (any partition), None before the first."""
    records = instance.fetch_materializations(CATALOG_PARTITION, limit=1).records
    return records[0].storage_id if records else None


def refresh_state(instance: dg.DagsterInstance) -> RefreshState:
    """Read the newest ingest and refresh. A refresh without :data:`COVERS_KEY` (reported by hand, or older
    code) counts as covering every ingest recorded before it."""
    refreshes = instance.fetch_materializations(DUCKDB_CATALOG, limit=1).records
    covered = refreshed_at = None
    if refreshes:
        record = refreshes[0]
        event = record.asset_materialization
        value = event.metadata.get(COVERS_KEY) if event is not None else None
        covered = value.value if value is not None and isinstance(value.value, int) else record.storage_id
        refreshed_at = record.timestamp
    return RefreshState(latest_ingest_event(instance), covered, refreshed_at)


def writes_catalog(run: dg.DagsterRun) -> bool:
    """Whether a run may materialize ``catalog_partition`` or ``duckdb_catalog``."""
    if run.job_name in (INGEST_JOB, REFRESH_JOB):
        return True
    selection = run.asset_selection or frozenset()
    return CATALOG_PARTITION in selection or DUCKDB_CATALOG in selection


def catalog_writers_in_flight(instance: dg.DagsterInstance, exclude: str | None = None) -> Iterator[dg.RunRecord]:
    """Records of the runs queued or in progress that may write the catalog or refresh it, but ``exclude``."""
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=list(IN_FLIGHT))):
        if record.dagster_run.run_id != exclude and writes_catalog(record.dagster_run):
            yield record


def ingest_refresh_skip(instance: dg.DagsterInstance, run_id: str, now: float | None = None) -> str | None:
    """Why the refresh step of ingest run ``run_id`` may leave ``catalog.duckdb`` alone, or None to refresh now.

    Skipped when the last refresh already covers the newest ingest, when the run is tagged
    ``datalake/refresh=later``, or when an ingest run created after this one is queued or in progress (it
    refreshes after its own catalog step) and the last refresh is at most :data:`MAX_REFRESH_LAG_SECONDS` old.
    """
    state = refresh_state(instance)
    if not state.stale:
        return "catalog.duckdb already covers the newest ingest (refreshed by another run); not refreshed again"
    me = instance.get_run_record_by_id(run_id)
    if me is not None and me.dagster_run.tags.get(REFRESH_TAG) == REFRESH_LATER:
        return f"run tagged {REFRESH_TAG}={REFRESH_LATER}: a later run of the same caller refreshes catalog.duckdb"
    now = time.time() if now is None else now
    if me is None or (state.refreshed_at is not None and now - state.refreshed_at > MAX_REFRESH_LAG_SECONDS):
        return None
    later = [
        r.dagster_run.run_id
        for r in catalog_writers_in_flight(instance, exclude=run_id)
        if r.dagster_run.job_name == INGEST_JOB and r.create_timestamp > me.create_timestamp
    ]
    if later:
        return f"ingest run {later[-1]} (created after this one) refreshes catalog.duckdb after its catalog step"
    return None


def refresh_when_settled(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    """The fallback refresh: one run (keyed ``refresh-<newest ingest event>``) once ingests are not covered by a
    refresh and no catalog writer is queued or in progress; a skip saying why otherwise."""
    state = refresh_state(context.instance)
    if state.latest_ingest is None:
        return dg.SkipReason("no catalog_partition materialization yet")
    if not state.stale:
        return dg.SkipReason("catalog.duckdb is up to date (the ingest runs refresh it in their duckdb_catalog step)")
    busy = [r.dagster_run.run_id for r in catalog_writers_in_flight(context.instance)]
    if busy:
        return dg.SkipReason(f"waiting for {len(busy)} run(s) writing the catalog to end: {', '.join(busy[:3])}")
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"refresh-{state.latest_ingest}")])


def after_new_materializations(
    context: dg.SensorEvaluationContext, asset_key: dg.AssetKey, run_key_prefix: str, up_to_date: str
) -> dg.SensorResult | dg.SkipReason:
    """A run keyed ``<prefix>-<storage id>`` when ``asset_key`` was materialized since the cursor, else a skip."""
    records = context.instance.fetch_materializations(asset_key, limit=1).records
    if not records:
        return dg.SkipReason(f"no {asset_key.to_user_string()} materialization yet")
    latest = records[0].storage_id
    if context.cursor and int(context.cursor) >= latest:
        return dg.SkipReason(up_to_date)
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"{run_key_prefix}-{latest}")], cursor=str(latest))

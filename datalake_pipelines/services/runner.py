"""Running the ingest through Dagster without the daemon, and batch status from the instance.

Used by ``datalake process start|status|list``: runs are recorded in the instance that ``DAGSTER_HOME``
names, so they show up in the UI next to the ones the sensor launched.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import dagster as dg

from ..core.athena.scope import athena_applies
from ..core.lake.open import open_lake
from ..lib.after_ingest import INGEST_JOB, REFRESH_JOB, REFRESH_LATER, REFRESH_TAG, refresh_state
from ..lib.claims import dagster_run_state
from ..lib.partitions import LakePartitionKey, lake_partitions
from ..lib.resources import LakeResource

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The instance settings (run queue, tag limits, pools) copied into a DAGSTER_HOME that has none.
INSTANCE_CONFIG = PROJECT_ROOT / "config" / "dagster.yaml"
log = logging.getLogger("datalake")
LATER = {REFRESH_TAG: REFRESH_LATER}


def get_instance() -> dg.DagsterInstance:
    """The persistent instance in ``$DAGSTER_HOME``; defaults to ``./.dagster_home``. A home without a
    ``dagster.yaml`` gets a copy of :data:`INSTANCE_CONFIG` (``config/dagster.yaml``)."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(Path.cwd() / ".dagster_home")
        os.environ["DAGSTER_HOME"] = home
    Path(home).mkdir(parents=True, exist_ok=True)
    config = Path(home) / "dagster.yaml"
    if not config.exists() and INSTANCE_CONFIG.exists():
        shutil.copyfile(INSTANCE_CONFIG, config)
    return dg.DagsterInstance.get()


def start_pending(
    base: Any, instance: dg.DagsterInstance, quiet_seconds: float = 2.0, echo=print, **settings: Any
) -> list[dict[str, Any]]:
    """Claim ready pending batches of the lake at ``base`` (folder, ``s3://`` URI or ``LakeLayout``) and run
    ``ingest_job`` for each partition now, in this process.
    Hand drops still settling are waited for once, ``quiet_seconds`` long.

    Returns one status entry per claimed batch (``job_id``, ``state`` done/failed, ``run_id`` ...).
    """
    from ..defs.ingest.sensors import claim_options

    resource = LakeResource(base_path=_base_of(base), **settings)
    lake = resource.lake()
    state: dict[str, Any] = {}
    options = claim_options(log, quiet_seconds=quiet_seconds)
    claimed = lake.claim_ready(state, options)
    groups = {ref: list(ids) for ref, ids in claimed.groups.items()}
    if claimed.waiting:  # a hand drop must stay unchanged for quiet_seconds
        time.sleep(quiet_seconds)
        for ref, ids in lake.claim_ready(state, options).groups.items():
            groups.setdefault(ref, []).extend(ids)
    run_keys = {ref: lake.group_run_key(job_ids) for ref, job_ids in groups.items()}
    run_state = dagster_run_state(instance)

    def status(job_id: str) -> dict[str, Any]:
        return lake.status(job_id, run_state) or {"job_id": job_id, "state": "unknown"}

    return _run_groups(instance, resource, groups, run_keys, status, echo)


def _run_groups(instance, lake: LakeResource, groups, run_keys, status, echo) -> list[dict[str, Any]]:
    """One in-process ``ingest_job`` run per partition's claimed batches. The last run's own ``duckdb_catalog``
    step refreshes catalog.duckdb once for all of them (the others are tagged ``datalake/refresh=later``); a
    separate refresh run follows only when that did not happen (the last run failed before its refresh)."""
    from dagster_duckdb import DuckDBResource

    from ..core.lake.open import duckdb_file_of
    from ..definitions import defs
    from ..defs.ingest.sensors import run_request

    job = defs.resolve_job_def(INGEST_JOB)
    resources = {"lake": lake, "duckdb": DuckDBResource(database=str(duckdb_file_of(lake.base)))}
    outcomes = []
    for n, (ref, job_ids) in enumerate(groups.items(), start=1):
        key = LakePartitionKey(ref)
        if not instance.has_dynamic_partition(lake_partitions.name, key.key):
            instance.add_dynamic_partitions(lake_partitions.name, [key.key])
        echo(f"running ingest for {key.key}: batches {', '.join(job_ids)}")
        tags = {**run_request(ref, job_ids, run_keys[ref]).tags, **({} if n == len(groups) else LATER)}
        result = job.execute_in_process(
            instance=instance, partition_key=key.key, tags=tags, resources=resources, raise_on_error=False
        )
        for job_id in job_ids:
            outcome = {**status(job_id), "run_id": result.run_id}
            outcomes.append(outcome)
            echo(f"  {job_id}: {outcome['state']}" + (f" ({outcome['error']})" if outcome.get("error") else ""))
    if outcomes:
        if refresh_state(instance).stale:
            refresh_catalog_db(instance, lake)
        if refresh_athena(instance, lake) is False:
            echo("  warning: registering the new Athena partitions failed (see the refresh_athena_tables run)")
    return outcomes


def refresh_catalog_db(instance: dg.DagsterInstance, lake) -> bool:
    from dagster_duckdb import DuckDBResource

    from ..core.lake.open import duckdb_file_of
    from ..definitions import defs

    resources = {"lake": lake, "duckdb": DuckDBResource(database=str(duckdb_file_of(lake.base)))}
    result = defs.resolve_job_def(REFRESH_JOB).execute_in_process(
        instance=instance, resources=resources, raise_on_error=False
    )
    return result.success


def refresh_athena(instance: dg.DagsterInstance, lake) -> bool | None:
    """Register new catalog partitions in Glue/Athena now (a ``refresh_athena_tables`` run), as the daemon's
    ``athena_on_ingest`` sensor does after sensor-launched runs; None for a lake without Athena tables."""
    if not athena_applies(lake.base):
        return None
    from ..definitions import build_defs

    # the lake of this call (maybe a --base-path flag), not the environment the location was imported with
    result = (
        build_defs(base=str(lake.base))
        .resolve_job_def("refresh_athena_tables")
        .execute_in_process(instance=instance, resources={"lake": lake}, raise_on_error=False)
    )
    return result.success


def _base_of(lake: Any) -> str:
    """A lake's base from a path, an ``s3://`` URI or a ``LakeLayout`` (what callers have at hand)."""
    return str(getattr(lake, "base", lake))


def batch_status(base: Any, instance: dg.DagsterInstance | None, job_id: str) -> dict[str, Any]:
    """State of one batch of the lake at ``base`` (pending, queued, running, done, failed) with run id, rows
    and reason; ``{"job_id", "state": "unknown"}`` when the lake has no such batch."""
    run_state = dagster_run_state(instance) if instance is not None else None
    lake = open_lake(_base_of(base))
    return lake.status(job_id, run_state) or {"job_id": job_id, "state": "unknown"}

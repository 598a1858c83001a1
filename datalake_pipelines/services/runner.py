"""Running the ingest through Dagster without the daemon, and batch status from the instance.

Used by ``datalake process start|status|list``: runs are recorded in the instance that ``DAGSTER_HOME``
names, so they show up in the UI next to the ones the sensor launched.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from ..core.athena.scope import athena_applies, how_to_turn_off
from ..core.errors import ValidationError
from ..core.lake.open import lake_kind, open_lake
from ..lib.after_ingest import INGEST_JOB, REFRESH_JOB, REFRESH_LATER, REFRESH_TAG, refresh_state
from ..lib.claims import RUN_KEY_TAG, dagster_run_state
from ..lib.partitions import DAGSTER_PARTITION_TAG, LakePartitionKey, lake_partitions
from ..lib.resources import LakeResource
from ..lib.terminal_log import ONE_LINE_RUN, error_line, first_line
from ..settings import BASE_PATH_ENV, EXECUTOR_ENV
from ..settings import load as load_settings
from .recovery import mark_owner, recover_claims, starts_lock

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The instance settings (run queue, tag limits, pools) copied into a DAGSTER_HOME that has none.
INSTANCE_CONFIG = PROJECT_ROOT / "config" / "dagster.yaml"
log = logging.getLogger("datalake")
CODE_LOCATION = "datalake_pipelines.definitions"  # the module whose ``defs`` Celery workers load a run's job from
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
    base: Any,
    instance: dg.DagsterInstance,
    quiet_seconds: float = 2.0,
    echo: Callable[[str], None] = print,
    warn: Callable[[str], None] = log.warning,
    **settings: Any,
) -> list[dict[str, Any]]:
    """Claim ready pending batches of the lake at ``base`` (folder, ``s3://`` URI or ``LakeLayout``) and run
    ``ingest_job`` for each partition now, in this process.
    Hand drops still settling are waited for once, ``quiet_seconds`` long. ``echo`` gets progress lines, ``warn``
    one line when the Athena refresh after the ingest fails (the ingest's outcome does not change).

    Returns one status entry per claimed batch (``job_id``, ``state`` done/failed, ``run_id`` ...).
    """
    from ..defs.ingest.sensors import claim_options

    resource = LakeResource(base_path=_base_of(base), **settings)
    _check_workers_lake(resource.base)  # before anything is claimed: a refused run must leave the batches pending
    lake = resource.lake()
    state: dict[str, Any] = {}
    options = claim_options(log, quiet_seconds=quiet_seconds)
    with starts_lock(lake):  # one start of this host at a time recovers and claims (recovery.py)
        recovered, given_up = recover_claims(instance, lake, echo)
        claimed = lake.claim_ready(state, options)
        groups = {ref: list(ids) for ref, ids in claimed.groups.items()}
        for ref, ids in recovered.items():  # handed back as claims awaiting their next attempt's run (S3)
            groups.setdefault(ref, []).extend(ids)
        mark_owner(lake, [job_id for ids in groups.values() for job_id in ids])
    if claimed.waiting:  # a hand drop must stay unchanged for quiet_seconds
        time.sleep(quiet_seconds)
        with starts_lock(lake):
            for ref, ids in lake.claim_ready(state, options).groups.items():
                groups.setdefault(ref, []).extend(ids)
                mark_owner(lake, ids)
    run_keys = {ref: lake.group_run_key(job_ids) for ref, job_ids in groups.items()}
    run_state = dagster_run_state(instance)

    def status(job_id: str) -> dict[str, Any]:
        return lake.status(job_id, run_state) or {"job_id": job_id, "state": "unknown"}

    return [status(job_id) for job_id in given_up] + _run_groups(
        instance, resource, groups, run_keys, status, echo, warn
    )


SETTLED = ("done", "failed", "quarantined", "deleted")  # what a batch's state is once its run is through with it


def _run_groups(instance, lake: LakeResource, groups, run_keys, status, echo, warn) -> list[dict[str, Any]]:
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
        # the run key as the daemon tags its runs: the reaper and the sensor's recovery find this run by it
        tags = {**run_request(ref, job_ids, run_keys[ref]).tags, RUN_KEY_TAG: run_keys[ref]}
        tags.update({} if n == len(groups) else LATER)
        result = _execute(job, instance, key.key, tags, resources)
        reason = "" if result.success else run_failure_reason(result)
        for job_id in job_ids:
            outcome = {**status(job_id), "run_id": result.run_id}
            if reason and outcome["state"] not in SETTLED:
                # The run failed before it processed the batch (an index, broker or mount error): the sensor's
                # reaper hands such batches back only under a daemon, so here they would stay claimed forever.
                fate = lake.lake().requeue_or_fail(job_id, f"run {result.run_id} failed: {reason}", result.run_id)
                again = "back in pending: `datalake process start` tries it again" if fate == "requeued" else fate
                outcome = {**status(job_id), "run_id": result.run_id, "run_failed": True}
                outcome["error"] = f"its run failed before processing it ({reason}); {again}"
            outcomes.append(outcome)
            echo(f"  {job_id}: {outcome['state']}" + (f" ({outcome['error']})" if outcome.get("error") else ""))
    if outcomes:
        if refresh_state(instance).stale and not refresh_catalog_db(instance, lake):
            # the ingest stands (queries read the Parquet files); only the DuckDB file is behind
            warn("warning: the catalog.duckdb refresh failed; the ingest is not affected; see the refresh_catalog_db "
                 "run in the Dagster UI, then `datalake catalog rebuild`")  # fmt: skip
        athena = refresh_athena(instance, lake)
        if athena is not None and athena.reason:
            warn(
                f"warning: the Athena refresh failed ({athena.reason}); the ingest is not affected; "
                f"{how_to_turn_off()} (details: run {athena.run_id or '-'} in the Dagster UI)"
            )
    return outcomes


def _execute(job: dg.JobDefinition, instance: dg.DagsterInstance, partition_key: str, tags, resources):
    """One ingest run, in this process; with ``DATALAKE_EXECUTOR=celery`` its steps go to the Celery workers
    (``execute_in_process`` always runs them here), which load the code location's resources themselves, so the
    lake must be the one ``DATALAKE_BASE_PATH`` names."""
    run_config = terminal_run_config(job, partition_key)
    if load_settings().executor != "celery":
        return job.execute_in_process(
            run_config=run_config,
            instance=instance,
            partition_key=partition_key,
            tags=tags,
            resources=resources,
            raise_on_error=False,
        )
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    _check_workers_lake(str(resources["lake"].base))
    recon = ReconstructableRepository.for_module(CODE_LOCATION, "defs").get_reconstructable_job(job.name)
    return dg.execute_job(recon, instance, run_config=run_config, tags={DAGSTER_PARTITION_TAG: partition_key, **tags})


def _check_workers_lake(ours: str) -> None:
    """With ``DATALAKE_EXECUTOR=celery`` the workers load the code location's resources themselves, so the lake
    must be the one ``DATALAKE_BASE_PATH`` names; ValidationError otherwise."""
    theirs = LakeResource().base
    if load_settings().executor == "celery" and _lake_id(ours) != _lake_id(theirs):
        raise ValidationError(
            f"with {EXECUTOR_ENV}=celery the workers process the lake {BASE_PATH_ENV} names "
            f"({theirs or 'unset'}), not {ours}: set {BASE_PATH_ENV} instead of --base-path"
        )


def _lake_id(base: str) -> str:
    """``base`` written one way: an absolute, resolved folder, or an ``s3://`` URI without its trailing slash."""
    return base.rstrip("/") if lake_kind(base) == "s3" else os.path.realpath(base or "lake")


def terminal_run_config(job: dg.JobDefinition, partition_key: str) -> dict[str, Any]:
    """The run config of the job's partition (what ``execute_in_process`` derives only when it is given no run
    config) with the one-line logger (``lib/terminal_log.py``) as the run's only logger: one line per event on
    the terminal, the full record in the run's event log."""
    partitioned = job.partitioned_config
    config = partitioned.get_run_config_for_partition_key(partition_key) if partitioned is not None else {}
    return {**config, **ONE_LINE_RUN}


def refresh_catalog_db(instance: dg.DagsterInstance, lake, rebuild: bool = False) -> bool:
    """Refresh the lake's catalog.duckdb now (a ``refresh_catalog_db`` run logging one line per event);
    True when the run succeeded. ``rebuild``: from scratch (the asset's ``rebuild`` config)."""
    from dagster_duckdb import DuckDBResource

    from ..core.lake.open import duckdb_file_of
    from ..definitions import defs

    resources = {"lake": lake, "duckdb": DuckDBResource(database=str(duckdb_file_of(lake.base)))}
    result = defs.resolve_job_def(REFRESH_JOB).execute_in_process(
        instance=instance,
        resources=resources,
        raise_on_error=False,
        run_config={**ONE_LINE_RUN, "ops": {"duckdb_catalog": {"config": {"rebuild": rebuild}}}},
    )
    return result.success


@dataclass(frozen=True)
class AthenaRefresh:
    """A ``refresh_athena_tables`` run: its id ("" when it could not start) and, when it failed, why in one line
    (``"ClientError: An error occurred (AccessDenied) ..."``); ``reason`` is "" for a run that succeeded."""

    run_id: str
    reason: str


# The refresh is a follow-up of the ingest: its Dagster events (a failure's traceback among them) stay in the
# run's record for the UI instead of the terminal, where the caller says in one line what happened.
QUIET_RUN = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def refresh_athena(instance: dg.DagsterInstance, lake) -> AthenaRefresh | None:
    """Register new catalog partitions in Glue/Athena now (a ``refresh_athena_tables`` run), as the daemon's
    ``athena_on_ingest`` sensor does after sensor-launched runs; None for a lake without Athena tables
    (a folder, ``DATALAKE_ATHENA=off``, or ``auto`` on an S3 endpoint that is not AWS). Never raises for a
    failed refresh: the returned :class:`AthenaRefresh` says why it failed."""
    if not athena_applies(lake.base):
        return None
    from ..definitions import build_defs

    try:
        # the lake of this call (maybe a --base-path flag), not the environment the location was imported with
        result = (
            build_defs(base=str(lake.base))
            .resolve_job_def("refresh_athena_tables")
            .execute_in_process(instance=instance, resources={"lake": lake}, raise_on_error=False, run_config=QUIET_RUN)
        )
    except Exception as exc:  # the ingest is done whatever happens here; the caller reports it in one line
        return AthenaRefresh("", f"{type(exc).__name__}: {first_line(str(exc))}")
    return AthenaRefresh(result.run_id, "" if result.success else run_failure_reason(result))


def run_failure_reason(result: dg.ExecuteInProcessResult) -> str:
    """Why a run failed, in one line: the class and first message line of the exception its first failed step
    raised (``"ClientError: An error occurred (501) ..."``; Dagster's own wrappers skipped), or the description
    of a ``dg.Failure``."""
    for event in result.all_events:
        data = event.step_failure_data if event.is_step_failure else None
        if data is None:
            continue
        if data.user_failure_data is not None and data.user_failure_data.description:
            return f"Failure: {first_line(data.user_failure_data.description)}"
        if data.error is not None:
            return error_line(data.error)
    return f"the run ended {result.dagster_run.status.value}"


def _base_of(lake: Any) -> str:
    """A lake's base from a path, an ``s3://`` URI or a ``LakeLayout`` (what callers have at hand)."""
    return str(getattr(lake, "base", lake))


def batch_status(base: Any, instance: dg.DagsterInstance | None, job_id: str) -> dict[str, Any]:
    """State of one batch of the lake at ``base`` (pending, queued, running, done, failed) with run id, rows
    and reason; ``{"job_id", "state": "unknown"}`` when the lake has no such batch."""
    run_state = dagster_run_state(instance) if instance is not None else None
    lake = open_lake(_base_of(base))
    return lake.status(job_id, run_state) or {"job_id": job_id, "state": "unknown"}

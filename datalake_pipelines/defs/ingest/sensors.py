"""The staging sensor (claims pending batches, launches one run per partition) and its reaper.

One code path for every backend: the lake (:meth:`LakeResource.lake`) triages and claims its pending batches
(atomic rename locally, conditional write on S3); the sensor turns each partition's claims into a run request,
re-issues the run of a claim whose launch was lost (same run key, so Dagster drops a duplicate), and hands
batches of a run that died back to the lake (requeued once as ``<job>.attempt2``, then failed).
"""

import json
import time

import dagster as dg
from dagster_aws.s3 import S3Resource

from ...core.lake.layout import PartitionRef
from ...core.lake.protocol import Claim, ClaimOptions, Lake
from ...core.lake.queue import process_alive
from ...lib.after_ingest import DUCKDB_CATALOG, INGEST_JOB
from ...lib.claims import ClaimRuns, dagster_run_state
from ...lib.executor import ingest_executor
from ...lib.partitions import (
    JOB_IDS_TAG,
    LAKE_PARTITIONS,
    LakePartitionKey,
    is_valid_partition_key,
    lake_partitions,
    partition_config,
)
from ...lib.resources import LakeResource
from ...settings import load as load_settings
from .assets import catalog_partition
from .queue_asset import queue_observation

# The catalog partition, then catalog.duckdb's refresh in the same run (its step coalesces refreshes, see
# lib/after_ingest.py): no separate refresh run per ingest. Every run of the job carries the partition's
# datalake/* tags from creation (partition_config), whoever launches it.
ingest_job = dg.define_asset_job(
    INGEST_JOB,
    selection=dg.AssetSelection.assets(catalog_partition, DUCKDB_CATALOG),
    description="Processes claimed staging batches into one catalog partition, then refreshes catalog.duckdb "
    "(unless a later ingest run will).",
    config=partition_config,
    executor_def=ingest_executor(),  # in process, or Celery workers in the production profile
)

_settings = load_settings()  # when Dagster loads the code location: the sensor decorator needs the interval
SENSOR_INTERVAL = _settings.sensor_interval
QUIET_SECONDS = _settings.quiet_seconds
GRACE_SECONDS = _settings.grace_seconds
RECOVERY_AGE_SECONDS = 5.0
OBSERVED = "observed"  # cursor key: the fingerprint of the last staging_queue observation
TERMINAL = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def run_request(ref: PartitionRef, job_ids: list[str], run_key: str) -> dg.RunRequest:
    key = LakePartitionKey(ref)
    return dg.RunRequest(
        run_key=run_key,
        partition_key=key.key,
        tags={**key.tags(), JOB_IDS_TAG: ",".join(job_ids)},
    )


def claim_options(log, quiet_seconds: float | None = None, grace_seconds: float | None = None) -> ClaimOptions:
    """The sensor's triage settings (read at call time, so tests and the runner can change them)."""
    return ClaimOptions(
        quiet_seconds=QUIET_SECONDS if quiet_seconds is None else quiet_seconds,
        grace_seconds=GRACE_SECONDS if grace_seconds is None else grace_seconds,
        key_allowed=is_valid_partition_key,
        log=log,
    )


@dg.sensor(
    job=ingest_job,
    minimum_interval_seconds=SENSOR_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Claims complete batches in staging/pending and launches one run per catalog partition; observes "
    "staging_queue when the queue changes, and says in its skip reason what it waits for.",
)
def staging_sensor(context: dg.SensorEvaluationContext, lake: LakeResource, s3: S3Resource) -> dg.SensorResult:
    state = json.loads(context.cursor) if context.cursor else {}
    the_lake = lake.lake(s3)
    requests, runs = tick(context, the_lake, state)
    wanted = {r.partition_key for r in requests if r.partition_key is not None}  # run_request always sets one
    # one query for every key (10,000 partitions: ~50 ms), not one per request (7 ms each on SQLite)
    known = set(context.instance.get_dynamic_partitions(LAKE_PARTITIONS)) if wanted else set()
    new_keys = sorted(wanted - known)
    snapshot = the_lake.queue_snapshot(claim_options(context.log), state, dagster_run_state(context.instance, runs))
    events = []
    if state.get(OBSERVED) != (fingerprint := snapshot.fingerprint()):  # an event per change, not per tick
        events.append(queue_observation(snapshot, the_lake.base))
        state[OBSERVED] = fingerprint
    return dg.SensorResult(
        run_requests=requests,
        skip_reason=None if requests else snapshot.summary(),
        dynamic_partitions_requests=[lake_partitions.build_add_request(new_keys)] if new_keys else [],
        asset_events=events,
        cursor=json.dumps(state),
    )


def tick(context, lake: Lake, state: dict) -> tuple[list[dg.RunRequest], ClaimRuns]:
    """Claim ready batches (``state`` is the cursor the lake keeps between ticks), recover, reap. Returns the run
    requests and the runs behind the claims (fetched once for the whole tick)."""
    claimed = lake.claim_ready(state, claim_options(context.log))
    requests = [run_request(ref, ids, lake.group_run_key(ids)) for ref, ids in claimed.groups.items()]
    claimed_now = {j for ids in claimed.groups.values() for j in ids}
    claims = lake.claims()
    runs = ClaimRuns(context.instance, claims)
    requests += recover_unlaunched(context, lake, claimed_now, claims, runs)
    reap_dead_runs(context, lake, claims, runs)
    return requests, runs


def recover_unlaunched(
    context, lake: Lake, skip: set[str], claims: list[Claim] | None = None, runs: ClaimRuns | None = None
) -> list[dg.RunRequest]:
    """Claims from an earlier tick whose run never got created (crash between claim and launch), and claims
    a requeue issued for a next attempt: their run is requested again under the claim's run key."""
    claims = lake.claims() if claims is None else claims
    runs = runs or ClaimRuns(context.instance, claims)
    requests, done = [], set()
    for claim in claims:
        if claim.job_id in skip or not claim.run_key or claim.run_id or claim.run_key in done:
            continue
        if time.time() - claim.claimed_ts < RECOVERY_AGE_SECONDS:
            continue  # just claimed (possibly by an overlapping tick): its run request is on its way
        if runs.for_key(claim.run_key) is not None:
            continue
        try:
            ref = PartitionRef.parse(claim.partition or "")
        except ValueError:
            continue  # a rejection marker, or a claim without its partition
        group = claim.group or [claim.job_id]
        context.log.info(f"re-issuing run {claim.run_key} for claimed batches {group}")
        requests.append(run_request(ref, group, claim.run_key))
        done.add(claim.run_key)
    return requests


def reap_dead_runs(
    context, lake: Lake, claims: list[Claim] | None = None, runs: ClaimRuns | None = None
) -> list[tuple[str, str]]:
    """Batches still claimed by a run that ended or whose worker process is gone: requeued or failed."""
    claims = lake.claims() if claims is None else claims
    runs = runs or ClaimRuns(context.instance, claims)
    outcomes = []
    for claim in claims:
        run = runs.for_id(claim.run_id) if claim.run_id else None
        if run is None and claim.run_key:
            run = runs.for_key(claim.run_key)
        if run is None:
            continue
        # The pid is the process that ran the step: the run's own, except on Celery workers, whose lost step the
        # broker re-delivers to another worker (README, Production profile): the run is not dead then.
        on_workers = load_settings().executor == "celery"
        alive = process_alive(claim.pid, claim.host) if claim.run_id == run.run_id and not on_workers else None
        if run.status not in TERMINAL and alive is not False:
            continue
        if run.status not in TERMINAL:
            context.instance.report_run_failed(run, "run worker process is gone (killed?)")
            reason = f"the process of run {run.run_id} is gone (killed?) while the batch was claimed"
        else:
            reason = f"run {run.run_id} ended ({run.status.value}) while the batch was claimed"
        outcome = lake.requeue_or_fail(claim.job_id, reason, run.run_id)
        context.log.warning(f"batch {claim.job_id}: {reason}; {outcome}")
        outcomes.append((claim.job_id, outcome))
    return outcomes

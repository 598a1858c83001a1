"""The staging sensor (claims pending batches, launches one run per partition) and its reaper."""

import json
import time
from collections import defaultdict

import dagster as dg
from dagster_aws.s3 import S3Resource

from ...core.errors import DatalakeError
from ...core.ingest.manifest import load_manifest
from ...core.lake.layout import LakeLayout, PartitionRef
from ...core.lake.queue import (
    CLAIM_MARKER,
    PendingBatch,
    attempt_of,
    claim,
    claimed_batches,
    is_quiet,
    process_alive,
    read_claim,
    reject_pending,
    requeue_or_fail,
    run_key_for,
    scan_pending,
)
from ...core.lake.schema import load_schema
from ...core.storage.files import write_json_atomic
from ...lib.partitions import JOB_IDS_TAG, LakePartitionKey, is_valid_partition_key, lake_partitions
from ...lib.resources import LakeResource
from ...settings import load as load_settings
from .assets import catalog_partition
from .s3_sensor import s3_tick

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets(catalog_partition),
    description="Processes claimed staging batches into one catalog partition.",
    executor_def=dg.in_process_executor,
)

_settings = load_settings()  # when Dagster loads the code location: the sensor decorator needs the interval
SENSOR_INTERVAL = _settings.sensor_interval
QUIET_SECONDS = _settings.quiet_seconds
GRACE_SECONDS = _settings.grace_seconds
RECOVERY_AGE_SECONDS = 5.0
TERMINAL = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def run_request(ref: PartitionRef, job_ids: list[str], run_key: str) -> dg.RunRequest:
    key = LakePartitionKey(ref)
    return dg.RunRequest(
        run_key=run_key,
        partition_key=key.key,
        tags={**key.tags(), JOB_IDS_TAG: ",".join(job_ids)},
    )


def triage(
    layout: LakeLayout,
    batch: PendingBatch,
    seen: dict,
    now: float,
    log,
    quiet_seconds: float | None = None,
    grace_seconds: float | None = None,
) -> PartitionRef | None:
    """Decide about one pending batch: ready (its partition), not yet (None), or unusable (moved to failed).

    A folder without a readable ``_metadata.json`` waits in pending (a warning each tick) for
    ``grace_seconds`` after it stopped changing, then goes to ``failed/`` with the reason.
    """
    quiet_seconds = QUIET_SECONDS if quiet_seconds is None else quiet_seconds
    grace_seconds = GRACE_SECONDS if grace_seconds is None else grace_seconds
    if not is_quiet(batch, seen, now, quiet_seconds):
        return None
    if batch.problem and batch.fatal:
        reject_pending(layout, batch.job_id, batch.problem)
        log.warning(f"pending batch {batch.job_id} rejected: {batch.problem}")
        return None
    if batch.problem:
        first_seen = seen.setdefault(f"problem:{batch.job_id}", now)
        if now - first_seen < grace_seconds:
            log.warning(f"pending batch {batch.job_id} is not usable yet ({batch.problem}); waiting")
            return None
        reject_pending(layout, batch.job_id, f"{batch.problem} (gave up after {grace_seconds:.0f} s)")
        return None
    try:
        manifest = load_manifest(layout.pending_batch(batch.job_id), batch.job_id).validate(load_schema(layout))
    except (DatalakeError, ValueError) as exc:
        if not layout.pending_batch(batch.job_id).is_dir():
            return None  # claimed by a concurrent tick since the scan
        if reject_pending(layout, batch.job_id, str(exc)):
            log.warning(f"pending batch {batch.job_id} rejected: {exc}")
        return None
    if not is_valid_partition_key(manifest.partition.key):
        reject_pending(layout, batch.job_id, f"partition key {manifest.partition.key!r} is not allowed")
        return None
    return manifest.partition


@dg.sensor(
    job=ingest_job,
    minimum_interval_seconds=SENSOR_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Claims complete batches in staging/pending and launches one run per catalog partition.",
)
def staging_sensor(context: dg.SensorEvaluationContext, lake: LakeResource, s3: S3Resource) -> dg.SensorResult:
    state = json.loads(context.cursor) if context.cursor else {}
    if lake.is_s3:
        requests = s3_tick(context, lake.s3_lake(s3.get_client()), state, QUIET_SECONDS, run_request)
    else:
        requests = local_tick(context, lake.layout, state)
    new_keys = sorted(
        {
            r.partition_key
            for r in requests
            if not context.instance.has_dynamic_partition(lake_partitions.name, r.partition_key)
        }
    )
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[lake_partitions.build_add_request(new_keys)] if new_keys else [],
        cursor=json.dumps(state),
    )


def local_tick(context, layout: LakeLayout, state: dict) -> list[dg.RunRequest]:
    seen: dict = state.get("seen", {})
    pending = scan_pending(layout)
    groups = claim_ready(layout, pending, seen, time.time(), context.log)
    requests = [run_request(ref, ids, _group_key(layout, ids)) for ref, ids in groups.items()]
    claimed_now = {j for ids in groups.values() for j in ids}
    requests += recover_unlaunched(context, layout, claimed_now)
    reap_dead_runs(context, layout)
    names = {b.job_id for b in pending}
    state["seen"] = {k: v for k, v in seen.items() if k.split(":", 1)[-1] in names}
    return requests


def claim_ready(
    layout: LakeLayout, pending: list[PendingBatch], seen: dict, now: float, log, **triage_options
) -> dict[PartitionRef, list[str]]:
    """Claim every ready batch; return the claimed job ids grouped by partition."""
    groups: dict[PartitionRef, list[str]] = defaultdict(list)
    for batch in pending:
        ref = triage(layout, batch, seen, now, log, **triage_options)
        if ref is None:
            continue
        run_key = run_key_for(batch.job_id, attempt_of(layout.pending_batch(batch.job_id)))
        if claim(layout, batch.job_id, run_key, ref):
            groups[ref].append(batch.job_id)
    return groups


def _group_key(layout: LakeLayout, job_ids: list[str]) -> str:
    """One run per partition per tick; its run key is the first batch's claim run key (+ how many more)."""
    first = (read_claim(layout, job_ids[0]) or {}).get("run_key") or job_ids[0]
    run_key = first if len(job_ids) == 1 else f"{first}+{len(job_ids) - 1}"
    for job_id in job_ids:
        _set_claim_run_key(layout, job_id, run_key, job_ids)
    return run_key


def _set_claim_run_key(layout: LakeLayout, job_id: str, run_key: str, group: list[str]) -> None:
    marker = read_claim(layout, job_id) or {"job_id": job_id}
    marker.update(run_key=run_key, group=group)
    write_json_atomic(layout.processing_batch(job_id) / CLAIM_MARKER, marker)


def _runs_for_key(instance: dg.DagsterInstance, run_key: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": run_key}), limit=5))


def recover_unlaunched(context, layout: LakeLayout, skip: set[str]) -> list[dg.RunRequest]:
    """Claims from an earlier tick whose run never got created (crash between claim and launch)."""
    requests, done = [], set()
    for marker in claimed_batches(layout):
        run_key, job_id = marker.get("run_key"), marker["job_id"]
        if job_id in skip or not run_key or marker.get("run_id") or run_key in done:
            continue
        if time.time() - float(marker.get("claimed_ts") or 0) < RECOVERY_AGE_SECONDS:
            continue  # just claimed (possibly by an overlapping tick): its run request is on its way
        if _runs_for_key(context.instance, run_key):
            continue
        group = marker.get("group") or [job_id]
        try:
            ref = PartitionRef.parse(marker["partition"])
        except (KeyError, TypeError, ValueError):
            continue
        context.log.info(f"re-issuing run {run_key} for claimed batches {group}")
        requests.append(run_request(ref, group, run_key))
        done.add(run_key)
    return requests


def reap_dead_runs(context, layout: LakeLayout) -> list[tuple[str, str]]:
    """Batches left in processing/ by a run that ended or whose worker process is gone."""
    outcomes = []
    for marker in claimed_batches(layout):
        job_id, run_id = marker["job_id"], marker.get("run_id")
        run = context.instance.get_run_by_id(run_id) if run_id else None
        if run is None and marker.get("run_key"):
            runs = _runs_for_key(context.instance, marker["run_key"])
            run = runs[0] if runs else None
        if run is None:
            continue
        alive = process_alive(marker.get("pid"), marker.get("host")) if run_id else None
        if run.status not in TERMINAL and alive is not False:
            continue
        if run.status not in TERMINAL:
            context.instance.report_run_failed(run, "run worker process is gone (killed?)")
        reason = f"run {run.run_id} ended ({run.status.value}) while the batch was in processing"
        outcome = requeue_or_fail(layout, job_id, reason, run.run_id)
        context.log.warning(f"batch {job_id}: {reason}; {outcome}")
        outcomes.append((job_id, outcome))
    return outcomes

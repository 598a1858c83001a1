"""The staging sensor's S3 side: new manifests by ``LastModified`` cursor, conditional-write claims.

New batches are found with dagster-aws ``get_objects(since_last_modified=...)`` (a key-order cursor
breaks when objects are deleted). ``LastModified`` has one-second resolution, so each tick looks back
``OVERLAP_SECONDS`` before the cursor; seeing a manifest twice is harmless because claiming is a
conditional create that only one caller wins.
"""

import time
from datetime import datetime, timedelta

import dagster as dg
from dagster_aws.s3.sensor import get_objects

from ...core.lake.layout import PartitionRef
from ...core.lake.queue import process_alive
from ...core.lake.s3 import S3Lake, job_of_manifest_key
from ...lib.partitions import is_valid_partition_key

OVERLAP_SECONDS = 5
RECOVERY_AGE_SECONDS = 5.0
TERMINAL = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def new_manifests(s3_lake: S3Lake, since: datetime | None) -> list[tuple[str, datetime]]:
    """(job id, LastModified) of manifests in ``staging/pending`` changed after ``since`` - overlap."""
    storage = s3_lake.storage
    prefix = f"{storage.prefix}/staging/pending/" if storage.prefix else "staging/pending/"
    after = since - timedelta(seconds=OVERLAP_SECONDS) if since else None
    found = []
    for obj in get_objects(storage.bucket, prefix, since_last_modified=after, client=storage.client):
        job_id = job_of_manifest_key(obj["Key"][len(prefix) - len("staging/pending/") :])
        if job_id:
            found.append((job_id, obj["LastModified"]))
    return found


def claim_new(s3_lake: S3Lake, since: datetime | None, quiet_seconds: float, log):
    """Claim every new complete batch; return (claims grouped by partition, the new cursor time)."""
    return s3_lake.claim_ready(new_manifests(s3_lake, since), since, quiet_seconds, log, is_valid_partition_key)


def group_run_key(s3_lake: S3Lake, job_ids: list[str]) -> str:
    """One run per partition per tick, keyed by its first batch (+ how many more); claims record it."""
    run_key = job_ids[0] if len(job_ids) == 1 else f"{job_ids[0]}+{len(job_ids) - 1}"
    for job_id in job_ids:
        marker = s3_lake.read_claim(job_id)
        if marker is not None and len(job_ids) > 1:
            marker.run_key, marker.group = run_key, job_ids
            s3_lake.write_claim(marker)
    return run_key


def _runs_for_key(instance, run_key: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": run_key}), limit=5))


def recover_and_reap(context, s3_lake: S3Lake, skip: set[str], run_request) -> list[dg.RunRequest]:
    """Re-issue runs for claims that never launched; requeue or fail batches whose run died."""
    requests, issued = [], set()
    for marker in s3_lake.claims():
        if marker.job_id in skip or not marker.partition:
            continue
        runs = _runs_for_key(context.instance, marker.run_key)
        if not runs:
            if time.time() - marker.claimed_ts >= RECOVERY_AGE_SECONDS and marker.run_key not in issued:
                ref = PartitionRef.parse(marker.partition)
                requests.append(run_request(ref, marker.group or [marker.job_id], marker.run_key))
                issued.add(marker.run_key)
            continue
        run = runs[0]
        alive = process_alive(marker.pid, marker.host) if marker.run_id == run.run_id else None
        if run.status not in TERMINAL and alive is False:
            context.instance.report_run_failed(run, "run worker process is gone (killed?)")
        if run.status in TERMINAL or alive is False:
            reason = f"run {run.run_id} ended ({run.status.value}) while the batch was claimed"
            outcome = s3_lake.requeue_or_fail(marker.job_id, reason, run.run_id)
            context.log.warning(f"batch {marker.job_id}: {reason}; {outcome}")
    return requests


def s3_tick(context, s3_lake: S3Lake, state: dict, quiet_seconds: float, run_request) -> list[dg.RunRequest]:
    since = datetime.fromisoformat(state["since"]) if state.get("since") else None
    groups, cursor = claim_new(s3_lake, since, quiet_seconds, context.log)
    if cursor:
        state["since"] = cursor.isoformat()
    requests = [run_request(ref, ids, group_run_key(s3_lake, ids)) for ref, ids in groups.items()]
    claimed = {j for ids in groups.values() for j in ids}
    return requests + recover_and_reap(context, s3_lake, claimed, run_request)

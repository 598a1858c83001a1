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

from ..core.files import read_json
from ..core.layout import BATCH_MANIFEST, ERROR_FILE, LakeLayout
from ..core.queue import is_quiet, read_claim, scan_pending
from .partitions import LakePartitionKey, lake_partitions
from .resources import LakeResource

PROJECT_ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("datalake")


def get_instance() -> dg.DagsterInstance:
    """The persistent instance in ``$DAGSTER_HOME``; defaults to ``./.dagster_home`` (created with our dagster.yaml)."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(Path.cwd() / ".dagster_home")
        os.environ["DAGSTER_HOME"] = home
    Path(home).mkdir(parents=True, exist_ok=True)
    config = Path(home) / "dagster.yaml"
    if not config.exists() and (PROJECT_ROOT / "dagster.yaml").exists():
        shutil.copyfile(PROJECT_ROOT / "dagster.yaml", config)
    return dg.DagsterInstance.get()


def start_pending(
    layout: LakeLayout, instance: dg.DagsterInstance, quiet_seconds: float = 2.0, echo=print
) -> list[dict[str, Any]]:
    """Claim ready pending batches and run ``ingest_job`` for each partition now, in this process."""
    from ..definitions import defs
    from ..defs.ingest.sensors import claim_ready, run_request

    seen: dict = {}
    pending = scan_pending(layout)
    if any(b.hand_drop for b in pending):  # a hand-drop must stay unchanged for quiet_seconds
        now = time.time()
        for batch in pending:
            is_quiet(batch, seen, now, quiet_seconds)
        time.sleep(quiet_seconds)
        pending = scan_pending(layout)
    groups = claim_ready(layout, pending, seen, time.time(), log, quiet_seconds=quiet_seconds)
    lake = LakeResource(base_path=str(layout.base))
    job = defs.resolve_job_def("ingest_job")
    outcomes = []
    for ref, job_ids in groups.items():
        key = LakePartitionKey(ref)
        if not instance.has_dynamic_partition(lake_partitions.name, key.key):
            instance.add_dynamic_partitions(lake_partitions.name, [key.key])
        echo(f"running ingest for {key.key}: batches {', '.join(job_ids)}")
        tags = run_request(ref, job_ids, job_ids[0]).tags
        result = job.execute_in_process(
            instance=instance, partition_key=key.key, tags=tags, resources={"lake": lake}, raise_on_error=False
        )
        for job_id in job_ids:
            outcomes.append({**batch_status(layout, instance, job_id), "run_id": result.run_id})
    if outcomes:
        refresh_catalog_db(instance, lake)
    return outcomes


def refresh_catalog_db(instance: dg.DagsterInstance, lake) -> bool:
    from ..definitions import defs

    result = defs.resolve_job_def("refresh_catalog_db").execute_in_process(
        instance=instance, resources={"lake": lake}, raise_on_error=False
    )
    return result.success


RUN_STATE = {
    dg.DagsterRunStatus.QUEUED: "queued",
    dg.DagsterRunStatus.NOT_STARTED: "queued",
    dg.DagsterRunStatus.STARTING: "running",
    dg.DagsterRunStatus.STARTED: "running",
    dg.DagsterRunStatus.CANCELING: "running",
}


def batch_status(layout: LakeLayout, instance: dg.DagsterInstance | None, job_id: str) -> dict[str, Any]:
    """State of one batch: pending, queued, running, done or failed, with run id, rows and reason."""
    status: dict[str, Any] = {"job_id": job_id}
    if layout.pending_batch(job_id).is_dir():
        return {**status, "state": "pending", **_manifest_summary(layout.pending_batch(job_id))}
    if layout.processing_batch(job_id).is_dir():
        claim = read_claim(layout, job_id) or {}
        state, run_id = "queued", claim.get("run_id")
        if instance is not None and claim.get("run_key"):
            runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": claim["run_key"]}), limit=1)
            if runs:
                run_id = runs[0].run_id
                state = RUN_STATE.get(runs[0].status, "running")
        return {**status, "state": state, "run_id": run_id, **_manifest_summary(layout.processing_batch(job_id))}
    record_path = layout.job_record(job_id)
    if record_path.exists():
        record = read_json(record_path)
        return {
            **status,
            "state": "done" if record.get("status") == "done" else "failed",
            "run_id": record.get("run_id"),
            "partition": record.get("partition"),
            "rows": record.get("rows_in"),
            "rows_added": record.get("rows_added"),
            "rows_rejected": record.get("rows_rejected"),
            "error": record.get("error"),
        }
    failed = layout.failed_batch(job_id)
    if failed.is_dir():
        error = read_json(failed / ERROR_FILE) if (failed / ERROR_FILE).exists() else {}
        return {**status, "state": "failed", "error": error.get("error"), "run_id": error.get("run_id")}
    return {**status, "state": "unknown", "error": f"no batch {job_id!r} in this lake"}


def list_batches(layout: LakeLayout, instance: dg.DagsterInstance | None) -> list[dict[str, Any]]:
    ids = {b.job_id for b in scan_pending(layout)}
    for folder in (layout.processing, layout.failed):
        ids |= {p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}
    ids |= {p.stem for p in layout.jobs_dir.glob("*.json")}
    return [batch_status(layout, instance, job_id) for job_id in sorted(ids)]


def _manifest_summary(folder: Path) -> dict[str, Any]:
    try:
        doc = read_json(folder / BATCH_MANIFEST)
    except (OSError, ValueError):
        return {}
    parts = [doc.get("provider"), doc.get("dataset"), doc.get("task") or "raw", doc.get("variant")]
    return {"partition": "/".join(str(p) for p in parts if p), "rows": doc.get("row_count")}

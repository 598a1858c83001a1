"""Export tasks on the Dagster instance: ``create_export`` launches ``export_job``, ``export_info`` reports it.

The task id is the Dagster run id. Without ``wait`` the run is created from the code location (loaded from
``module``, by default the project's ``datalake_pipelines.definitions``, named ``LOCATION_NAME`` as in
``workspace.yaml``) and submitted to the instance's run coordinator: queued for the daemon under
``dagster dev``/``dagster-daemon``, or launched at once in the code server's subprocess with the default
coordinator. With ``wait=True`` the job runs now, in this process, recorded in the same instance.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import dagster as dg

from ..core.export.destination import normalize_destination
from ..core.export.source import open_source
from ..core.export.tasks import ExportError, ExportParams
from ..core.lake.layout import LakeLayout
from ..core.storage.backends import open_storage
from ..defs.exports.jobs import EXPORT_JOB, EXPORT_OP, export_job, export_name, progress_key
from ..lib.location import DEFINITIONS_MODULE, LOCATION_NAME

DEFAULT_MODULE = DEFINITIONS_MODULE
PROJECT_ROOT = Path(__file__).resolve().parents[2]
TASK_NOT_FOUND = "TASK_NOT_FOUND"
EXPORT_CANCELED = "EXPORT_CANCELED"

TASK_STATUS = {
    dg.DagsterRunStatus.NOT_STARTED: "init",
    dg.DagsterRunStatus.MANAGED: "init",
    dg.DagsterRunStatus.QUEUED: "queued",
    dg.DagsterRunStatus.STARTING: "queued",
    dg.DagsterRunStatus.STARTED: "running",
    dg.DagsterRunStatus.CANCELING: "running",
    dg.DagsterRunStatus.SUCCESS: "done",
    dg.DagsterRunStatus.FAILURE: "fail",
    dg.DagsterRunStatus.CANCELED: "fail",
}


def run_config_for(params: ExportParams, base_path: str | Path | None) -> dict[str, Any]:
    """``export_job`` run config for ``params`` (filter values become text; the op casts them per column)."""
    opts = params.resolved_options()
    config = {
        "destination": normalize_destination(params.destination),
        "filter": {k: [v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v) for v in vals]
                   for k, vals in params.filter.items()},
        # the values with their own types, so the op casts 1 and "1" differently (see .query_sql.cast_value)
        "filter_json": json.dumps(params.filter, default=str),
        "export_all": params.export_all,
        "file_type": params.file_type,
        "base_path": str(open_source(base_path).base),
        "batch_size": opts["batch_size"],
        "hdf5_images": opts["hdf5_images"],
        "hdf5_image_shape": list(opts["hdf5_image_shape"]),
        "hdf5_compression": opts["hdf5_compression"] or "",
        "exclude_near_duplicates": opts["exclude_near_duplicates"],
        "as_of": str(params.as_of or ""),
    }  # fmt: skip
    return {"ops": {EXPORT_OP: {"config": config}}}


def _submit(instance: dg.DagsterInstance, run_config: dict, module: str, working_directory: str | None) -> str:
    """Create the run from the code location and hand it to the instance's run coordinator."""
    from dagster import __version__
    from dagster._core.definitions.selector import JobSubsetSelector
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import ModuleTarget

    # The project's module gets the one location name (lib/location.py): the daemon's workspace must know it.
    name = LOCATION_NAME if module == DEFINITIONS_MODULE else module
    target = ModuleTarget(module, None, working_directory or str(PROJECT_ROOT), name)
    with WorkspaceProcessContext(instance, target, version=__version__) as process_context:
        workspace = process_context.create_request_context()
        error = workspace.get_code_location_error(name)
        if error:
            raise ExportError("EXPORT_FAILED", f"cannot load code location {module!r}: {error.message}")
        location = workspace.get_code_location(name)
        repos = [r for r in location.get_repositories().values() if r.has_job(EXPORT_JOB)]
        if not repos:
            raise ExportError("EXPORT_FAILED", f"code location {module!r} has no {EXPORT_JOB!r}; add it to its defs")
        repo = repos[0]
        selector = JobSubsetSelector(
            location_name=location.name, repository_name=repo.name, job_name=EXPORT_JOB, op_selection=None
        )
        remote_job = location.get_job(selector)
        plan = location.get_execution_plan(
            remote_job, run_config, step_keys_to_execute=None, known_state=None, instance=instance
        )
        snapshot = plan.execution_plan_snapshot
        run = instance.create_run(
            job_name=EXPORT_JOB,
            run_id=None,
            run_config=run_config,
            resolved_op_selection=None,
            step_keys_to_execute=snapshot.step_keys_to_execute,
            op_selection=None,
            status=None,
            root_run_id=None,
            parent_run_id=None,
            tags=dict(remote_job.tags),
            job_snapshot=remote_job.job_snapshot,
            execution_plan_snapshot=snapshot,
            parent_job_snapshot=remote_job.parent_job_snapshot,
            remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(),
            asset_selection=None,
            asset_check_selection=None,
            asset_graph=repo.asset_graph,
        )
        return instance.submit_run(run.run_id, workspace).run_id


def create_export(
    instance: dg.DagsterInstance,
    params: ExportParams | dict[str, Any],
    base_path: str | Path | None = None,
    wait: bool = False,
    module: str = DEFAULT_MODULE,
    working_directory: str | None = None,
) -> str:
    """Start an export task and return its id (the run id). Invalid parameters raise :class:`ExportError` now;
    catalog-dependent errors (unknown partition or field, wrong value type) fail the run with their code."""
    params = ExportParams.coerce(params)
    params.check()
    run_config = run_config_for(params, base_path)
    if not wait:
        return _submit(instance, run_config, module, working_directory)
    result = export_job.execute_in_process(run_config=run_config, instance=instance, raise_on_error=False)
    return result.run_id


def _op_config(run: dg.DagsterRun) -> dict[str, Any]:
    """The export op's config in ``run``'s run config (``{}`` when it has none)."""
    run_config = cast(dict[str, Any], run.run_config)  # typed Mapping[str, object]; ours is nested dicts
    return run_config.get("ops", {}).get(EXPORT_OP, {}).get("config", {})


def _params_of(run: dg.DagsterRun) -> dict[str, Any]:
    config = dict(_op_config(run))
    names = ("batch_size", "hdf5_images", "hdf5_image_shape", "hdf5_compression", "exclude_near_duplicates")
    options = {k: config.pop(k) for k in names if k in config}
    config.pop("base_path", None)
    config.pop("filter_json", None)
    return {**config, "options": options}


def _empty_process_info() -> dict[str, Any]:
    return {
        "task_progress": "0%",
        "total_data_count": 0,
        "scan_data_count": 0,
        "total_filter_count": 0,
        "sampled_data": [],
        "sampled_timestamp": None,
        "err_msg": "",
        "err_code": "",
    }


def export_info(instance: dg.DagsterInstance, lake: LakeLayout | str | None, task_id: str) -> dict[str, Any]:
    """Status of an export task in the shape of the reference's ``/task/info``; its progress is read from the lake
    the run exported from (its run config), else from ``lake`` (a layout, folder or ``s3://`` base)."""
    record = instance.get_run_record_by_id(task_id)
    if record is None or record.dagster_run.job_name != EXPORT_JOB:
        raise ExportError(TASK_NOT_FOUND, f"no export task {task_id!r} in this Dagster instance")
    run = record.dagster_run
    base = _op_config(run).get("base_path")
    storage = open_storage(str(open_source(base or lake).base))
    try:
        progress = json.loads(storage.read_bytes(progress_key(task_id)))
    except FileNotFoundError:
        progress = {}
    info = {**_empty_process_info(), **progress.get("process_info", {})}
    status = TASK_STATUS.get(run.status, "running")
    if status == "fail" and not info["err_code"]:
        canceled = run.status == dg.DagsterRunStatus.CANCELED
        info["err_code"] = EXPORT_CANCELED if canceled else "EXPORT_FAILED"
        info["err_msg"] = "the run was canceled" if canceled else "the run failed before the export reported an error"
    if status == "done":
        info["task_progress"] = "100%"
    update = record.update_timestamp
    if progress.get("updated_at"):
        update = max(update, _parse(progress["updated_at"]))
    params = _params_of(run)
    return {
        "task_id": task_id,
        "task_type": "export",
        "task_status": status,
        "dagster_status": run.status.value,
        "create_time": record.create_timestamp.isoformat(),
        "update_time": update.isoformat(),
        "task_params": params,
        "export_path": progress.get("path") or f"{params.get('destination', '.').rstrip('/')}/{export_name(task_id)}",
        "process_info": info,
    }


def _parse(value: str):
    from datetime import datetime, timezone

    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)

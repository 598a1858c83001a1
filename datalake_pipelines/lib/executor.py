"""Where the ingest's steps run: in the run's process (the single-host default) or on Celery workers.

``DATALAKE_EXECUTOR=celery`` (the production profile, README "Production profile (many hosts)") gives
``ingest_job`` dagster-celery's executor, configured from the settings: the broker and result backend URLs and the
Celery settings that make a worker's death lose nothing (:func:`celery_settings`). Steps on different hosts hand
outputs over through shared storage, so the code location's ``io_manager`` then writes under the lake
(:func:`step_io_manager`): a folder for a local (shared) lake, the S3 pickle IO manager for an ``s3://`` lake.

The workers build the same Celery app from the same settings (:mod:`.celery_worker`), so the executor and the
workers cannot disagree on the broker or on how tasks are acknowledged.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from ..core.lake.keys import STEP_IO
from ..core.lake.open import lake_kind
from ..core.storage.backends import split_s3_uri
from ..settings import Settings
from ..settings import load as load_settings


def celery_settings(settings: Settings) -> dict[str, Any]:
    """Celery settings (its lowercase names) for the executor's ``config_source`` and the workers' app.

    - ``task_acks_late``: a task is acknowledged when it finished, not when a worker took it, so a task whose
      worker dies is delivered again instead of being lost;
    - ``task_reject_on_worker_lost``: when the pool process running a step is killed (SIGKILL, OOM killer), the
      worker puts the task back on the queue at once instead of recording a failure;
    - ``visibility_timeout``: Redis has no per-connection acknowledgements; a task taken by a worker that vanished
      with its host is handed out again after this many seconds, by any worker's periodic sweep (every tenth of
      it, at most 10 s apart). It must exceed the longest step: a slower step would run twice.
    - ``worker_prefetch_multiplier`` 1: a worker holds no queued task it cannot start (a long step does not keep
      short ones from an idle worker, and a dead worker takes no extra tasks down with it).
    """
    timeout = settings.celery_visibility_timeout
    sweep = max(1, min(10, int(timeout / 10)))
    return {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": {
            "visibility_timeout": timeout,
            "unacked_restore_interval": sweep,
            "unacked_restore_throttle": 1,
            # dagster-celery's connection retries (its defaults), kept
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        "result_backend_transport_options": {"visibility_timeout": timeout},
    }


def celery_executor_config(settings: Settings | None = None) -> dict[str, Any]:
    """The ``celery_executor`` config of the settings: broker, backend and :func:`celery_settings`."""
    settings = settings or load_settings()
    return {
        "broker": settings.celery_broker,
        "backend": settings.celery_backend,
        "config_source": celery_settings(settings),
    }


def ingest_executor(settings: Settings | None = None) -> dg.ExecutorDefinition:
    """``ingest_job``'s executor: in process, or dagster-celery's configured from the settings."""
    settings = settings or load_settings()
    if settings.executor != "celery":
        return dg.in_process_executor
    from dagster_celery import celery_executor

    return celery_executor.configured(celery_executor_config(settings), name="datalake_celery")


def step_io_manager(base: str, settings: Settings | None = None) -> dict[str, Any]:
    """``{"io_manager": ...}`` writing step outputs under the lake when steps run on Celery workers; empty (Dagster's
    default, under ``DAGSTER_HOME``) in process. Dagster refuses the Celery executor without persisted outputs,
    and a worker on another host cannot read this host's ``DAGSTER_HOME``."""
    settings = settings or load_settings()
    if settings.executor != "celery":
        return {}
    if lake_kind(base) == "s3":
        from dagster_aws.s3 import S3PickleIOManager, S3Resource

        bucket, prefix = split_s3_uri(base)
        key = f"{prefix.rstrip('/')}/{STEP_IO}" if prefix else STEP_IO
        return {"io_manager": S3PickleIOManager(s3_resource=S3Resource(), s3_bucket=bucket, s3_prefix=key)}
    from ..core.lake.layout import LakeLayout

    return {"io_manager": dg.FilesystemIOManager(base_dir=str(LakeLayout(base or None, create=False).base / STEP_IO))}

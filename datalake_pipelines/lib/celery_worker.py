"""The Celery app the workers of the production profile run: ``celery -A datalake_pipelines.lib.celery_worker
worker``.

It is dagster-celery's app with its step task, built from the same settings as the executor
(:func:`.executor.celery_executor_config`), so a worker listens on the broker the runs submit to and acknowledges
tasks late. A worker needs the project installed (it imports the code location to run a step), the lake at the
same path (or S3) and the instance's storage reachable: each task carries the instance's config, whose
``{env: ...}`` values the worker reads from its own environment.
"""

from __future__ import annotations

from dagster._core.execution.retries import RetryMode
from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from .. import definitions  # noqa: F401  (imported once here, so every pool process forks with the code loaded)
from .executor import celery_executor_config

app = make_app(CeleryExecutor(retries=RetryMode(RetryMode.DISABLED), **celery_executor_config()).app_args())
execute_plan = create_task(app)

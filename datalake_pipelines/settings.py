"""The one place that reads the environment: ``DATALAKE_*`` settings and the AWS endpoint and region.

``load()`` reads them at call time (cheap: a few dictionary look-ups), so a changed environment (a test's
``monkeypatch.setenv``, a Dagster run's process) is seen by the next call; nothing is read at import time.
Every other module asks :func:`load` instead of ``os.environ``. Each setting has exactly one default, here.

The variables, their defaults and what they set are listed in README.md, section "Settings".
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .core.errors import ValidationError

MiB = 1024 * 1024

BASE_PATH_ENV = "DATALAKE_BASE_PATH"
PHASH_ENV = "DATALAKE_PHASH"  # on unless 0/false/no/off (any case)
ASSET_OWNERS_ENV = "DATALAKE_ASSET_OWNERS"
ASSET_TAGS_ENV = "DATALAKE_ASSET_TAGS"
NUM_PROC_ENV = "DATALAKE_NUM_PROC"
BATCH_SIZE_ENV = "DATALAKE_BATCH_SIZE"
CHUNK_FILES_ENV = "DATALAKE_CHUNK_FILES"
SENSOR_INTERVAL_ENV = "DATALAKE_SENSOR_INTERVAL"
QUIET_SECONDS_ENV = "DATALAKE_QUIET_SECONDS"
GRACE_SECONDS_ENV = "DATALAKE_GRACE_SECONDS"
WALK_SECONDS_ENV = "DATALAKE_CATALOG_WALK_SECONDS"  # a catalog refresh walks every partition this often
CACHE_DIR_ENV = "DATALAKE_CACHE_DIR"
MULTIPART_THRESHOLD_ENV = "DATALAKE_MULTIPART_THRESHOLD_MB"
CHUNKED_THRESHOLD_ENV = "DATALAKE_CHUNKED_THRESHOLD_MB"
S3_CONCURRENCY_ENV = "DATALAKE_S3_CONCURRENCY"
MAX_PIXELS_ENV = "DATALAKE_MAX_IMAGE_PIXELS"
ATHENA_ENV = "DATALAKE_ATHENA"  # auto / on / off, see ATHENA_MODES
ATHENA_DATABASE_ENV = "DATALAKE_ATHENA_DATABASE"
ATHENA_OUTPUT_ENV = "DATALAKE_ATHENA_OUTPUT"
ATHENA_WORKGROUP_ENV = "DATALAKE_ATHENA_WORKGROUP"
ATHENA_REGION_ENV = "DATALAKE_ATHENA_REGION"
INDEX_URL_ENV = "DATALAKE_INDEX_URL"  # postgresql://...: the hash and row indexes in PostgreSQL (many hosts)
MOUNT_TABLE_ENV = "DATALAKE_MOUNT_TABLE"  # where the mount table is read (a test points it at a fake one)
GC_SWEEP_PAUSE_ENV = "DATALAKE_GC_SWEEP_PAUSE"  # a test hook: seconds GC sleeps after each batch of deletions
EXECUTOR_ENV = "DATALAKE_EXECUTOR"  # in_process / celery, see EXECUTORS
CELERY_BROKER_ENV = "DATALAKE_CELERY_BROKER"
CELERY_BACKEND_ENV = "DATALAKE_CELERY_BACKEND"
CELERY_VISIBILITY_ENV = "DATALAKE_CELERY_VISIBILITY_TIMEOUT"
STEP_PAUSE_ENV = "DATALAKE_STEP_PAUSE"  # a test hook: seconds the ingest waits after marking each batch running
CHUNK_PAUSE_ENV = "DATALAKE_CHUNK_PAUSE"  # a test hook: seconds a chunk step waits with half its files stored

DEFAULT_BASE_DIRNAME = "lake"
DEFAULT_MOUNT_TABLE = "/proc/self/mounts"
DEFAULT_BATCH_SIZE = 1000
# files per chunk step of an ingest run; a run with no more files than this stores them in its commit step
DEFAULT_CHUNK_FILES = 2000
DEFAULT_SENSOR_INTERVAL = 30
DEFAULT_QUIET_SECONDS = 10.0
DEFAULT_GRACE_SECONDS = 600.0
# between them a refresh reads the change log (core/lake/changes.py); the walk catches what no writer recorded
DEFAULT_WALK_SECONDS = 86_400.0
DEFAULT_MULTIPART_THRESHOLD_MB = 100.0
DEFAULT_CHUNKED_THRESHOLD_MB = 50.0
# S3 requests in flight at once for small objects (one thread and one pooled connection each): real S3 adds
# 20-50 ms per request, so sequential requests, not bandwidth, set the pace; 32 kept moto + 20 ms at >= 0.3 x
# the local lake.
DEFAULT_S3_CONCURRENCY = 32
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485  # Pillow's own Image.MAX_IMAGE_PIXELS
DEFAULT_ATHENA_DATABASE = "datalake"
# auto: Athena for an S3 lake on AWS only (Glue and Athena are AWS services: MinIO or moto as the S3 endpoint
# means there is no Glue beside it); on: for every S3 lake; off: never.
ATHENA_MODES = ("auto", "on", "off")
DEFAULT_ATHENA_MODE = "auto"
# in_process: the ingest's steps run in the run's own process (single host); celery: on any Celery worker
EXECUTORS = ("in_process", "celery")
DEFAULT_EXECUTOR = "in_process"
DEFAULT_CELERY_BROKER = "redis://localhost:6379/0"
# Redis hands an unacknowledged task to another worker only after this many seconds: it must exceed the longest
# step, or a step still running is started a second time elsewhere (README, Production profile).
DEFAULT_CELERY_VISIBILITY_TIMEOUT = 3600.0


def default_num_proc() -> int:
    """The one default worker count: every CPU of this machine (at least 1)."""
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Settings:
    """The environment's settings, parsed; see the module's table for variables and defaults.

    ``explicit`` names the variables that are set (non-empty), for callers that show where a value came from
    (Dagster's ``EnvVar`` in the UI). Empty strings mean "not set" for the optional text settings.
    """

    base_path: str = ""
    num_proc: int = field(default_factory=default_num_proc)
    batch_size: int = DEFAULT_BATCH_SIZE
    chunk_files: int = DEFAULT_CHUNK_FILES
    sensor_interval: int = DEFAULT_SENSOR_INTERVAL
    quiet_seconds: float = DEFAULT_QUIET_SECONDS
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    walk_seconds: float = DEFAULT_WALK_SECONDS
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "datalake")
    multipart_threshold_mb: float = DEFAULT_MULTIPART_THRESHOLD_MB
    chunked_threshold_mb: float = DEFAULT_CHUNKED_THRESHOLD_MB
    s3_concurrency: int = DEFAULT_S3_CONCURRENCY
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    athena: str = DEFAULT_ATHENA_MODE
    athena_database: str = DEFAULT_ATHENA_DATABASE
    athena_output: str = ""
    athena_workgroup: str = ""
    athena_region: str = ""
    aws_endpoint_url: str = ""
    aws_region: str = ""
    phash: bool = True
    asset_owners: str = ""
    asset_tags: str = ""
    gc_sweep_pause: float = 0.0
    index_url: str = ""
    mount_table: Path = Path(DEFAULT_MOUNT_TABLE)
    executor: str = DEFAULT_EXECUTOR
    celery_broker: str = DEFAULT_CELERY_BROKER
    celery_backend: str = DEFAULT_CELERY_BROKER
    celery_visibility_timeout: float = DEFAULT_CELERY_VISIBILITY_TIMEOUT
    step_pause: float = 0.0
    chunk_pause: float = 0.0
    explicit: frozenset[str] = frozenset()

    @property
    def multipart_threshold(self) -> int:
        """``multipart_threshold_mb`` in bytes."""
        return int(self.multipart_threshold_mb * MiB)

    @property
    def chunked_threshold(self) -> int:
        """``chunked_threshold_mb`` in bytes."""
        return int(self.chunked_threshold_mb * MiB)


def _number(env: Mapping[str, str], name: str, kind: type, default, what: str, zero_ok: bool = False):
    """``env[name]`` as ``kind`` (``int`` or ``float``), ``default`` when unset or empty; positive (or zero)."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw) if kind is float else int(raw)
    except ValueError:
        value = -1
    if value != value or value < 0 or (value == 0 and not zero_ok):  # nan compares false with everything
        raise ValidationError(f"{name} must be a {'non-negative' if zero_ok else 'positive'} {what}, not {raw!r}")
    return value


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    """``env[name]`` lower-cased, one of ``choices``; ``default`` when unset or empty."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if raw.lower() not in choices:
        raise ValidationError(f"{name} must be one of {', '.join(choices)}, not {raw!r}")
    return raw.lower()


def masked_url(url: str) -> str:
    """``url`` with any password shown as ``***`` (``user:***@host``, ``password=***``): for messages."""
    url = re.sub(r"^([^:/?#]*://[^:/@?#]*):.*@", r"\1:***@", url)
    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", url)


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings of ``environ`` (default ``os.environ``), read now.

    Raises :class:`~datalake_pipelines.core.errors.ValidationError` naming the variable for a number setting
    that is not a positive number (e.g. ``DATALAKE_MAX_IMAGE_PIXELS must be a positive whole number of pixels``)
    or a choice that is none of its values (``DATALAKE_ATHENA must be one of auto, on, off, not 'yes'``).
    """
    env = os.environ if environ is None else environ

    def text(*names: str) -> str:
        return next((env[n] for n in names if env.get(n)), "")

    cache_dir = env.get(CACHE_DIR_ENV)
    index_url = text(INDEX_URL_ENV)
    if index_url.startswith("postgresql+psycopg2://"):  # SQLAlchemy's form (README's DAGSTER_POSTGRES_URL): libpq's
        index_url = "postgresql://" + index_url.removeprefix("postgresql+psycopg2://")
    if index_url and not index_url.startswith(("postgresql://", "postgres://")):
        raise ValidationError(f"{INDEX_URL_ENV} must be a postgresql:// URL, not {masked_url(index_url)!r}")
    broker = text(CELERY_BROKER_ENV) or DEFAULT_CELERY_BROKER
    return Settings(
        base_path=text(BASE_PATH_ENV),
        num_proc=_number(env, NUM_PROC_ENV, int, default_num_proc(), "whole number of processes"),
        batch_size=_number(env, BATCH_SIZE_ENV, int, DEFAULT_BATCH_SIZE, "whole number of rows"),
        chunk_files=_number(env, CHUNK_FILES_ENV, int, DEFAULT_CHUNK_FILES, "whole number of files"),
        sensor_interval=_number(env, SENSOR_INTERVAL_ENV, int, DEFAULT_SENSOR_INTERVAL, "whole number of seconds"),
        quiet_seconds=_number(env, QUIET_SECONDS_ENV, float, DEFAULT_QUIET_SECONDS, "number of seconds", True),
        grace_seconds=_number(env, GRACE_SECONDS_ENV, float, DEFAULT_GRACE_SECONDS, "number of seconds", True),
        walk_seconds=_number(env, WALK_SECONDS_ENV, float, DEFAULT_WALK_SECONDS, "number of seconds", True),
        cache_dir=Path(cache_dir) if cache_dir else Path.home() / ".cache" / "datalake",
        multipart_threshold_mb=_number(
            env, MULTIPART_THRESHOLD_ENV, float, DEFAULT_MULTIPART_THRESHOLD_MB, "number of MB"
        ),
        chunked_threshold_mb=_number(env, CHUNKED_THRESHOLD_ENV, float, DEFAULT_CHUNKED_THRESHOLD_MB, "number of MB"),
        s3_concurrency=_number(env, S3_CONCURRENCY_ENV, int, DEFAULT_S3_CONCURRENCY, "whole number of requests"),
        max_image_pixels=_number(env, MAX_PIXELS_ENV, int, DEFAULT_MAX_IMAGE_PIXELS, "whole number of pixels"),
        athena=_choice(env, ATHENA_ENV, ATHENA_MODES, DEFAULT_ATHENA_MODE),
        athena_database=text(ATHENA_DATABASE_ENV) or DEFAULT_ATHENA_DATABASE,
        athena_output=text(ATHENA_OUTPUT_ENV),
        athena_workgroup=text(ATHENA_WORKGROUP_ENV),
        athena_region=text(ATHENA_REGION_ENV),
        aws_endpoint_url=text("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
        aws_region=text("AWS_REGION", "AWS_DEFAULT_REGION"),
        phash=env.get(PHASH_ENV, "").strip().lower() not in {"0", "false", "no", "off"},
        asset_owners=text(ASSET_OWNERS_ENV),
        asset_tags=text(ASSET_TAGS_ENV),
        gc_sweep_pause=_number(env, GC_SWEEP_PAUSE_ENV, float, 0.0, "number of seconds", True),
        index_url=index_url,
        mount_table=Path(text(MOUNT_TABLE_ENV) or DEFAULT_MOUNT_TABLE),
        executor=_choice(env, EXECUTOR_ENV, EXECUTORS, DEFAULT_EXECUTOR),
        celery_broker=broker,
        celery_backend=text(CELERY_BACKEND_ENV) or broker,
        celery_visibility_timeout=_number(
            env, CELERY_VISIBILITY_ENV, float, DEFAULT_CELERY_VISIBILITY_TIMEOUT, "number of seconds"
        ),
        step_pause=_number(env, STEP_PAUSE_ENV, float, 0.0, "number of seconds", True),
        chunk_pause=_number(env, CHUNK_PAUSE_ENV, float, 0.0, "number of seconds", True),
        explicit=frozenset(name for name, value in env.items() if name.startswith("DATALAKE_") and value),
    )

"""``settings.load()``: one default per setting, read at call time, bad numbers refused by name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from datalake_pipelines import settings
from datalake_pipelines.core.errors import ValidationError


def test_defaults_of_an_empty_environment():
    s = settings.load({})
    assert s.base_path == "" and s.num_proc == max(1, os.cpu_count() or 1) and s.batch_size == 1000
    assert (s.sensor_interval, s.quiet_seconds, s.grace_seconds) == (30, 10.0, 600.0)
    assert s.cache_dir == Path.home() / ".cache" / "datalake"
    assert s.multipart_threshold == 100 * 1024 * 1024 and s.chunked_threshold == 50 * 1024 * 1024
    assert s.max_image_pixels == 89_478_485 and s.athena_database == "datalake"
    assert s.aws_endpoint_url == "" and s.aws_region == "" and s.explicit == frozenset()


def test_values_and_which_are_explicit():
    env = {
        "DATALAKE_BASE_PATH": "s3://bucket/lake",
        "DATALAKE_NUM_PROC": "3",
        "DATALAKE_QUIET_SECONDS": "0",
        "DATALAKE_CHUNKED_THRESHOLD_MB": "0.5",
        "DATALAKE_CACHE_DIR": "/var/cache/lake",
        "DATALAKE_ATHENA_DATABASE": "",
        "AWS_ENDPOINT_URL": "http://generic:9000",
        "AWS_ENDPOINT_URL_S3": "http://s3-only:9000",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "HOME_UNRELATED": "x",
    }
    s = settings.load(env)
    assert (s.base_path, s.num_proc, s.quiet_seconds) == ("s3://bucket/lake", 3, 0.0)
    assert s.chunked_threshold == 512 * 1024 and s.cache_dir == Path("/var/cache/lake")
    assert s.athena_database == "datalake"  # empty means unset
    assert s.aws_endpoint_url == "http://s3-only:9000" and s.aws_region == "eu-west-1"  # boto3's precedence
    assert s.explicit == {
        "DATALAKE_BASE_PATH",
        "DATALAKE_NUM_PROC",
        "DATALAKE_QUIET_SECONDS",
        "DATALAKE_CHUNKED_THRESHOLD_MB",
        "DATALAKE_CACHE_DIR",
    }
    with pytest.raises(AttributeError):
        s.num_proc = 4  # type: ignore[misc]  # frozen


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DATALAKE_NUM_PROC", "two", "DATALAKE_NUM_PROC must be a positive whole number of processes, not 'two'"),
        ("DATALAKE_NUM_PROC", "0", "DATALAKE_NUM_PROC must be a positive"),
        ("DATALAKE_BATCH_SIZE", "1.5", "DATALAKE_BATCH_SIZE must be a positive whole number of rows"),
        ("DATALAKE_GRACE_SECONDS", "-1", "DATALAKE_GRACE_SECONDS must be a non-negative number of seconds"),
        ("DATALAKE_MAX_IMAGE_PIXELS", "lots", "DATALAKE_MAX_IMAGE_PIXELS must be a positive whole number of pixels"),
        # found by review: nan passed every comparison and silently turned the daily walk off
        ("DATALAKE_CATALOG_WALK_SECONDS", "nan", "DATALAKE_CATALOG_WALK_SECONDS must be a non-negative number"),
        ("DATALAKE_QUIET_SECONDS", "NaN", "DATALAKE_QUIET_SECONDS must be a non-negative number"),
    ],
)
def test_a_bad_number_is_refused_by_name(name, value, message):
    with pytest.raises(ValidationError, match=message):
        settings.load({name: value})


def test_read_at_call_time(monkeypatch):
    monkeypatch.setenv("DATALAKE_BATCH_SIZE", "7")
    assert settings.load().batch_size == 7
    monkeypatch.setenv("DATALAKE_BATCH_SIZE", "8")
    assert settings.load().batch_size == 8
    monkeypatch.delenv("DATALAKE_BATCH_SIZE")
    assert settings.load().batch_size == 1000


def test_athena_mode_defaults_to_auto_and_reads_on_off_in_any_case():
    assert settings.load({}).athena == "auto"
    assert settings.load({"DATALAKE_ATHENA": ""}).athena == "auto"
    assert settings.load({"DATALAKE_ATHENA": " On "}).athena == "on"
    assert settings.load({"DATALAKE_ATHENA": "OFF"}).athena == "off"


@pytest.mark.parametrize("value", ["yes", "1", "true", "aws"])
def test_a_bad_athena_mode_is_refused_by_name(value):
    with pytest.raises(ValidationError, match=f"DATALAKE_ATHENA must be one of auto, on, off, not '{value}'"):
        settings.load({"DATALAKE_ATHENA": value})


def test_executor_defaults_to_in_process_and_celery_urls_to_one_redis():
    s = settings.load({})
    assert (s.executor, s.celery_broker, s.celery_backend) == (
        "in_process",
        "redis://localhost:6379/0",
        s.celery_broker,
    )
    assert s.celery_visibility_timeout == 3600.0 and s.step_pause == 0.0
    s = settings.load({"DATALAKE_EXECUTOR": "Celery", "DATALAKE_CELERY_BROKER": "redis://broker:6379/1"})
    assert (s.executor, s.celery_backend) == ("celery", "redis://broker:6379/1")  # the backend follows the broker
    with pytest.raises(ValidationError, match="DATALAKE_EXECUTOR must be one of in_process, celery, not 'k8s'"):
        settings.load({"DATALAKE_EXECUTOR": "k8s"})


def test_the_default_profile_keeps_ingest_in_process_and_dagsters_own_io_manager():
    """``make demo`` unchanged: without DATALAKE_EXECUTOR the ingest runs in process, outputs under DAGSTER_HOME."""
    import dagster as dg

    from datalake_pipelines.lib.executor import celery_settings, ingest_executor, step_io_manager

    assert ingest_executor(settings.load({})) is dg.in_process_executor
    assert step_io_manager("/tmp/lake", settings.load({})) == {}
    celery = settings.load({"DATALAKE_EXECUTOR": "celery", "DATALAKE_CELERY_VISIBILITY_TIMEOUT": "600"})
    assert ingest_executor(celery).name == "datalake_celery"
    manager = step_io_manager("/tmp/lake", celery)["io_manager"]
    assert manager.base_dir == "/tmp/lake/logs/dagster_io"  # on the shared lake, not a host's DAGSTER_HOME
    assert step_io_manager("s3://bucket/pre", celery)["io_manager"].s3_prefix == "pre/logs/dagster_io"
    conf = celery_settings(celery)
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["broker_transport_options"]["visibility_timeout"] == 600.0
    assert conf["broker_transport_options"]["unacked_restore_interval"] == 10

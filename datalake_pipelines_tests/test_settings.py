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

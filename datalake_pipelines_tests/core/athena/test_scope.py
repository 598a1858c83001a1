"""Which lakes get Athena tables: ``DATALAKE_ATHENA`` (auto/on/off) and, in auto, whether the S3 endpoint is AWS."""

from __future__ import annotations

import pytest

from datalake_pipelines import settings
from datalake_pipelines.core.athena.scope import athena_applies

MOTO = "http://127.0.0.1:5000"
MINIO = "http://minio:9000"
AWS = "https://s3.eu-west-1.amazonaws.com"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, True),  # no endpoint override: AWS
        ({"AWS_ENDPOINT_URL": AWS}, True),
        ({"AWS_ENDPOINT_URL_S3": "https://bucket.s3.amazonaws.com:443"}, True),
        ({"AWS_ENDPOINT_URL": MOTO}, False),
        ({"AWS_ENDPOINT_URL_S3": MINIO}, False),
        ({"AWS_ENDPOINT_URL": AWS, "AWS_ENDPOINT_URL_S3": MINIO}, False),  # boto3 uses the S3 one for S3
        ({"AWS_ENDPOINT_URL": "https://amazonaws.com.evil.example"}, False),
        ({"DATALAKE_ATHENA": "auto", "AWS_ENDPOINT_URL": MOTO}, False),
        ({"DATALAKE_ATHENA": "on", "AWS_ENDPOINT_URL": MOTO}, True),
        ({"DATALAKE_ATHENA": "on", "AWS_ENDPOINT_URL_S3": MINIO}, True),
        ({"DATALAKE_ATHENA": "off"}, False),
        ({"DATALAKE_ATHENA": "off", "AWS_ENDPOINT_URL": AWS}, False),
    ],
)
def test_an_s3_lake_has_athena_by_the_setting_and_the_endpoint(env, expected):
    assert athena_applies("s3://bucket/lake", settings.load(env)) is expected


@pytest.mark.parametrize("mode", ["auto", "on", "off"])
def test_a_local_lake_never_has_athena(mode, tmp_path):
    assert athena_applies(tmp_path / "lake", settings.load({"DATALAKE_ATHENA": mode})) is False


def test_the_environment_is_read_at_call_time(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("DATALAKE_ATHENA", "off")
    assert athena_applies("s3://bucket/lake") is False
    monkeypatch.setenv("DATALAKE_ATHENA", "auto")
    assert athena_applies("s3://bucket/lake") is True
    monkeypatch.setenv("AWS_ENDPOINT_URL", MOTO)
    assert athena_applies("s3://bucket/lake") is False

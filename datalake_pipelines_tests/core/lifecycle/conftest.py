"""A lake of each backend for the lifecycle tests: a local folder, or S3 on moto's HTTP server."""

from __future__ import annotations

import pytest

from datalake_pipelines import DatalakeClient


@pytest.fixture(params=["local", "s3"])
def base(request, tmp_path) -> str:
    """The lake's base: a folder, or ``s3://<fresh bucket>/lake`` (the AWS environment then points at moto)."""
    if request.param == "local":
        return str(tmp_path / "lake")
    return request.getfixturevalue("s3_lake")


@pytest.fixture
def client(base) -> DatalakeClient:
    return DatalakeClient(base, progress=False)

"""A PostgreSQL server for the hash-index tests, started once per session (``support/services.py``).

Every lake names its own schema (``index/pg_schema``), so the tests share one database without seeing each other.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from datalake_pipelines_tests.support.services import postgres_server


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with postgres_server() as server:
        yield server.url

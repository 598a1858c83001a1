"""Throwaway PostgreSQL and Redis servers for the scale-out tests, started by the tests themselves.

The binaries come from the distribution's packages (``make services`` installs ``postgresql`` and ``redis-server``
with apt-get when they are missing; the Makefile's ``test`` target runs it). Each server listens on 127.0.0.1 at a
free port with its data in a temporary folder, and is stopped (and its folder removed) when the context exits.

PostgreSQL refuses to run as root (``initdb: cannot be run as root``): as root the cluster is created and run as
the ``postgres`` system user that the Debian package creates, in a folder owned by it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .s3_server import free_port, wait_for_port


class ServiceMissing(RuntimeError):
    """A server binary is not installed; the message says how to install it."""


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise ServiceMissing(f"{name} not found: run `make services` (apt-get install postgresql)")
    return found


@dataclass(frozen=True)
class Postgres:
    port: int
    user: str = "datalake"
    password: str = "datalake"
    db: str = "datalake"

    @property
    def url(self) -> str:
        """``postgresql://user:password@127.0.0.1:port/db``, what ``DATALAKE_INDEX_URL`` and dagster-postgres take."""
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.db}"

    def create_database(self, name: str) -> str:
        """A new empty database on this server; returns its URL (one per test keeps tests apart)."""
        import psycopg2

        conn = psycopg2.connect(self.url.rsplit("/", 1)[0] + "/postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}" OWNER "{self.user}"')
        conn.close()
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{name}"


@contextlib.contextmanager
def postgres_server() -> Iterator[Postgres]:
    """A PostgreSQL cluster of its own (``initdb`` + ``pg_ctl``) on 127.0.0.1, with user/password/db ``datalake``."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    as_root = os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="datalake-pg-"))
    data, pwfile = root / "data", root / "pw"
    pwfile.write_text("datalake\n")
    prefix: list[str] = []
    if as_root:
        shutil.chown(root, "postgres")
        shutil.chown(pwfile, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    server = Postgres(port=free_port())
    run = {"check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    subprocess.run(
        [
            *prefix,
            initdb,
            "-D",
            str(data),
            "-U",
            server.user,
            f"--pwfile={pwfile}",
            "-A",
            "scram-sha-256",
            "-E",
            "UTF8",
        ],
        **run,  # type: ignore[call-overload]
    )
    options = f"-p {server.port} -h 127.0.0.1 -k {root} -c fsync=off -c max_connections=200"
    subprocess.run(
        [*prefix, pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"],
        **run,  # type: ignore[call-overload]
    )
    try:  # pg_ctl -w returned once the server accepts connections
        server.create_database(server.db)
        yield server
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class Redis:
    port: int

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:port/0``: the Celery broker and result backend URL."""
        return f"redis://127.0.0.1:{self.port}/0"


@contextlib.contextmanager
def redis_server() -> Iterator[Redis]:
    """A Redis server on 127.0.0.1 with no persistence, in a temporary folder."""
    binary = shutil.which("redis-server")
    if not binary:
        raise ServiceMissing("redis-server not found: run `make services` (apt-get install redis-server)")
    root = Path(tempfile.mkdtemp(prefix="datalake-redis-"))
    server = Redis(port=free_port())
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(server.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(root),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(server.port, proc)
        time.sleep(0.05)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)

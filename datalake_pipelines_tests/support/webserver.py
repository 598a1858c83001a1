"""A real ``dagster-webserver`` (and optionally ``dagster-daemon``) for tests that check what the UI shows.

``DagsterUI(home, env)`` starts ``dagster-webserver`` on a free 127.0.0.1 port against the temp
``DAGSTER_HOME`` ``home`` and the project's ``workspace.yaml`` (so the code location has the name every other
entry point uses), waits until the code location has loaded, and answers ``graphql(query, variables)``
through the same ``/graphql`` endpoint the UI's browser code calls. With ``daemon=True`` it also runs
``dagster-daemon`` (sensors, the run queue, backfills) on the same instance and workspace. Both run in their
own process groups and are stopped by ``stop()`` (SIGTERM, then SIGKILL after ``stop_timeout`` seconds).

    with DagsterUI(home, env, daemon=True) as ui:
        ui.graphql("{ version }")["version"]
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from datalake_pipelines.services.runner import INSTANCE_CONFIG

from .s3_server import free_port

PROJECT = Path(__file__).resolve().parents[2]
WORKSPACE = PROJECT / "workspace.yaml"
LOCATION_NAME = "datalake_pipelines"
REPOSITORY_NAME = "__repository__"  # the repository Dagster makes of a module's ``defs``

LOCATION_STATUS = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } }
} } } }
"""


class GraphQLError(RuntimeError):
    """The server answered with ``errors`` (the message lists them) or not with JSON."""


def prepare_home(home: Path) -> Path:
    """``home`` with the project's ``dagster.yaml`` (the run queue, tag limits, pools) copied in and its SQLite
    storage created."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(INSTANCE_CONFIG, home / "dagster.yaml")
    init_storage(home)
    return home


def init_storage(home: Path) -> None:
    """Create the instance's SQLite databases (runs, event log, schedules) now, in one process. Otherwise the
    webserver, the daemon and their code servers all create them at once on a fresh ``DAGSTER_HOME``, and under
    load one of them fails with alembic's "Version table 'alembic_version' has more than one head present"."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)


class DagsterUI:
    """``dagster-webserver`` (+ ``dagster-daemon``) on a temp instance; see the module docstring."""

    def __init__(
        self,
        home: Path,
        env: dict[str, str] | None = None,
        daemon: bool = False,
        workspace: Path = WORKSPACE,
        log_dir: Path | None = None,
        start_timeout: float = 120.0,
        stop_timeout: float = 30.0,
    ):
        self.home, self.workspace, self.with_daemon = Path(home), Path(workspace), daemon
        self.env = {**os.environ, **(env or {}), "DAGSTER_HOME": str(self.home)}
        self.log_dir = Path(log_dir) if log_dir else self.home
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        self.port = free_port()
        self.procs: dict[str, subprocess.Popen] = {}
        init_storage(self.home)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, name: str, args: list[str]) -> None:
        exe = Path(sys.executable).with_name(name)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                [str(exe), *args],
                cwd=PROJECT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: stop() signals the server and the processes it spawned
            )

    def start(self) -> DagsterUI:
        workspace = ["-w", str(self.workspace)]
        self._spawn("dagster-webserver", ["-h", "127.0.0.1", "-p", str(self.port), *workspace])
        if self.with_daemon:
            self._spawn("dagster-daemon", ["run", *workspace])
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def start_daemon(self) -> None:
        """Start ``dagster-daemon`` now, on a running ``DagsterUI(daemon=False)``: work queued through the UI
        before (a backfill, a staged batch) is then picked up by its first iterations together."""
        self._spawn("dagster-daemon", ["run", "-w", str(self.workspace)])
        self.with_daemon = True

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last: Any = "no answer"
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}: {self.log_tail(name)}")
            try:
                entries = self.graphql(LOCATION_STATUS)["workspaceOrError"]["locationEntries"]
            except (OSError, GraphQLError) as exc:  # not listening yet
                last = exc
            else:
                last = entries
                loaded = [e for e in entries if e["loadStatus"] == "LOADED"]
                if loaded and len(loaded) == len(entries):
                    errors = [e for e in entries if e["locationOrLoadError"]["__typename"] == "PythonError"]
                    if errors:
                        raise RuntimeError(f"code location failed to load: {errors}")
                    return
            time.sleep(0.5)
        raise TimeoutError(f"dagster-webserver not ready after {self.start_timeout} s: {last}")

    def graphql(self, query: str, variables: dict[str, Any] | None = None, timeout: float = 60.0) -> dict[str, Any]:
        """POST ``query`` to ``/graphql``; returns ``data``. Raises ``GraphQLError`` when the answer has errors."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise GraphQLError(f"HTTP {exc.code}: {exc.read()[:2000]!r}") from None
        except json.JSONDecodeError as exc:
            raise GraphQLError(f"not JSON: {exc}") from None
        if answer.get("errors"):
            raise GraphQLError(json.dumps(answer["errors"])[:4000])
        return answer["data"]

    def log_tail(self, name: str = "dagster-webserver", chars: int = 4000) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def __enter__(self) -> DagsterUI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Helpers for the common questions tests ask the UI.

    def repository_selector(self) -> dict[str, str]:
        return {"repositoryLocationName": LOCATION_NAME, "repositoryName": REPOSITORY_NAME}

    def wait_run(self, run_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Poll the run until it is finished; returns ``{status, tags, ...}`` as the runs page reads them."""
        query = """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run {
            runId status jobName tags { key value } startTime endTime } } }"""
        deadline = time.monotonic() + timeout
        while True:
            run = self.graphql(query, {"id": run_id})["runOrError"]
            if run.get("status") in ("SUCCESS", "FAILURE", "CANCELED") or time.monotonic() > deadline:
                return run
            time.sleep(0.5)

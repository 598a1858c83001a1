"""The orchestrator's view of a claimed batch: queued until its Dagster run starts, then running."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import dagster as dg

from ..core.lake.protocol import Claim, RunState

RUN_KEY_TAG = "dagster/run_key"
RUN_STATE = {
    dg.DagsterRunStatus.QUEUED: "queued",
    dg.DagsterRunStatus.NOT_STARTED: "queued",
    dg.DagsterRunStatus.STARTING: "running",
    dg.DagsterRunStatus.STARTED: "running",
    dg.DagsterRunStatus.CANCELING: "running",
}
# Values per ``IN (...)`` query: far below SQLite's 32,766 bound parameters and Postgres' 65,535.
QUERY_CHUNK = 500


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    return (values[i : i + QUERY_CHUNK] for i in range(0, len(values), QUERY_CHUNK))


class ClaimRuns:
    """The runs behind a set of claims, fetched once: by run key (the newest run of each) and by run id.

    One query per :data:`QUERY_CHUNK` keys instead of one per claim: with 1,000 claims outstanding the per-claim
    lookups of the recovery pass, the reaper and the queue observation cost about 5 ms each on SQLite (an engine
    per connection), about 15 s a tick, beyond the 10 s a tick may take. A key or id outside the fetched set is
    looked up on its own (a claim made after the fetch)."""

    def __init__(self, instance: dg.DagsterInstance, claims: Iterable[Claim]):
        self.instance = instance
        claims = list(claims)
        self.keys = sorted({c.run_key for c in claims if c.run_key})
        self.ids = sorted({c.run_id for c in claims if c.run_id})
        self.by_key: dict[str, dg.DagsterRun] = {}
        self.by_id: dict[str, dg.DagsterRun] = {}
        for chunk in _chunks(self.keys):
            for run in instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: list(chunk)})):  # newest first
                self.by_key.setdefault(run.tags[RUN_KEY_TAG], run)
        for chunk in _chunks(self.ids):
            self.by_id.update(
                (run.run_id, run) for run in instance.get_runs(filters=dg.RunsFilter(run_ids=list(chunk)))
            )
        self._keys, self._ids = set(self.keys), set(self.ids)

    def for_key(self, run_key: str) -> dg.DagsterRun | None:
        """The newest run created under ``run_key``, None when there is none."""
        if run_key in self._keys:
            return self.by_key.get(run_key)
        runs = self.instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1)
        return runs[0] if runs else None

    def for_id(self, run_id: str) -> dg.DagsterRun | None:
        if run_id in self._ids:
            return self.by_id.get(run_id)
        return self.instance.get_run_by_id(run_id)


def dagster_run_state(instance: dg.DagsterInstance, runs: ClaimRuns | None = None) -> RunState:
    """``RunState`` for the core: the state and id of the run holding a claim's run key, looked up in
    ``instance`` (through ``runs`` when given: fetched once for many claims); without such a run, ``running``
    once a run marked the claim, else ``queued``."""
    lookup = runs or ClaimRuns(instance, ())

    def state(claim: Claim) -> tuple[str, str | None]:
        if claim.run_key:
            run = lookup.for_key(claim.run_key)
            if run is not None:
                return RUN_STATE.get(run.status, "running"), run.run_id
        return ("running" if claim.run_id else "queued"), claim.run_id

    return state

"""The orchestrator's view of a claimed batch: queued until its Dagster run starts, then running."""

from __future__ import annotations

import dagster as dg

from ..core.lake.protocol import Claim, RunState

RUN_STATE = {
    dg.DagsterRunStatus.QUEUED: "queued",
    dg.DagsterRunStatus.NOT_STARTED: "queued",
    dg.DagsterRunStatus.STARTING: "running",
    dg.DagsterRunStatus.STARTED: "running",
    dg.DagsterRunStatus.CANCELING: "running",
}


def dagster_run_state(instance: dg.DagsterInstance) -> RunState:
    """``RunState`` for the core: the state and id of the run holding a claim's run key, looked up in
    ``instance``; without such a run, ``running`` once a run marked the claim, else ``queued``."""

    def state(claim: Claim) -> tuple[str, str | None]:
        if claim.run_key:
            runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": claim.run_key}), limit=1)
            if runs:
                return RUN_STATE.get(runs[0].status, "running"), runs[0].run_id
        return ("running" if claim.run_id else "queued"), claim.run_id

    return state

"""What the staging sensor's reaper does under a daemon, for ``datalake process start`` without one.

A start claims the ready batches of every partition, then runs one partition after another, in its own process.
Killed midway, it leaves claims behind: the batch at work marked with its run and process, the rest of that run's
group, and the claims of the partitions whose runs it had not created yet. Each claim a start makes names the
start's process (:func:`mark_owner`), so the next start can tell a dead start's claims from a live one's:

- a run that ended, or whose process is gone: its batches are reaped as the sensor reaps them (``reap_dead_runs``,
  twice: the first pass marks a dead run failed, the second hands back the rest of its group);
- a claim without a run whose owner process is gone (on this host): handed back the same way.

Handed back means its next attempt (to ``pending/`` locally; on S3 a claim awaiting its run, which this start
runs), or ``failed/`` after the last. A claim of a live process, or of another host, is never touched; and one
start of a host at a time recovers and claims (:func:`starts_lock`), so two starts never hand back one batch twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import dagster as dg

from ..core.lake.layout import PartitionRef
from ..core.lake.locks import LockTimeout, exclusive_lock
from ..core.lake.queue import process_alive
from ..lib.claims import ClaimRuns

log = logging.getLogger("datalake")
QUIET = logging.getLogger("datalake.recovery.reaper")  # the reaper's own lines: this module says it once
QUIET.propagate = False
QUIET.addHandler(logging.NullHandler())  # else Python's last-resort handler prints its warnings anyway


@contextlib.contextmanager
def starts_lock(lake) -> Iterator[None]:
    """The lock a start holds while it recovers and claims: beside the lake's warehouse lock (in the lake for a
    folder; this host's cache for S3, where only the host of a dead process can tell it is dead anyway)."""
    path = Path(lake.warehouse_lock).parent / "process-start.lock"
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(exclusive_lock(path, timeout=0))
        except LockTimeout:
            log.warning(f"waiting for another `process start` of this host to finish claiming ({path})")
            stack.enter_context(exclusive_lock(path))  # LockTimeout after 600 s, in one line
        yield


def mark_owner(lake, job_ids: list[str]) -> None:
    """Name this process in the claims of ``job_ids`` (just claimed by this start, no run yet)."""
    host = os.uname().nodename
    for job_id in job_ids:
        claim = lake.read_claim(job_id)
        if claim is not None and not claim.run_id:
            claim.pid, claim.host = os.getpid(), host
            lake.write_claim(claim)


def recover_claims(
    instance: dg.DagsterInstance, lake, echo: Callable[[str], None] = print
) -> tuple[dict[PartitionRef, list[str]], list[str]]:
    """Hand back the claims of dead runs and dead starts (see the module docstring). Returns the batches handed
    back still claimed (an S3 lake's next attempt waits for a run), by partition, to run in this start, and the
    job ids that went to ``failed/``."""
    from ..defs.ingest.sensors import TERMINAL, reap_dead_runs

    context = SimpleNamespace(instance=instance, log=QUIET)
    outcomes: list[tuple[str, str]] = []
    for _ in range(2):
        claims = lake.claims()
        outcomes += reap_dead_runs(context, lake, claims, ClaimRuns(instance, claims))
    runs = ClaimRuns(instance, claims := lake.claims())
    for claim in claims:
        if claim.run_id or not claim.run_key or (claim.run_key or "").endswith(".rejected"):
            continue
        if process_alive(claim.pid, claim.host) is not False:
            continue  # its start lives, or cannot be told (another host, or a claim the sensor made)
        # the start ran its runs in its own process: a run it created and never got to mark a batch with died too
        run = runs.for_key(claim.run_key)
        if run is not None and run.status not in TERMINAL:
            instance.report_run_failed(run, "the process running it is gone (killed?)")
        when = "before it created the batch's run" if run is None else f"while its run {run.run_id} was starting"
        reason = f"claimed by process {claim.pid}, gone {when}"
        outcomes.append((claim.job_id, lake.requeue_or_fail(claim.job_id, reason, run.run_id if run else None)))
    requeued = {job_id for job_id, outcome in outcomes if outcome == "requeued"}
    waiting: dict[PartitionRef, list[str]] = {}
    for claim in lake.claims():
        if claim.job_id in requeued and not claim.run_id:
            with contextlib.suppress(ValueError):
                waiting.setdefault(PartitionRef.parse(claim.partition or ""), []).append(claim.job_id)
    for job_id, outcome in outcomes:
        echo(f"batch {job_id}: its earlier run or start is gone (killed?); {outcome}")
    return waiting, [job_id for job_id, outcome in outcomes if outcome == "failed"]

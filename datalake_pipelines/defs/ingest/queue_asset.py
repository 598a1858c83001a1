"""``staging_queue``: the staging queue as an external asset the staging sensor observes.

An external asset (an ``AssetSpec``, nothing to materialize) rather than an ``@observable_source_asset`` or an
asset check: the sensor already triages the queue on every tick, so it reports what it decided (the same quiet
timers, the batch it has just refused) as an ``AssetObservation`` in its ``SensorResult``, at no extra scan, no
run, and the moment something changes. An observable source asset would need a run (or the automation daemon)
to observe, scanning the queue a second time on its own clock; an asset check needs an asset to check and says
pass/fail, where the queue needs a list of batches with reasons.
"""

from __future__ import annotations

import dagster as dg

from ...core.lake.queue_view import STATES, QueueSnapshot

STAGING_QUEUE = dg.AssetKey("staging_queue")
TABLE_ROWS = 200  # rows of the batches table in one observation (the counts cover every batch)

staging_queue = dg.AssetSpec(
    STAGING_QUEUE,
    group_name="ingest",
    description=(
        "The staging queue, observed by staging_sensor whenever it changes: every batch not done yet, as pending "
        "(claimed at the next tick), waiting (a hand drop not yet unchanged for the quiet period), incomplete "
        "(no usable _metadata.json yet), queued or running (claimed), failed (by its run), refused (before any "
        "run: invalid manifest, unknown provider) or quarantined (rejected rows or unused files of a done batch), "
        "each with its reason. The sensor's skip reason says the same in one line."
    ),
)

BATCH_COLUMNS = dg.TableSchema(
    columns=[
        dg.TableColumn("job_id", "string", description="batch (job id or hand-drop folder name)"),
        dg.TableColumn("state", "string", description=", ".join(STATES)),
        dg.TableColumn("partition", "string", description="provider/dataset/task/variant, when known"),
        dg.TableColumn("reason", "string", description="why it is in this state (first clause of the error)"),
        dg.TableColumn("seconds_left", "float", description="seconds until it stops waiting (waiting, incomplete)"),
        dg.TableColumn("run_id", "string", description="the run holding or last holding it"),
        dg.TableColumn("since", "string", description="UTC time it was staged, claimed or failed"),
        dg.TableColumn("path", "string", description="where it is now (folder or s3:// URI)"),
    ]
)


def queue_observation(snapshot: QueueSnapshot, base: str) -> dg.AssetObservation:
    """The observation of ``staging_queue``: counts per state, a one-line summary and the batches table."""
    order = {state: i for i, state in enumerate(STATES)}
    entries = sorted(snapshot.entries, key=lambda e: (order.get(e.state, 99), e.since, e.job_id))
    records = [
        dg.TableRecord(
            {
                "job_id": e.job_id,
                "state": e.state,
                "partition": e.partition or "",
                "reason": e.reason,
                "seconds_left": round(e.seconds_left, 1) if e.seconds_left is not None else None,
                "run_id": e.run_id or "",
                "since": e.since,
                "path": e.path,
            }
        )
        for e in entries[:TABLE_ROWS]
    ]
    metadata: dict[str, dg.RawMetadataValue] = {f"{state}": n for state, n in snapshot.counts().items()}
    metadata.update(
        summary=dg.MetadataValue.text(snapshot.summary()),
        batches=dg.MetadataValue.table(records, schema=BATCH_COLUMNS),
        staging=dg.MetadataValue.path(f"{base}/staging"),
    )
    if len(entries) > TABLE_ROWS or snapshot.more_failed:
        metadata["not_listed"] = len(entries) - len(records) + snapshot.more_failed
    return dg.AssetObservation(STAGING_QUEUE, metadata=metadata)

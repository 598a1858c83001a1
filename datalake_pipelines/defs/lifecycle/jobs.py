"""``delete_job`` and ``gc_job``: ``datalake delete`` and ``datalake gc`` from the launchpad, with typed config.

Each is one op calling the core (:mod:`...core.lifecycle`) on ``LakeResource.lake()``; the result is the op's
output metadata and a log line. A real delete also removes the dynamic partition key of each partition it
removed. A refusal (a run holds the partition, a batch is claimed) fails the run with
``dg.Failure`` naming the reason, and changes nothing.
"""

import dagster as dg
from pydantic import Field

from ...core.errors import DatalakeError
from ...core.lifecycle.delete import DeleteSelection, delete
from ...core.lifecycle.gc import collect_garbage, parse_duration
from ...lib.partitions import LAKE_PARTITIONS
from ...lib.resources import LakeResource

DELETE_JOB = "delete_job"
GC_JOB = "gc_job"


class DeleteConfig(dg.Config):
    """Run config of ``delete_job``: exactly one of batch, partition, dataset, provider."""

    batch: str = Field(default="", description="A batch (job id)")
    partition: str = Field(default="", description="provider/dataset/task/variant")
    dataset: str = Field(default="", description="provider/dataset (every task and variant)")
    provider: str = Field(default="", description="A provider (every dataset)")
    dry_run: bool = Field(default=True, description="Only report what would be deleted (set false to delete)")


class GcConfig(dg.Config):
    """Run config of ``gc_job``."""

    dry_run: bool = Field(default=True, description="Only count what would be collected (set false to collect)")
    grace: str = Field(default="24h", description="Keep unreferenced assets younger than this (90s, 30m, 24h, 7d)")
    retention: str = Field(default="7d", description="Keep the catalog files of deletions this long")


def _metadata(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if isinstance(v, (int, float, str, bool))}


@dg.op(name="delete_rows")
def delete_op(context: dg.OpExecutionContext, config: DeleteConfig, lake: LakeResource) -> dict:
    try:
        selection = DeleteSelection(config.batch, config.partition, config.dataset, config.provider)
        doc = delete(lake.lake(), selection, dry_run=config.dry_run, batch_size=lake.batch_size)
    except (DatalakeError, ValueError) as exc:
        raise dg.Failure(description=str(exc)) from None
    verb = "would delete" if config.dry_run else "deleted"
    context.log.info(
        f"{verb} {doc['rows']} row(s) in {len(doc['partitions'])} partition(s); {doc['bytes_freed']} B freed by GC"
    )
    if not config.dry_run:
        doc["dynamic_partitions_removed"] = _drop_partition_keys(context.instance, doc["partitions"])
    context.add_output_metadata({**_metadata(doc), "partitions": dg.MetadataValue.json(doc["partitions"])})
    return doc


def _drop_partition_keys(instance: dg.DagsterInstance, partitions: list[dict]) -> list[str]:
    """Remove the dynamic partition key of every partition the deletion removed, so the UI stops listing a
    partition the lake no longer has (the ingest sensor adds it again if a batch of it arrives later). The
    materializations stay in the event log."""
    gone = [p["partition"] for p in partitions if p.get("removed")]
    dropped = [key for key in gone if instance.has_dynamic_partition(LAKE_PARTITIONS, key)]
    for key in dropped:
        instance.delete_dynamic_partition(LAKE_PARTITIONS, key)
    return dropped


@dg.op(name="collect_garbage")
def gc_op(context: dg.OpExecutionContext, config: GcConfig, lake: LakeResource) -> dict:
    try:
        doc = collect_garbage(
            lake.lake(),
            dry_run=config.dry_run,
            grace_seconds=parse_duration(config.grace),
            retention_seconds=parse_duration(config.retention),
            log=context.log,
        )
    except (DatalakeError, ValueError) as exc:
        raise dg.Failure(description=str(exc)) from None
    verb = "would collect" if config.dry_run else "collected"
    context.log.info(f"{verb} {doc['collected']} asset(s), {doc['bytes']} B, of {doc['assets']}")
    context.add_output_metadata(_metadata(doc))
    return doc


@dg.job(name=DELETE_JOB, description="Delete a batch, partition, dataset or provider from the catalog")
def delete_job() -> None:
    delete_op()


@dg.job(name=GC_JOB, description="Collect assets no catalog row references (mark and sweep)")
def gc_job() -> None:
    gc_op()

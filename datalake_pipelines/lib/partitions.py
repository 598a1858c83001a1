"""The lake's single dynamic partitions definition and the run tags that carry each level.

Every run that writes a partition carries Dagster's own ``dagster/partition`` tag, whoever launched it (the
staging sensor, the UI, a backfill, ``dg launch``): ``config/dagster.yaml`` keys the one-run-per-partition limit
on it. The ``datalake/*`` tags (one per level, for filtering the runs page) come from the partition key too:
job runs carry them from creation (``ingest_job``'s :data:`partition_config`), and runs Dagster creates from
the asset alone (the asset page's Materialize, asset backfills, ``dg launch --assets``) get them when their
first step starts (:func:`tag_partition_run`, called by ``LakeResource``).
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from ..core.lake.layout import PARTITION_LEVELS, PartitionRef

LAKE_PARTITIONS = "lake_partitions"  # the name as a str: DynamicPartitionsDefinition.name is Optional
lake_partitions = dg.DynamicPartitionsDefinition(name=LAKE_PARTITIONS)

TAG_PREFIX = "datalake"
PARTITION_TAG = f"{TAG_PREFIX}/partition"
JOB_IDS_TAG = f"{TAG_PREFIX}/job_ids"
DAGSTER_PARTITION_TAG = "dagster/partition"  # set by Dagster on every single-partition run: the limit's key


@dataclass(frozen=True)
class LakePartitionKey:
    """Typed form of a ``provider/dataset/task/variant`` partition key."""

    ref: PartitionRef

    @classmethod
    def parse(cls, key: str) -> LakePartitionKey:
        return cls(PartitionRef.parse(key))

    @classmethod
    def of(cls, provider: str, dataset: str, task: str, variant: str) -> LakePartitionKey:
        return cls(PartitionRef(provider, dataset, task, variant))

    @property
    def key(self) -> str:
        return self.ref.key

    def tags(self) -> dict[str, str]:
        """Run tags: one per level plus the whole key (the concurrency-limit tag)."""
        tags = {f"{TAG_PREFIX}/{level}": getattr(self.ref, level) for level in PARTITION_LEVELS}
        tags[PARTITION_TAG] = self.key
        return tags


def is_valid_partition_key(key: str) -> bool:
    try:
        LakePartitionKey.parse(key)
    except ValueError:
        return False
    return "..." not in key


def partition_tags(key: str) -> dict[str, str]:
    """The ``datalake/*`` run tags of a partition key; ``{}`` for a key that is not a lake partition."""
    return LakePartitionKey.parse(key).tags() if is_valid_partition_key(key) else {}


# ``ingest_job``'s partitioned config: no run config, the datalake/* tags of the key (every launch path of the job)
partition_config = dg.PartitionedConfig(
    partitions_def=lake_partitions,
    run_config_for_partition_key_fn=lambda _key: {},
    tags_for_partition_key_fn=partition_tags,
)


def tag_partition_run(instance: dg.DagsterInstance | None, run: dg.DagsterRun | None) -> dict[str, str]:
    """Add the ``datalake/*`` tags a single-partition run lacks (derived from its ``dagster/partition`` tag);
    returns the tags added (``{}`` without an instance, a run, a partition or anything missing)."""
    if instance is None or run is None:
        return {}
    tags = partition_tags(run.tags.get(DAGSTER_PARTITION_TAG, ""))
    missing = {k: v for k, v in tags.items() if run.tags.get(k) != v}
    if missing:
        instance.add_run_tags(run.run_id, missing)
    return missing

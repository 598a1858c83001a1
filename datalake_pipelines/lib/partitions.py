"""The lake's single dynamic partitions definition and the run tags that carry each level."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from ..core.lake.layout import PARTITION_LEVELS, PartitionRef

LAKE_PARTITIONS = "lake_partitions"  # the name as a str: DynamicPartitionsDefinition.name is Optional
lake_partitions = dg.DynamicPartitionsDefinition(name=LAKE_PARTITIONS)

TAG_PREFIX = "datalake"
PARTITION_TAG = f"{TAG_PREFIX}/partition"
JOB_IDS_TAG = f"{TAG_PREFIX}/job_ids"


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

"""Asset checks of ``catalog_partition``: asset files, duplicate rows, required meta."""

import warnings

import dagster as dg

from ...core.schema import load_schema
from ...core.verify import CheckOutcome, check_asset_files, check_duplicate_rows, check_required_meta
from ...lib.partitions import LakePartitionKey, lake_partitions
from ...lib.resources import LakeResource
from .assets import catalog_partition, run_job_ids

warnings.filterwarnings("ignore", category=dg.PreviewWarning)


def _result(outcome: CheckOutcome, what: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=outcome.passed,
        description=f"{outcome.checked} {what} checked"
        + ("" if outcome.passed else f"; {len(outcome.problems)}+ problems"),
        metadata={"checked": outcome.checked, "problems": dg.MetadataValue.json(outcome.problems)},
    )


@dg.asset_check(asset=catalog_partition, partitions_def=lake_partitions, blocking=False)
def asset_files_match_hashes(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    """Each image of the rows this run added (all rows on a rebuild) exists and its SHA-256 matches its name."""
    ref = LakePartitionKey.parse(context.partition_key).ref
    job_ids = run_job_ids(context) or None
    return _result(check_asset_files(lake.layout, ref, job_ids), "asset references")


@dg.asset_check(asset=catalog_partition, partitions_def=lake_partitions, blocking=False)
def no_duplicate_rows(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    """No two catalog rows of the partition have the same content (row_hash)."""
    ref = LakePartitionKey.parse(context.partition_key).ref
    return _result(check_duplicate_rows(lake.layout, ref), "rows")


@dg.asset_check(asset=catalog_partition, partitions_def=lake_partitions, blocking=False)
def required_meta_present(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    """Task partitions: every row has each required meta field with an allowed value."""
    ref = LakePartitionKey.parse(context.partition_key).ref
    layout = lake.layout
    return _result(check_required_meta(layout, ref, load_schema(layout)), "rows")

"""Asset checks of ``catalog_partition``: asset files, duplicate rows, required meta."""

import warnings

import dagster as dg
from dagster_aws.s3 import S3Resource

from ...core.ingest.verify import CheckOutcome, check_asset_files, check_duplicate_rows, check_required_meta
from ...lib.partitions import LakePartitionKey, lake_partitions
from ...lib.resources import LakeResource
from .assets import catalog_partition, run_job_ids

warnings.filterwarnings("ignore", category=dg.PreviewWarning)


def _result(outcome: CheckOutcome, what: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=outcome.passed,
        description=f"{outcome.checked} {what} checked"
        + ("" if outcome.passed else f"; {len(outcome.problems)}+ problems"),
        metadata={
            "checked": outcome.checked,
            "problems": dg.MetadataValue.json(outcome.problems),
            "missing": dg.MetadataValue.json(outcome.missing[:100]),
        },
    )


@dg.asset_check(asset=catalog_partition, partitions_def=lake_partitions, blocking=False)
def asset_files_match_hashes(
    context: dg.AssetCheckExecutionContext, lake: LakeResource, s3: S3Resource
) -> dg.AssetCheckResult:
    """Every file reference of the rows this run added (all rows on a rebuild), deduplicated or new, names an
    existing asset of the expected size whose SHA-256 matches its name and the catalog."""
    ref = LakePartitionKey.parse(context.partition_key).ref
    job_ids = run_job_ids(context) or None
    the_lake = lake.lake(s3)
    with the_lake.partition_view(ref) as view:
        outcome = check_asset_files(
            view, ref, job_ids, the_lake.asset_sha256, storage=the_lake.storage, sizes_of=the_lake.asset_sizes
        )
        return _result(outcome, "asset references")


@dg.asset_check(asset=catalog_partition, partitions_def=lake_partitions, blocking=False)
def no_duplicate_rows(
    context: dg.AssetCheckExecutionContext, lake: LakeResource, s3: S3Resource
) -> dg.AssetCheckResult:
    """No two catalog rows of the partition share a ``row_hash`` (content + occurrence number): no row was stored
    twice. Identical rows uploaded together are distinct rows with distinct hashes, so they do not count."""
    ref = LakePartitionKey.parse(context.partition_key).ref
    with lake.lake(s3).partition_view(ref) as view:
        return _result(check_duplicate_rows(view, ref), "rows")


@dg.asset_check(asset=catalog_partition, partitions_def=lake_partitions, blocking=False)
def required_meta_present(
    context: dg.AssetCheckExecutionContext, lake: LakeResource, s3: S3Resource
) -> dg.AssetCheckResult:
    """Task partitions: every row has each required meta field with an allowed value."""
    ref = LakePartitionKey.parse(context.partition_key).ref
    the_lake = lake.lake(s3)
    with the_lake.partition_view(ref) as view:
        return _result(check_required_meta(view, ref, the_lake.schema()), "rows")

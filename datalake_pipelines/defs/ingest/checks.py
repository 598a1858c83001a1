"""The checks of ``catalog_partition``, computed in the asset's own step (``check_specs``).

Running them in the step that wrote the partition costs no extra process: a UI or backfill rebuild of a small
partition is one step in one process, a few seconds, where four steps (the asset and three ``@asset_check``
ops, each in its own subprocess) took over half a minute. They read the view the run worked in (on S3 the
work lake holding the whole partition) and the lake's stored assets.
"""

import warnings

import dagster as dg

from ...core.ingest.verify import CheckOutcome, check_asset_files, check_duplicate_rows, check_required_meta
from ...core.lake.layout import LakeLayout, PartitionRef
from ...core.lake.protocol import Lake
from ...lib.partitions import lake_partitions
from .rejections import CHECK_NAME as REJECTIONS_CHECK

warnings.filterwarnings("ignore", category=dg.PreviewWarning)  # partitioned check specs are a preview API

ASSET_KEY = "catalog_partition"

CHECK_DESCRIPTIONS = {
    REJECTIONS_CHECK: (
        "WARN when the run rejected any file (truncated or corrupt image, missing file, ...): the rows that were "
        "kept are in the catalog, the rejected ones and their files in the quarantine folder the run names "
        "(`rejected_files` in the materialization's metadata). A rebuild rejects nothing; the partition's "
        "earlier rejections stay listed in `rejection_history`."
    ),
    "asset_files_match_hashes": (
        "Every file reference of the rows this run added (all rows on a rebuild), deduplicated or new, names an "
        "existing asset of the expected size whose SHA-256 matches its name and the catalog."
    ),
    "no_duplicate_rows": (
        "No two catalog rows of the partition share a `row_hash` (content + occurrence number): no row was "
        "stored twice. Identical rows uploaded together are distinct rows with distinct hashes."
    ),
    "required_meta_present": "Task partitions: every row has each required meta field with an allowed value.",
}

CHECK_SPECS = [
    dg.AssetCheckSpec(name, asset=ASSET_KEY, description=text, partitions_def=lake_partitions)
    for name, text in CHECK_DESCRIPTIONS.items()
]

CHECK_OUTS = [spec.get_python_identifier() for spec in CHECK_SPECS]  # the commit op's outputs of the checks


def _result(name: str, outcome: CheckOutcome, what: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        passed=outcome.passed,
        description=f"{outcome.checked} {what} checked"
        + ("" if outcome.passed else f"; {len(outcome.problems)}{'+' if outcome.truncated else ''} problems"),
        metadata={
            "checked": outcome.checked,
            "problems": dg.MetadataValue.json(outcome.problems),
            "missing": dg.MetadataValue.json(outcome.missing[:100]),
        },
    )


def integrity_checks(
    lake: Lake, view: LakeLayout, ref: PartitionRef, job_ids: list[str] | None
) -> list[dg.AssetCheckResult]:
    """``asset_files_match_hashes`` (the rows of ``job_ids``; every row when None), ``no_duplicate_rows`` and
    ``required_meta_present`` of partition ``ref``, read from ``view``."""
    files = check_asset_files(
        view, ref, job_ids or None, lake.asset_sha256, storage=lake.storage, sizes_of=lake.asset_sizes
    )
    return [
        _result("asset_files_match_hashes", files, "asset references"),
        _result("no_duplicate_rows", check_duplicate_rows(view, ref), "rows"),
        _result("required_meta_present", check_required_meta(view, ref, lake.schema()), "rows"),
    ]

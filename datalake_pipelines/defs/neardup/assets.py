"""``near_duplicates``: clusters of near-duplicate images across the lake (pHash within a Hamming distance).

The report itself is :func:`~datalake_pipelines.core.neardup.report.near_duplicate_report` (the same as
``datalake near-dups`` and ``DatalakeClient.near_duplicates``). The materialization's metadata shows the counts,
the first clusters as JSON, and the clusters' members side by side as thumbnails: a Markdown table of
data-URI JPEGs (~96 px, about 60 KB in all), which the UI renders in the metadata's "Show Markdown" dialog.
"""

import dagster as dg
from pydantic import Field

from ...core.neardup.report import DEFAULT_THRESHOLD, near_duplicate_report, thumbnails_markdown
from ...core.storage.backends import open_storage
from ...lib.asset_info import asset_info
from ...lib.resources import LakeResource
from ..ingest.assets import catalog_partition

THUMBNAIL_BUDGET = 60_000  # characters of Markdown: the asset page downloads recent metadata on every load
JSON_CLUSTERS = 20  # clusters listed in the JSON metadata entry (the CLI and the Python API give all)


class NearDuplicatesConfig(dg.Config):
    threshold: int = Field(default=DEFAULT_THRESHOLD, description="Hamming distance in bits of the 64-bit pHash")
    partition: str = Field(default="", description="provider/dataset/task/variant against the rest; empty: all")


@dg.asset(
    deps=[catalog_partition],
    group_name="neardup",
    kinds={"python"},
    description="Clusters of near-duplicate images across the lake (64-bit pHash, multi-index hashing).",
    **asset_info().asset_kwargs(),
)
def near_duplicates(
    context: dg.AssetExecutionContext, config: NearDuplicatesConfig, lake: LakeResource
) -> dg.MaterializeResult:
    base = lake.base if lake.kind == "s3" else str(lake.layout.base)
    report = near_duplicate_report(base, config.threshold, config.partition or None)
    storage = open_storage(base)
    markdown = thumbnails_markdown(report["clusters"], storage.read_bytes, budget=THUMBNAIL_BUDGET)
    context.log.info(
        f"{report['cluster_count']} near-duplicate cluster(s) holding {report['images_in_clusters']} of "
        f"{report['images']} images within {report['threshold']} bits, {report['seconds']} s"
    )
    shown = [
        {**{k: c[k] for k in ("cluster", "size", "max_distance")},
         "members": [{k: m[k] for k in ("partition", "row_hash", "column", "sha256", "distance")}
                     for m in c["members"][:10]]}
        for c in report["clusters"][:JSON_CLUSTERS]
    ]  # fmt: skip
    return dg.MaterializeResult(
        metadata={
            "threshold": report["threshold"],
            "scope": report["scope"] or "whole lake",
            "images": report["images"],
            "images_without_phash": report["images_without_phash"],
            "clusters": report["cluster_count"],
            "images_in_clusters": report["images_in_clusters"],
            "seconds": report["seconds"],
            "first_clusters": dg.MetadataValue.json(shown),
            "thumbnails": dg.MetadataValue.md(markdown),
        }
    )

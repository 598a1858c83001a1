"""``athena_tables``: the Glue database, ``catalog_<task>`` tables and partitions of an S3 lake."""

import dagster as dg

from ...core.athena.scope import athena_possible
from ...core.athena.tables import ddl_statements, sync_athena_tables
from ...core.lake.layout import BASE_PATH_ENV
from ...lib.resources import LakeResource
from ..ingest.assets import catalog_partition
from .resources import AthenaSettings

DDL_PARTITIONS_SHOWN = 50


@dg.asset(
    deps=[catalog_partition],
    group_name="warehouse",
    kinds={"athena", "glue"},
    pool="athena",
    description=(
        "Glue/Athena tables over the S3 catalog: one external Parquet table per task family (catalog_<task>), "
        "partitioned by provider/dataset/task/variant; new partitions registered, changed columns updated."
    ),
)
def athena_tables(
    context: dg.AssetExecutionContext, lake: LakeResource, athena: AthenaSettings
) -> dg.MaterializeResult:
    base = lake.base
    if not athena_possible(base):  # asked for by name: DATALAKE_ATHENA=auto/off does not refuse it
        raise dg.Failure(
            description=f"Athena needs an s3:// lake, but the lake base is {base or './lake'!r} "
            f"(set {BASE_PATH_ENV} or the lake resource's base_path to s3://bucket/prefix)"
        )
    result = sync_athena_tables(base, athena.database, glue=athena.glue_client())
    for skipped in result.skipped_columns:
        context.log.warning(f"{skipped.table}.{skipped.column} left out: {skipped.reason}")
    added = {t: keys[:DDL_PARTITIONS_SHOWN] for t, keys in result.partitions_added.items()}
    ddl = ddl_statements(result.tables, result.database, added)
    shown = sum(map(len, added.values()))
    more = (
        f"\n-- ... and {result.partitions_added_count - shown} more partitions"
        if shown < result.partitions_added_count
        else ""
    )
    context.log.info(
        f"{len(result.tables)} tables, {len(result.tables_created)} created, {len(result.tables_updated)} updated, "
        f"{result.partitions_added_count} partitions added"
    )
    return dg.MaterializeResult(
        metadata={
            "database": result.database,
            "athena_output": athena.output_location(base),
            "tables": dg.MetadataValue.json(
                {t.name: {"columns": len(t.columns), "partitions": len(t.partitions)} for t in result.tables}
            ),
            "tables_created": dg.MetadataValue.json(result.tables_created),
            "tables_updated": dg.MetadataValue.json(result.tables_updated),
            "partitions_added": result.partitions_added_count,
            "partitions_added_keys": dg.MetadataValue.json(result.partitions_added),
            "skipped_columns": dg.MetadataValue.json(
                [{"table": s.table, "column": s.column, "reason": s.reason} for s in result.skipped_columns]
            ),
            "ddl": dg.MetadataValue.md("```sql\n" + ";\n\n".join(ddl) + ";" + more + "\n```"),
        }
    )

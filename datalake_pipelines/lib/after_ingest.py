"""Coalesced follow-up runs: one run request per new ``catalog_partition`` materialization high-water mark."""

import dagster as dg


def after_new_materializations(
    context: dg.SensorEvaluationContext, asset_key: dg.AssetKey, run_key_prefix: str, up_to_date: str
) -> dg.SensorResult | dg.SkipReason:
    """A run keyed ``<prefix>-<storage id>`` when ``asset_key`` was materialized since the cursor, else a skip."""
    records = context.instance.fetch_materializations(asset_key, limit=1).records
    if not records:
        return dg.SkipReason(f"no {asset_key.to_user_string()} materialization yet")
    latest = records[0].storage_id
    if context.cursor and int(context.cursor) >= latest:
        return dg.SkipReason(up_to_date)
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"{run_key_prefix}-{latest}")], cursor=str(latest))

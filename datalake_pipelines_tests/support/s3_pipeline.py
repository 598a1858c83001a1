"""Drive the real staging sensor and ingest job against an S3 lake (shared by the S3 test modules)."""

import dagster as dg
from dagster_aws.s3 import S3Resource

from datalake_pipelines.definitions import defs
from datalake_pipelines.defs.ingest.sensors import staging_sensor
from datalake_pipelines.lib.resources import LakeResource


def resources(s3_lake: str) -> dict:
    return {"lake": LakeResource(base_path=s3_lake), "s3": S3Resource()}


def tick(instance, s3_lake: str, cursor=None) -> dg.SensorResult:
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources(s3_lake))
    return staging_sensor(ctx)


def run(instance, s3_lake: str, request: dg.RunRequest, result: dg.SensorResult):
    for req in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return defs.resolve_job_def("ingest_job").execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        tags=request.tags,
        resources=resources(s3_lake),
        raise_on_error=False,
    )

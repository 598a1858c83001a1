"""``catalog_partition`` on an S3 lake: process claimed batches in a local work lake, publish to S3."""

import os

from ...core.ingest.processing import BatchResult
from ...core.lake.s3 import S3Lake, partition_prefix
from ...lib.resources import LakeResource


def materialize_s3_partition(context, lake: LakeResource, client, ref, job_ids: list[str], report):
    """Same contract as the local path: ``report(results, work_layout, ref, catalog_uri)`` builds the result."""
    s3_lake = lake.s3_lake(client)
    catalog_uri = s3_lake.uri_of(partition_prefix(ref))
    with s3_lake.work_lake(job_ids) as work:
        if not job_ids:
            result = s3_lake.rebuild_partition(work, ref, lake.batch_size)
            context.log.info(f"rebuilt {ref.key} on S3: {result.rows} rows from {result.files_before} files")
            return report(None, work, ref, catalog_uri, result)
        results: list[BatchResult] = []
        run_info = {"run_id": context.run.run_id, "step": "catalog_partition"}
        try:
            for job_id in job_ids:
                mark_running(s3_lake, job_id, context.run.run_id)
                result = s3_lake.process(work, job_id, lake.process_options(), run_info)
                if result.status == "skipped":
                    context.log.warning(f"batch {job_id}: {result.error}; skipped")
                    continue
                results.append(result)
                log = context.log.info if result.status == "done" else context.log.error
                log(f"batch {job_id}: {result.status}, {result.rows_added} rows added" + _error(result))
        except BaseException as exc:
            for job_id in job_ids:  # nothing stays claimed by a run that is going away
                if s3_lake.read_claim(job_id) is not None:
                    s3_lake.fail(job_id, {**run_info, "error": f"run aborted: {type(exc).__name__}: {exc}"})
            raise
        return report(results, work, ref, catalog_uri, None)


def mark_running(s3_lake: S3Lake, job_id: str, run_id: str) -> None:
    marker = s3_lake.read_claim(job_id)
    if marker is not None:
        marker.run_id, marker.pid, marker.host = run_id, os.getpid(), os.uname().nodename
        s3_lake.write_claim(marker)


def _error(result: BatchResult) -> str:
    return f": {result.error}" if result.error else ""

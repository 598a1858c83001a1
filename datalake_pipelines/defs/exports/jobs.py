"""``export_job``: one op running :func:`run_export` from typed run config (launchpad, CLI or Python).

Progress is live in three places: ``context.log.info`` lines in the run's event log (every 10% or 5 s),
``<base>/exports/<run_id>/progress.json`` (in the lake, local or S3; read by ``export_info``), and the op's
output metadata at the end.
An :class:`ExportError` fails the run with ``dg.Failure`` carrying ``err_code`` in its metadata.
"""

import json
import time
from typing import Any

import dagster as dg
from pydantic import Field

from ...core.export.source import open_source
from ...core.export.tasks import DEFAULT_OPTIONS, ExportError, ExportParams, run_export
from ...core.storage.backends import Storage, open_storage
from ...core.storage.files import utc_now_iso

EXPORT_JOB = "export_job"
EXPORT_OP = "export"
PROGRESS_FILE = "progress.json"
TASK_TAG = "datalake/task_type"


def progress_key(run_id: str) -> str:
    """Where an export run's ``progress.json`` lives in its lake (local folder or S3: the same key)."""
    return f"exports/{run_id}/{PROGRESS_FILE}"


def export_name(run_id: str) -> str:
    """The folder an export run writes under its destination."""
    return f"export-{run_id}"


class ExportConfig(dg.Config):
    """Run config of ``export_job`` (the ``task_params`` of an export task)."""

    destination: str = Field(
        description="Local folder or s3://bucket/prefix; the export lands in <destination>/export-<run_id>/"
    )
    filter: dict[str, list[str]] = Field(
        default_factory=dict,
        description='Field -> accepted values, AND across fields, e.g. {"provider": ["aihub"], "lang": ["ko"]}',
    )
    filter_json: str = Field(
        default="",
        description="The filter as JSON with its values' own types (numbers, booleans); wins over 'filter', "
        "whose text values would let 1 match the text '1' or 'true' a boolean",
    )
    export_all: bool = Field(default=False, description="Export every row; the filter is ignored")
    file_type: str = Field(default="parquet", description="parquet, jsonl, arrow, hf or hdf5")
    base_path: str = Field(
        default="", description="Lake folder or s3://bucket/prefix; empty: $DATALAKE_BASE_PATH or ./lake"
    )
    batch_size: int = Field(default=DEFAULT_OPTIONS["batch_size"], description="Rows per record batch")
    hdf5_images: str = Field(default="bytes", description="HDF5 images: 'bytes' (stored file) or 'resized'")
    hdf5_image_shape: list[int] = Field(default=[224, 224, 3], description="[H, W, C] for resized HDF5 images")
    hdf5_compression: str = Field(default="", description="'', 'gzip' or 'lzf' for fixed-size HDF5 datasets")
    exclude_near_duplicates: int | None = Field(
        default=None, description="Keep one row per cluster of images within this many bits of pHash (0-24)"
    )
    as_of: str = Field(
        default="",
        description="Export the catalog as it was then: an ISO 8601 timestamp (UTC if no offset) or a catalog "
        "version id (`datalake catalog versions`); empty: now",
    )

    def export_params(self) -> ExportParams:
        options = {
            "batch_size": self.batch_size,
            "hdf5_images": self.hdf5_images,
            "hdf5_image_shape": list(self.hdf5_image_shape),
            "hdf5_compression": self.hdf5_compression or None,
            "exclude_near_duplicates": self.exclude_near_duplicates,
        }
        return ExportParams(
            destination=self.destination,
            filter=json.loads(self.filter_json) if self.filter_json else {k: list(v) for k, v in self.filter.items()},
            export_all=self.export_all,
            file_type=self.file_type,
            options=options,
            as_of=self.as_of or None,
        )


class ProgressReporter:
    """Writes ``progress.json`` (at most every 0.5 s) and logs a line every 10% or 5 s."""

    def __init__(self, context: dg.OpExecutionContext, storage: Storage):
        self.context = context
        self.storage = storage
        self.last_write = self.last_log = 0.0
        self.last_percent = -10

    def write(self, status: str, info: dict[str, Any], **extra: Any) -> None:
        doc = {"task_id": self.context.run_id, "status": status, "process_info": info, **extra}
        data = json.dumps({**doc, "updated_at": utc_now_iso()}, indent=2, default=str).encode()
        self.storage.write_bytes(progress_key(self.context.run_id), data)  # atomic locally, one PUT on S3
        self.last_write = time.monotonic()

    def __call__(self, info: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self.last_write >= 0.5 or info["stage"] != "exporting":
            self.write("running", info)
        percent = int(info["task_progress"].rstrip("%"))
        if percent >= self.last_percent + 10 or now - self.last_log >= 5:
            self.last_percent, self.last_log = percent, now
            self.context.log.info(
                f"export {info['stage']}: {info['task_progress']} ({info['scan_data_count']:,} of "
                f"{info['total_filter_count']:,} matching rows; {info['total_data_count']:,} rows in snapshot)"
            )


@dg.op(name=EXPORT_OP, out=dg.Out(dg.Nothing), description="Export a filtered catalog snapshot to files.")
def export_op(context: dg.OpExecutionContext, config: ExportConfig) -> None:
    source = open_source(config.base_path or None)
    reporter = ProgressReporter(context, open_storage(str(source.base)))
    reporter.write("running", {})
    try:
        result = run_export(source, config.export_params(), reporter, name=export_name(context.run_id))
    except ExportError as exc:
        reporter.write("fail", {"err_code": exc.code, "err_msg": exc.message})
        raise dg.Failure(
            description=f"[{exc.code}] {exc.message}",
            metadata={"err_code": exc.code, "err_msg": exc.message},
            allow_retries=False,
        ) from None
    info = {k: v for k, v in result.items() if k not in ("path", "manifest")}
    reporter.write("done", info, path=result["path"])
    context.log.info(f"export done: {result['scan_data_count']:,} rows -> {result['path']}")
    context.add_output_metadata(
        {
            "path": dg.MetadataValue.path(result["path"]),  # a folder or an s3:// URI
            "file_type": config.file_type,
            "dagster/row_count": result["scan_data_count"],
            "total_data_count": result["total_data_count"],
            "sampled_timestamp": result["sampled_timestamp"],
            "sampled_data": dg.MetadataValue.json(result["sampled_data"]),
            "near_duplicates": dg.MetadataValue.json(result["manifest"].get("near_duplicates") or {}),
        }
    )


@dg.job(
    name=EXPORT_JOB,
    description="Export catalog rows (filter or export_all) as parquet/jsonl/arrow/hf/hdf5; the run id is the task id.",
    tags={TASK_TAG: "export"},
    executor_def=dg.in_process_executor,
)
def export_job() -> None:
    export_op()

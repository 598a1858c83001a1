"""``datalake export create|info``: start an export task (a Dagster run) and follow its status and progress.

Handlers take the parsed ``args`` (``args.base_path`` is the lake folder or ``None``) and return an exit code.
An :class:`ExportError` is a ``DatalakeError``, so the main CLI prints ``error: [CODE] message`` and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from functools import partial
from typing import Any

from ..core.export.tasks import FILE_TYPES, ExportError, ExportParams
from .common import AS_OF_HELP, emit, global_options, json_object, split_pair

FINAL = ("done", "fail")


def parse_filters(items: list[str] | None, json_text: str | None = None) -> dict[str, list[Any]]:
    """``--filter`` flags and ``--filter-json`` -> ``{field: [accepted values]}``.

    Each ``--filter FIELD=VALUE`` holds exactly one value: everything after the first ``=``, commas and spaces
    included (``--filter "city=Seoul, Korea"``). Repeat the flag for more values of a field (they are OR-ed;
    fields are AND-ed). ``--filter-json '{"lang": ["ko", "en"], "score": [1]}'`` gives lists (and numbers) at
    once; its fields merge with the flags'. Values are never split.
    """
    filters: dict[str, list[Any]] = {}

    def add(key: str, value: Any) -> None:
        values = filters.setdefault(key, [])
        if value not in values:
            values.append(value)

    for item in items or []:
        pair = split_pair(item)
        if pair is None:
            raise ExportError("INVALID_FILTER_FIELD", f"--filter expects FIELD=VALUE, got {item!r}")
        key, value = pair
        if not value:
            raise ExportError("EMPTY_FILTER_VALUES", f"--filter {key}= has no value")
        add(key, value)
    if json_text:
        doc = json_object(json_text, "--filter-json", "{field: [values]}", partial(ExportError, "INVALID_FILTER_TYPE"))
        for key, values in doc.items():
            if not isinstance(values, list):
                raise ExportError("INVALID_FILTER_TYPE", f"--filter-json {key!r}: give a list of values")
            if not values:
                raise ExportError("EMPTY_FILTER_VALUES", f"--filter-json {key!r} has an empty list of values")
            for value in values:
                add(key, value)
    return filters


def parse_shape(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(v) for v in text.lower().split("x")]
    except ValueError:
        raise ExportError("INVALID_OPTION", f"--hdf5-shape expects HxWxC, e.g. 224x224x3, got {text!r}") from None


def _summary(info: dict[str, Any], with_error: bool = True) -> str:
    """The task as text; ``with_error=False`` leaves the error out when the caller prints it as its own
    ``error:`` line on stderr (one error line per failure)."""
    p = info["process_info"]
    lines = [
        f"task {info['task_id']}: {info['task_status']} ({p['task_progress']})",
        f"  rows: {p['scan_data_count']:,} exported of {p['total_filter_count']:,} matching, "
        f"{p['total_data_count']:,} in the snapshot (sampled_timestamp {p['sampled_timestamp']})",
        f"  params: {json.dumps(info['task_params'], ensure_ascii=False)}",
        f"  output: {info['export_path']}",
        f"  created {info['create_time']}, updated {info['update_time']}",
    ]
    if with_error and p.get("err_code"):
        lines.append(f"  error: [{p['err_code']}] {p['err_msg']}")
    return "\n".join(lines)


def cmd_export_create(args: argparse.Namespace) -> int:
    from ..services.exports import create_export
    from ..services.runner import get_instance

    params = ExportParams(
        destination=args.destination,
        filter=parse_filters(args.filter, args.filter_json),
        export_all=args.export_all,
        file_type=args.file_type,
        options={
            "batch_size": args.batch_size,
            "hdf5_images": args.hdf5_images,
            "hdf5_image_shape": parse_shape(args.hdf5_shape),
            "hdf5_compression": args.hdf5_compression,
            "exclude_near_duplicates": args.exclude_near_duplicates,
        },
        as_of=args.as_of,
    )
    if not params.filter and not params.export_all:
        raise ExportError("INVALID_FILTER_FIELD", "give at least one --filter field=values, or --export-all")
    instance = get_instance()
    if not args.now:
        task_id = create_export(instance, params, base_path=args.base_path)
    else:
        # Dagster logs every event of an in-process run to stderr, a failure with its stack trace; the
        # details stay in the run's event log (``dagster`` UI, ``export info``): the CLI shows one error line.
        with contextlib.redirect_stderr(io.StringIO()):
            task_id = create_export(instance, params, base_path=args.base_path, wait=True)
        from ..services.exports import export_info

        info = export_info(instance, None, task_id)
        emit(args, info, _summary(info, with_error=False))
        if info["task_status"] == "done":
            return 0
        p = info["process_info"]
        print(f"error: [{p.get('err_code') or 'EXPORT_FAILED'}] {p.get('err_msg') or 'the export run failed'}",
              file=sys.stderr)  # fmt: skip
        return 1
    emit(args, {"task_id": task_id}, task_id)
    return 0


def watch(instance, task_id: str, interval: float = 1.0) -> dict[str, Any]:
    """Follow a task with a tqdm bar until it is done or failed; return its last info."""
    from tqdm.auto import tqdm

    from ..services.exports import export_info

    info = export_info(instance, None, task_id)
    with tqdm(total=None, unit="rows", desc=f"export {task_id[:8]}") as bar:
        while True:
            p = info["process_info"]
            bar.total = p["total_filter_count"] or None
            bar.n = p["scan_data_count"]
            bar.set_postfix_str(f"{info['task_status']} {p['task_progress']}", refresh=False)
            bar.refresh()
            if info["task_status"] in FINAL:
                return info
            time.sleep(interval)
            info = export_info(instance, None, task_id)


def cmd_export_info(args: argparse.Namespace) -> int:
    from ..services.exports import export_info
    from ..services.runner import get_instance

    instance = get_instance()
    info = watch(instance, args.task_id, args.interval) if args.watch else export_info(instance, None, args.task_id)
    emit(args, info, _summary(info))
    return 1 if args.watch and info["task_status"] == "fail" else 0


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser] | None = None) -> None:
    """``export create|info``; ``parents`` default to the global options (:func:`.common.global_options`)."""
    if parents is None:
        parents = [global_options()]
    export = subparsers.add_parser("export", help="export tasks").add_subparsers(dest="action", required=True)
    p = export.add_parser("create", parents=parents, help="start an export task; prints its task id")
    p.add_argument(
        "--filter",
        action="append",
        metavar="FIELD=VALUE",
        help="one accepted value, taken whole (commas included); repeat for more values (OR) and fields (AND)",
    )
    p.add_argument("--filter-json", metavar="JSON", help='{"field": [values, ...]}: lists and numbers at once')
    p.add_argument("--export-all", action="store_true", help="export every row (filters are ignored)")
    p.add_argument("--file-type", choices=FILE_TYPES, default="parquet")
    p.add_argument("--destination", required=True, help="local folder or s3://bucket/prefix")
    p.add_argument("--now", action="store_true", help="run here and now instead of queueing for the daemon")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--hdf5-images", choices=("bytes", "resized"))
    p.add_argument("--hdf5-shape", metavar="HxWxC", help="shape of resized HDF5 images, e.g. 224x224x3")
    p.add_argument("--hdf5-compression", choices=("gzip", "lzf"))
    p.add_argument(
        "--exclude-near-duplicates",
        type=int,
        metavar="D",
        help="keep one row per cluster of images within D bits of pHash (listed in near_duplicates.json)",
    )
    p.add_argument("--as-of", metavar="TIME|VERSION", help=AS_OF_HELP)
    p.set_defaults(func=cmd_export_create)
    p = export.add_parser("info", parents=parents, help="status, progress and sample of an export task")
    p.add_argument("task_id")
    p.add_argument("--watch", action="store_true", help="show a progress bar until the task ends")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between polls with --watch")
    p.set_defaults(func=cmd_export_info)


add_export_commands = add_parser  # the name tests and scripts wired before the cli/ package

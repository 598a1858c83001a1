"""``datalake upload``: stage raw or task data (a Parquet file or a folder of images) into ``staging/pending``."""

from __future__ import annotations

import argparse
from typing import Any

from .common import CliError, UsageError, ask, emit, lake_base, parse_pairs, split_list, stdin_is_tty

DATA_TYPES = ("raw", "task")


def cmd_upload(args: argparse.Namespace) -> int:
    from ..client import DatalakeClient

    data_type = args.type or ("task" if args.task else None)
    data_type = ask(data_type, "--type", "Data type", choices=DATA_TYPES)
    if data_type not in DATA_TYPES:
        raise CliError(f"--type must be one of {', '.join(DATA_TYPES)}")
    data = ask(args.data, "--data", "Data path (Parquet file or folder)")
    provider = ask(args.provider, "--provider", "Provider")
    dataset = ask(args.dataset, "--dataset", "Dataset")
    image_columns = split_list(args.image_columns) if args.image_columns is not None else None
    client = DatalakeClient(
        lake_base(args),
        num_proc=args.num_proc,
        batch_size=args.batch_size,
        progress=not args.json,
        upload_method="cli",
    )
    if data_type == "raw":
        staging_dir, job_id = client.upload_raw_data(
            data,
            provider,
            dataset,
            args.description or "",
            image_columns,
            variant=args.variant,
            job_id=args.job_id,
        )
    else:
        task = ask(args.task, "--task", "Task")
        variant = ask(args.variant, "--variant", "Variant")
        meta = parse_pairs(args.meta or [], "--meta")
        if not meta:
            spec = client.schema.task_spec(task)
            if spec.required_fields:
                if not stdin_is_tty():
                    raise UsageError(
                        f"missing --meta (task {task!r} requires {', '.join(spec.required_fields)}; "
                        "stdin is not a terminal, so it cannot be asked for)"
                    )
                for fname in spec.required_fields:
                    meta[fname] = ask(None, "--meta", f"Meta {fname}", choices=spec.allowed_values.get(fname))
        staging_dir, job_id = client.upload_task_data(
            data,
            provider,
            dataset,
            task,
            variant,
            meta,
            args.description or "",
            image_columns,
            job_id=args.job_id,
        )
    report = client.last_staging_report
    counts = {k: report.get(k, 0) for k in ("images", "other_files", "skipped_count")}
    skipped = "".join(f"\n  skipped {s['path']}: {s['reason']}" for s in report.get("skipped", [])[:20])
    emit(
        args,
        {"job_id": job_id, "staging_dir": staging_dir, **counts, "skipped": report.get("skipped", [])},
        f"staged batch {job_id}\nstaging dir: {staging_dir}\n"
        f"images: {counts['images']}, other files: {counts['other_files']}, skipped: {counts['skipped_count']}"
        f"{skipped}\nrun `datalake process start` to ingest it",
    )
    return 0


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """``upload``."""
    p = subparsers.add_parser("upload", parents=parents, help="stage raw or task data into staging/pending")
    p.add_argument("--type", choices=DATA_TYPES)
    p.add_argument("--data", help="Parquet file or folder of images")
    p.add_argument("--provider")
    p.add_argument("--dataset")
    p.add_argument("--task")
    p.add_argument("--variant")
    p.add_argument("--meta", action="append", help="field=value, one per flag, value verbatim (repeatable)")
    p.add_argument("--description", default="")
    p.add_argument("--image-columns", help="comma separated image columns (default: detected)")
    p.add_argument("--job-id")
    p.add_argument("--num-proc", type=int)
    p.add_argument("--batch-size", type=int)
    p.set_defaults(func=cmd_upload)

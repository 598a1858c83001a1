"""The ``datalake`` command line: a thin shell over the domain core and :class:`DatalakeClient`.

Every command takes flags (for scripts); when a needed flag is missing and stdin is a terminal the
command prompts for it, and when stdin is not a terminal it exits with code 2 naming the missing flag.
Expected errors (``DatalakeError`` and invalid names) print ``error: <message>`` and exit with code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..core.errors import DatalakeError
from ..core.lake.layout import (
    BASE_PATH_ENV,
    DEFAULT_BASE_DIRNAME,
    InvalidNameError,
    PartitionRef,
)
from .collection import add_collection_commands
from .common import (  # noqa: F401 - re-exported: the command modules' and tests' shared helpers
    CliError,
    UsageError,
    ask,
    emit,
    lake_of,
    layout_of,
    parse_allowed_values,
    parse_pairs,
    s3_base,
    split_list,
    stdin_is_tty,
)
from .download import add_download_command
from .export import add_export_commands
from .ingest_url import add_ingest_url_command
from .verify import add_verify_command

DATA_TYPES = ("raw", "task")


# config -------------------------------------------------------------------------------------------------
def lake_schema(args: argparse.Namespace):
    """(schema, save, where) of the lake's ``config/schema.yaml``, folder or S3 (saved back by ``save()``)."""
    lake = lake_of(args)
    editing = contextlib.ExitStack()
    schema = editing.enter_context(lake.edit_schema())
    return schema, editing.close, lake.schema_uri


def cmd_provider_create(args: argparse.Namespace) -> int:
    schema, save, where = lake_schema(args)
    name = ask(args.name, "--name", "Provider name")
    schema.add_provider(name)
    save()
    emit(args, {"provider": name, "schema": where}, f"provider {name!r} created in {where}")
    return 0


def cmd_provider_list(args: argparse.Namespace) -> int:
    schema = lake_of(args).schema()
    emit(args, list(schema.providers), lambda: "\n".join(schema.providers) or "(no providers)")
    return 0


def cmd_task_create(args: argparse.Namespace) -> int:
    schema, save, where = lake_schema(args)
    name = ask(args.name, "--name", "Task name")
    required_text = ask(
        args.required_fields,
        "--required-fields",
        "Required fields (comma separated, e.g. lang,src)",
        allow_empty=True,
    )
    allowed_items = list(args.allowed_values or [])
    if not allowed_items and args.required_fields is None and stdin_is_tty():
        answer = ask(
            None,
            "--allowed-values",
            "Allowed values (e.g. lang=ko,en,ja,multi / src=real,synthetic)",
            allow_empty=True,
        )
        allowed_items = [answer] if answer else []
    spec = schema.add_task(name, split_list(required_text), parse_allowed_values(allowed_items))
    save()
    emit(
        args,
        {"task": name, **spec.as_yaml(), "schema": where},
        f"task {name!r} created in {where}: required {spec.required_fields}, allowed {spec.allowed_values}",
    )
    return 0


def cmd_task_list(args: argparse.Namespace) -> int:
    schema = lake_of(args).schema()
    doc = {name: spec.as_yaml() for name, spec in schema.tasks.items()}

    def text() -> str:
        lines = []
        for name, spec in schema.tasks.items():
            allowed = "; ".join(f"{k}={','.join(v)}" for k, v in spec.allowed_values.items())
            lines.append(f"{name}: required [{', '.join(spec.required_fields)}] allowed [{allowed}]")
        return "\n".join(lines) or "(no tasks)"

    emit(args, doc, text)
    return 0


# upload -------------------------------------------------------------------------------------------------
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
        s3_base(args) or layout_of(args).base,
        num_proc=args.num_proc,
        batch_size=args.batch_size,
        progress=not args.json,
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


# process ------------------------------------------------------------------------------------------------
def run_pending(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Claim every ready pending batch and run it through Dagster now (runs recorded in $DAGSTER_HOME)."""
    from ..services.runner import get_instance, start_pending

    settings = {"num_proc": args.num_proc, "batch_size": args.batch_size, "max_reject_ratio": args.max_reject_ratio}
    echo = (lambda _msg: None) if args.json else print
    base = lake_of(args).base
    return start_pending(base, get_instance(), echo=echo, **{k: v for k, v in settings.items() if v is not None})


def cmd_process_start(args: argparse.Namespace) -> int:
    if args.max_reject_ratio is not None and not 0.0 <= args.max_reject_ratio <= 1.0:
        raise CliError("--max-reject-ratio must be between 0 and 1")
    entries = run_pending(args)
    emit(args, entries, lambda: "\n".join(format_entry(e) for e in entries) or "no pending batches ready")
    return 1 if any(e["state"] == "failed" for e in entries) else 0


def run_state(args: argparse.Namespace):
    """The Dagster view of claimed batches (queued/running), if an instance is configured."""
    from ..services.runner import dagster_run_state, get_instance

    return dagster_run_state(get_instance())


def format_entry(e: dict[str, Any]) -> str:
    parts = [f"{e['state']:<10}", e["job_id"], e.get("partition") or "-", f"rows={_n(e.get('rows'))}"]
    if e["state"] in ("done", "failed") and e.get("rows_added") is not None:
        parts.append(
            f"added={_n(e.get('rows_added'))} duplicate={_n(e.get('rows_duplicate'))} "
            f"rejected={_n(e.get('rows_rejected'))}"
        )
    if e.get("error"):
        parts.append(f"reason: {e['error']}")
    if e.get("path") and e["state"] == "failed":
        parts.append(f"({e['path']})")
    return "  ".join(parts)


def _n(value: Any) -> str:
    return "?" if value is None else str(value)


def cmd_process_status(args: argparse.Namespace) -> int:
    lake = lake_of(args)
    entry = lake.status(args.job_id, run_state(args))
    if entry is None:
        raise CliError(f"no batch with job id {args.job_id!r} in {lake.base}")
    emit(args, entry, lambda: format_entry(entry))
    return 0


def cmd_process_list(args: argparse.Namespace) -> int:
    entries = lake_of(args).list_batches(run_state(args))
    emit(args, entries, lambda: "\n".join(format_entry(e) for e in entries) or "no batches")
    return 0


# catalog ------------------------------------------------------------------------------------------------
def cmd_catalog_rebuild(args: argparse.Namespace) -> int:
    """Refresh catalog.duckdb now, as a Dagster run of the warehouse asset (recorded in $DAGSTER_HOME)."""
    from ..definitions import duckdb_file
    from ..lib.resources import LakeResource
    from ..services.runner import get_instance, refresh_catalog_db

    base = s3_base(args) or str(layout_of(args).base)
    ok = refresh_catalog_db(get_instance(), LakeResource(base_path=base))
    if not ok:
        raise CliError("the catalog.duckdb refresh run failed; see its logs in the Dagster UI")
    from ..core.catalog.query import DuckDBClient

    with DuckDBClient(base_path=base) as duck:
        parts = duck.retrieve_partitions()
    rows = int(parts["rows"].sum()) if len(parts) else 0
    database = duckdb_file(base)
    emit(
        args,
        {"database": str(database), "partitions": len(parts), "rows": rows},
        lambda: f"rebuilt {database}: {len(parts)} partitions, {rows} rows",
    )
    return 0


def cmd_catalog_compact(args: argparse.Namespace) -> int:
    from ..core.catalog.parts import compact_partition

    layout = layout_of(args)
    refs = [PartitionRef.parse(args.partition)] if args.partition else layout.list_partitions()
    results = [compact_partition(layout, ref) for ref in refs]
    docs = [
        {
            "partition": r.partition,
            "files_before": r.files_before,
            "rows": r.rows,
            "duplicates_dropped": r.duplicates_dropped,
            "path": str(r.path) if r.path else None,
        }
        for r in results
    ]
    emit(
        args,
        docs,
        lambda: (
            "\n".join(
                f"{d['partition']}: {d['files_before']} file(s) -> {d['rows']} rows, "
                f"{d['duplicates_dropped']} duplicate(s) dropped"
                for d in docs
            )
            or "no partitions"
        ),
    )
    return 0


# parser -------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    default_base = os.environ.get(BASE_PATH_ENV) or DEFAULT_BASE_DIRNAME
    # Global options are accepted before or after the sub-command (SUPPRESS keeps the top-level value).
    common = argparse.ArgumentParser(add_help=False)
    base_help = f"lake folder (default ${BASE_PATH_ENV} or ./lake)"
    common.add_argument("--base-path", default=argparse.SUPPRESS, help=base_help)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")

    parser = argparse.ArgumentParser(prog="datalake", description="Multimodal data lake: config, upload, process.")
    parser.add_argument("--base-path", default=default_base, help=base_help)
    parser.add_argument("--json", action="store_true", default=False, help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True)

    config = sub.add_parser("config", help="edit config/schema.yaml").add_subparsers(dest="what", required=True)
    provider = config.add_parser("provider", help="providers").add_subparsers(dest="action", required=True)
    p = provider.add_parser("create", parents=[common], help="add a provider")
    p.add_argument("--name")
    p.set_defaults(func=cmd_provider_create)
    p = provider.add_parser("list", parents=[common], help="list providers")
    p.set_defaults(func=cmd_provider_list)
    task = config.add_parser("task", help="tasks").add_subparsers(dest="action", required=True)
    p = task.add_parser("create", parents=[common], help="add a task")
    p.add_argument("--name")
    p.add_argument("--required-fields", help="comma separated, e.g. lang,src ('' for none)")
    p.add_argument("--allowed-values", action="append", help="field=v1,v2 (repeatable)")
    p.set_defaults(func=cmd_task_create)
    p = task.add_parser("list", parents=[common], help="list tasks")
    p.set_defaults(func=cmd_task_list)

    p = sub.add_parser("upload", parents=[common], help="stage raw or task data into staging/pending")
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

    process = sub.add_parser("process", help="process staged batches").add_subparsers(dest="action", required=True)
    p = process.add_parser("start", parents=[common], help="process every pending batch")
    p.add_argument("--num-proc", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-reject-ratio", type=float)
    p.set_defaults(func=cmd_process_start)
    p = process.add_parser("status", parents=[common], help="state of one batch")
    p.add_argument("job_id")
    p.set_defaults(func=cmd_process_status)
    p = process.add_parser("list", parents=[common], help="every batch by state")
    p.set_defaults(func=cmd_process_list)

    add_collection_commands(sub, parents=[common])
    add_export_commands(sub, parents=[common])
    catalog = sub.add_parser("catalog", help="catalog maintenance").add_subparsers(dest="action", required=True)
    p = catalog.add_parser("compact", parents=[common], help="merge part files into data.parquet")
    p.add_argument("--partition", help="provider/dataset/task/variant (default: every partition)")
    p.set_defaults(func=cmd_catalog_compact)
    p = catalog.add_parser("rebuild", parents=[common], help="refresh catalog.duckdb (partitions, hash index)")
    p.set_defaults(func=cmd_catalog_rebuild)
    add_verify_command(catalog, parents=[common])

    add_ingest_url_command(sub, parents=[common])

    add_download_command(sub, parents=[common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse usage errors (2) and --help (0)
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (DatalakeError, InvalidNameError, CliError, ValueError) as exc:  # ValueError: bad selection/query
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except BotoCoreError as exc:  # no credentials, endpoint unreachable, ...
        print(f"error: S3: {exc}", file=sys.stderr)
        return 1
    except ClientError as exc:  # e.g. NoSuchBucket, AccessDenied
        error = exc.response.get("Error", {})
        print(f"error: S3 {exc.operation_name}: {error.get('Code')}: {error.get('Message')}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``datalake process start|status|list``: run staged batches through Dagster now, and report their state."""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Any

from .common import CliError, emit, lake_of


def run_pending(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Claim every ready pending batch and run it through Dagster now (runs recorded in $DAGSTER_HOME)."""
    from ..services.runner import get_instance, start_pending

    settings = {"num_proc": args.num_proc, "batch_size": args.batch_size, "max_reject_ratio": args.max_reject_ratio}
    settings = {k: v for k, v in settings.items() if v is not None}
    echo = (lambda _msg: None) if args.json else print
    warn = functools.partial(print, file=sys.stderr)  # also with --json: stdout holds only the JSON
    return start_pending(lake_of(args).base, get_instance(), echo=echo, warn=warn, **settings)


def cmd_process_start(args: argparse.Namespace) -> int:
    if args.max_reject_ratio is not None and not 0.0 <= args.max_reject_ratio <= 1.0:
        raise CliError("--max-reject-ratio must be between 0 and 1")
    entries = run_pending(args)
    emit(args, entries, lambda: "\n".join(format_entry(e) for e in entries) or "no pending batches ready")
    return 1 if any(e["state"] == "failed" or e.get("run_failed") for e in entries) else 0


def run_state(args: argparse.Namespace):
    """The Dagster view of claimed batches (queued/running), if an instance is configured."""
    from ..lib.claims import dagster_run_state
    from ..services.runner import get_instance

    return dagster_run_state(get_instance())


def format_entry(e: dict[str, Any]) -> str:
    """One line of ``process`` output: state, job id, partition, rows, counts and the failure reason."""
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


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """``process start|status|list``."""
    process = subparsers.add_parser("process", help="process staged batches").add_subparsers(
        dest="action", required=True
    )
    p = process.add_parser("start", parents=parents, help="process every pending batch")
    p.add_argument("--num-proc", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-reject-ratio", type=float)
    p.set_defaults(func=cmd_process_start)
    p = process.add_parser("status", parents=parents, help="state of one batch")
    p.add_argument("job_id")
    p.set_defaults(func=cmd_process_status)
    p = process.add_parser("list", parents=parents, help="every batch by state")
    p.set_defaults(func=cmd_process_list)

"""``datalake delete`` and ``datalake gc``: remove rows from the catalog, then the assets nothing references.

``delete`` takes exactly one of ``--batch``, ``--partition P/D/T/V``, ``--dataset P/D`` or ``--provider P``;
``--dry-run`` prints what would go (rows, partitions, bytes GC would free) and changes nothing. ``gc`` removes
assets no row references once older than ``--grace`` (default 24h), after purging the catalog files deletions
retained for longer than ``--retention`` (default 7d). Both exit 1 while a run holds what they need.
"""

from __future__ import annotations

import argparse
from typing import Any

from .common import emit, lake_of

# core.lifecycle.gc.DELETE_BATCH, not imported here: that module pulls pyarrow into every CLI start
DELETE_BATCH = 1000


def _gc_batch(text: str) -> int:
    """``--batch-size`` of gc: 1..1000, since S3 DeleteObjects takes at most 1000 keys per request."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= DELETE_BATCH:
        raise argparse.ArgumentTypeError(
            f"{value} is outside 1..{DELETE_BATCH} (S3 DeleteObjects takes at most {DELETE_BATCH} keys per request)"
        )
    return value


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _delete_text(doc: dict[str, Any]) -> str:
    verb = "would delete" if doc["dry_run"] else "deleted"
    lines = [
        f"{p['partition']}: {p['rows']} of {p['rows_before']} row(s)" + (", partition removed" if p["removed"] else "")
        for p in doc["partitions"]
    ]
    lines.append(
        f"{verb} {doc['rows']} row(s) in {len(doc['partitions'])} partition(s) "
        f"({doc['partitions_removed']} removed); {doc['assets_freed']} asset(s), {_size(doc['bytes_freed'])} "
        "referenced only by these rows (freed by `datalake gc` once the retention passes)"
    )
    for waiting in doc.get("waiting_batches") or []:
        lines.append(
            f"warning: batch {waiting['job_id']} of {waiting['partition']} is {waiting['state']} in staging: "
            + (
                "the delete is refused until its run ends"
                if waiting["state"] != "pending"
                else "processing it after the delete puts its rows back (delete it from staging first if unwanted)"
            )
        )
    lines += [f"finished deletion {d}, left open by a run killed midway" for d in doc.get("deletions_finished") or []]
    if not doc["dry_run"]:
        lines.append(f"deletion {doc['deletion_id']} by {doc['who']}: catalog files kept under {doc['retained']}")
    return "\n".join(lines)


def cmd_delete(args: argparse.Namespace) -> int:
    from ..core.lifecycle.delete import DeleteSelection, delete

    selection = DeleteSelection(args.batch, args.partition, args.dataset, args.provider)
    doc = delete(lake_of(args), selection, dry_run=args.dry_run, batch_size=args.batch_size)
    emit(args, doc, lambda: _delete_text(doc))
    return 0


def _gc_text(doc: dict[str, Any]) -> str:
    verb = "would collect" if doc["dry_run"] else "collected"
    text = (
        f"{doc['assets']} asset(s): {doc['referenced']} referenced, {doc['within_grace']} within the grace period; "
        f"{verb} {doc['collected']} ({_size(doc['bytes'])}), {doc['index_entries_removed']} index entr(ies); "
        f"{len(doc['retained_purged'])} expired deletion(s) purged ({_size(doc['retained_bytes'])})"
    )
    text += "".join(
        f"\nfinished deletion {d}, left open by a run killed midway" for d in doc.get("deletions_finished") or []
    )
    return text + (f"\nstopped early: {doc['stopped']}" if doc.get("stopped") else "")


def cmd_gc(args: argparse.Namespace) -> int:
    from ..core.lifecycle.gc import collect_garbage, parse_duration

    doc = collect_garbage(
        lake_of(args),
        dry_run=args.dry_run,
        grace_seconds=parse_duration(args.grace),
        retention_seconds=parse_duration(args.retention),
        batch=args.batch_size,
    )
    emit(args, doc, lambda: _gc_text(doc))
    return 0


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """``delete`` and ``gc``."""
    p = subparsers.add_parser("delete", parents=parents, help="remove a batch, partition, dataset or provider")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--batch", help="a batch (job id)")
    what.add_argument("--partition", help="provider/dataset/task/variant")
    what.add_argument("--dataset", help="provider/dataset (every task and variant)")
    what.add_argument("--provider", help="a provider (every dataset)")
    p.add_argument("--dry-run", action="store_true", help="show what would be deleted; change nothing")
    p.add_argument("--batch-size", type=int, default=10_000, help="rows read and written at a time (memory bound)")
    p.set_defaults(func=cmd_delete)
    p = subparsers.add_parser("gc", parents=parents, help="remove assets no row references (mark and sweep)")
    p.add_argument("--dry-run", action="store_true", help="count what would be collected; change nothing")
    p.add_argument("--grace", default="24h", help="keep unreferenced assets younger than this (default 24h)")
    p.add_argument("--retention", default="7d", help="keep deleted catalog files this long (default 7d)")
    p.add_argument(
        "--batch-size",
        type=_gc_batch,
        default=DELETE_BATCH,
        help=f"assets deleted per request, 1..{DELETE_BATCH} (S3 DeleteObjects takes at most {DELETE_BATCH} keys "
        f"per request; default {DELETE_BATCH})",
    )
    p.set_defaults(func=cmd_gc)

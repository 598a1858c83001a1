"""``datalake catalog verify``: every asset the catalog references exists, at its size (``--hashes``: content).

Registered from ``cli.py`` with ``add_verify_command(catalog_subparsers, parents)``. Exit code 0 when the lake
is consistent, 1 when anything is missing or wrong (listed; ``--json`` for the full report).
"""

from __future__ import annotations

import argparse
from typing import Any


def add_verify_command(catalog: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = catalog.add_parser("verify", parents=parents, help="check that every referenced asset exists (and matches)")
    p.add_argument("--partition", help="provider/dataset/task/variant (default: every partition)")
    p.add_argument("--hashes", action="store_true", help="also re-hash every asset (reads every byte)")
    p.add_argument(
        "--index",
        action="store_true",
        default=None,
        help="also check every hash-index entry (data files no partition references); default without --partition",
    )
    p.set_defaults(func=cmd_catalog_verify)


def _text(report: dict[str, Any]) -> str:
    lines = []
    for doc in report["partitions"] + ([report["index"]] if report.get("index") else []):
        others = [p for p in doc["problems"] if not p.endswith(" is missing")]
        more = f" (only the first {len(doc['problems'])} problems are listed)" if doc.get("truncated") else ""
        state = "ok" if doc["ok"] else f"{len(doc['missing'])} missing asset(s), {len(others)} other problem(s){more}"
        lines.append(f"{doc['partition']}: {doc['references']} reference(s), {state}")
        lines += [f"  missing: {path}" for path in doc["missing"][:50]]
        lines += [f"  {problem}" for problem in doc["problems"] if not problem.endswith(" is missing")]
    what = "sizes and hashes" if report["hashes"] else "existence and sizes"
    verdict = "clean" if report["ok"] else "PROBLEMS FOUND"
    lines.append(
        f"{report['base']}: {len(report['partitions'])} partition(s), {report['references']} reference(s), "
        f"{what} checked: {verdict}"
    )
    return "\n".join(lines)


def cmd_catalog_verify(args: argparse.Namespace) -> int:
    from ..core.catalog.verify import verify_lake
    from .common import emit, layout_of, s3_base

    base = s3_base(args) or layout_of(args).base
    report = verify_lake(base, args.partition, args.hashes, args.index)
    emit(args, report, lambda: _text(report))
    return 0 if report["ok"] else 1

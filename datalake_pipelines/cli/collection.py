"""``datalake collection list|show|create|upload``: collections of data units from the command line.

Handlers take ``args`` (``args.base_path`` may be ``None``: the default lake) and return an exit code: 0 done,
1 refused or failed upload.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from ..core.errors import DatalakeError
from .common import emit, lake_target, parse_pairs

if TYPE_CHECKING:  # the core modules are imported by the handlers only, to keep `datalake --help` quick
    from ..core.collection.config import FileSpec


def parse_spec_flag(text: str) -> dict[str, Any]:
    """``image:required:.jpg,.png[:description]`` -> a file specification mapping.

    Not a ``key=value`` flag: four ``:``-separated fields, the extensions a comma list. Raises
    :class:`DatalakeError` for another shape.
    """
    parts = text.split(":", 3)
    if len(parts) < 3 or parts[1] not in ("required", "optional") or not parts[2].strip():
        raise DatalakeError(f"--spec expects NAME:required|optional:.ext1,.ext2[:description], got {text!r}")
    return {
        "name": parts[0].strip(),
        "is_required": parts[1] == "required",
        "extensions": [e.strip() for e in parts[2].split(",") if e.strip()],
        "description": parts[3].strip() if len(parts) > 3 else "",
    }


def _describe(c: dict[str, Any]) -> str:
    p = c["project"]
    lines = [
        f"{c['name']} (id {c['id']}): {p['provider']}/{p['dataset']}/{p['task']}/{p['variant']}",
        f"  description: {c['description'] or '-'}",
        f"  created_at: {c['created_at']}",
    ]
    for s in c["file_specifications"]:
        need = "required" if s["is_required"] else "optional"
        lines.append(f"  - {s['name']}: {need} {', '.join(s['extensions'])}  {s['description']}".rstrip())
    return "\n".join(lines)


def cmd_collection_list(args: argparse.Namespace) -> int:
    from ..core.collection.api import list_data_collection

    found = list_data_collection(lake_target(args))
    emit(args, found, "\n".join(_describe(c) for c in found) or "(no collections)")
    return 0


def cmd_collection_show(args: argparse.Namespace) -> int:
    from ..core.collection.api import get_data_collection

    c = get_data_collection(lake_target(args), args.name)
    emit(args, c, _describe(c))
    return 0


def cmd_collection_create(args: argparse.Namespace) -> int:
    from ..core.collection.api import create_collection

    meta = parse_pairs(args.meta or [], "--meta")
    specs: list[dict[str, Any] | FileSpec] = [parse_spec_flag(s) for s in args.spec or []]
    if not specs:
        raise DatalakeError("give at least one --spec NAME:required|optional:.ext1,.ext2")
    c = create_collection(
        lake_target(args),
        args.name,
        args.provider,
        args.dataset,
        specs,
        args.description or "",
        args.task,
        args.variant,
        meta,
    ).to_dict()
    emit(args, c, "created collection\n" + _describe(c))
    return 0


def cmd_collection_upload(args: argparse.Namespace) -> int:
    from ..core.collection.api import upload_collection
    from ..core.collection.units import format_table
    from ..core.collection.upload import UploadError

    layout = lake_target(args)
    kwargs = {}
    if args.batch_size:
        kwargs["batch_size"] = args.batch_size
    if args.num_proc:
        kwargs["num_proc"] = args.num_proc
    try:
        report = upload_collection(
            layout,
            args.folder,
            args.collection,
            strict=args.strict,
            group_by=args.group_by,
            pattern=args.pattern,
            progress=not getattr(args, "json", False),
            retries=args.retries,
            report_path=args.report,
            **kwargs,
        )
    except UploadError as exc:
        if not exc.report:
            raise
        emit(args, exc.report, f"{format_table(exc.report)}\nreport: {exc.report.get('report_path')}")
        print(f"error: {exc}", file=sys.stderr)
        return 1
    text = f"{format_table(report)}\nreport: {report['report_path']}"
    if report["upload"]["batches"]:
        text += "\nrun `datalake process start` to ingest the staged batches"
    emit(args, report, text)
    return 0


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """``collection list|show|create|upload``."""
    collection = subparsers.add_parser("collection", help="collections of data units (config/collections.yaml)")
    sub = collection.add_subparsers(dest="action", required=True)
    p = sub.add_parser("list", parents=parents, help="list collections")
    p.set_defaults(func=cmd_collection_list)
    p = sub.add_parser("show", parents=parents, help="one collection by name or id")
    p.add_argument("name")
    p.set_defaults(func=cmd_collection_show)
    p = sub.add_parser("create", parents=parents, help="declare a collection")
    p.add_argument("--name", required=True)
    p.add_argument("--provider", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--task", help="default: raw")
    p.add_argument("--variant", help="default: the collection name")
    p.add_argument("--meta", action="append", help="field=value for the task's required fields (repeatable)")
    p.add_argument("--description", default="")
    p.add_argument("--spec", action="append", help="NAME:required|optional:.ext1,.ext2[:description] (repeatable)")
    p.set_defaults(func=cmd_collection_create)
    p = sub.add_parser("upload", parents=parents, help="validate a folder and stage its complete units")
    p.add_argument("folder")
    p.add_argument("--collection", required=True, help="collection name or id")
    p.add_argument("--strict", action="store_true", help="refuse the upload if any unit has a problem")
    p.add_argument("--group-by", choices=("stem", "regex", "folder"), default="stem")
    p.add_argument("--pattern", help="regex with a named group 'unit' (and optionally 'spec') for --group-by regex")
    p.add_argument("--batch-size", type=int, help="units per staged batch")
    p.add_argument("--num-proc", type=int)
    p.add_argument("--retries", type=int, default=4, help="attempts per file on transient errors")
    p.add_argument("--report", help="where to write the JSON report (default: <lake>/logs/collections/)")
    p.set_defaults(func=cmd_collection_upload)

"""``datalake download``: a selection by partitions or by text, as Parquet, Arrow or HF ``datasets``.

With no selection flag on a terminal it asks the reference's questions; ``--where`` follows
:func:`.common.parse_where` (one verbatim value per flag).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from .common import (
    AS_OF_HELP,
    UsageError,
    ask,
    emit,
    lake_target,
    layout_of,
    parse_where,
    s3_base,
    split_list,
    stdin_is_tty,
)
from .limits import limit_arg


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """``download``."""
    p = subparsers.add_parser("download", parents=parents, help="download a selection as parquet, arrow or hf")
    for flag in ("provider", "dataset", "task", "variant"):
        p.add_argument(f"--{flag}", action="append", help=f"{flag} to include (repeatable)")
    p.add_argument("--all", action="store_true", help="every partition")
    p.add_argument(
        "--where",
        action="append",
        metavar="COLUMN=VALUE",
        help="one value, taken whole (commas included); repeat a column for a list (IN), other columns AND",
    )
    p.add_argument("--where-json", metavar="JSON", help='{"column": value or [values]}: lists and numbers at once')
    p.add_argument(
        "--columns",
        action="append",
        metavar="COLUMN",
        help="a column to keep (repeatable, one per flag); a comma list still works unless it names a column",
    )
    p.add_argument("--limit", type=limit_arg, help="at most this many rows (0: none, the columns only)")
    p.add_argument("--search-column", help="text search: the column to search")
    p.add_argument("--text", help="text search: the text to find (matched literally)")
    p.add_argument("--json-path", help="text search inside JSON, e.g. $.words[*].text")
    p.add_argument("--mode", choices=["contains", "regex"], default="contains")
    p.add_argument("--format", choices=["parquet", "arrow", "hf"])
    p.add_argument("--hive", action="store_true", help="parquet: a hive-partitioned folder")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument(
        "--exclude-near-duplicates",
        type=int,
        metavar="D",
        help="keep one row per cluster of images within D bits of pHash (listed in near_duplicates.json)",
    )
    p.add_argument("--as-of", metavar="TIME|VERSION", help=AS_OF_HELP)
    p.add_argument("--out", default="downloads", help="output folder")
    p.set_defaults(func=cmd_download)


FORMATS = {"1": "parquet", "2": "arrow", "3": "hf"}


def cmd_download(args: argparse.Namespace) -> int:
    """Flags, or the reference's prompts: search by partitions (1) or text (2); Parquet, Arrow or Dataset+images."""
    from ..core.export.download import Selection, download

    interactive = stdin_is_tty() and not (args.provider or args.text or args.all)
    if interactive:
        method = ask(None, "--provider or --text", "search by 1) partitions or 2) text", choices=["1", "2"])
        for flag in ("provider", "dataset", "task"):
            answer = ask(None, f"--{flag}", f"{flag}s (comma separated, empty = all)", allow_empty=True)
            setattr(args, flag, split_list(answer))
        if method == "2":
            args.search_column = ask(None, "--search-column", "column to search (e.g. ocr_result)")
            args.text = ask(None, "--text", "text to find")
            args.json_path = ask(
                None, "--json-path", "JSON path (e.g. $.words[*].text; empty = whole text)", allow_empty=True
            )
        choice = ask(None, "--format", "format 1) Parquet 2) Arrow 3) Dataset+images", choices=["1", "2", "3"])
        args.format = FORMATS[choice]
        args.all = not (args.provider or args.dataset or args.task)
    elif not (args.provider or args.dataset or args.task or args.variant or args.text or args.all):
        raise UsageError("choose what to download: --provider/--dataset/--task/--variant, --text, or --all")
    selection = Selection(
        providers=args.provider or None,
        datasets=args.dataset or None,
        tasks=args.task or None,
        variants=args.variant or None,
        where=parse_where(args.where, args.where_json) or None,
        columns=parse_columns(args.columns, lambda: _selection_columns(args)) or None,
        limit=args.limit,
        column=args.search_column,
        text=args.text,
        json_path=args.json_path or None,
        mode=args.mode,
        as_of=args.as_of,
    )
    if selection.text is not None and not selection.column:
        raise UsageError("--text needs --search-column")
    manifest = download(
        lake_target(args),
        selection,
        args.format or "parquet",
        args.out,
        progress=not args.json,
        hive=args.hive,
        overwrite=args.overwrite,
        exclude_near_duplicates=args.exclude_near_duplicates,
    )
    emit(args, manifest, lambda: f"downloaded {manifest.get('rows')} rows as {manifest.get('format')} to {args.out}")
    return 0


def _selection_columns(args: argparse.Namespace) -> list[str]:
    """The columns of the partitions a download selects (to tell a column named ``a,b`` from a list)."""
    from ..core.catalog.query import DuckDBClient

    with DuckDBClient(base_path=s3_base(args) or layout_of(args).base) as duck:
        filters = {"providers": args.provider, "datasets": args.dataset, "tasks": args.task, "variants": args.variant}
        return list(duck._selection(**{k: v or None for k, v in filters.items()}, columns=None)[1])


def parse_columns(items: Sequence[str] | None, available: Callable[[], Sequence[str]]) -> list[str]:
    """``--columns`` flags -> column names, one column per flag (repeatable).

    A flag holding a comma is still read as a comma-separated list (the old form), unless its whole text is
    the name of a column of the selection: an existing column named verbatim wins, so a column whose name
    holds a comma can always be chosen (``--columns "a,b"``). ``available`` gives the selection's columns
    and is only called when some flag holds a comma.
    """
    names: list[str] = []
    existing: set[str] | None = None
    for item in items or []:
        if "," in item:
            if existing is None:
                existing = set(available())
            if item not in existing:
                names.extend(part.strip() for part in item.split(",") if part.strip())
                continue
        names.append(item)
    return list(dict.fromkeys(names))

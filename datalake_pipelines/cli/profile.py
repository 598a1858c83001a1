"""``datalake profile`` and ``datalake preview``: a partition's figures, and a static HTML gallery of its rows.

Registered from ``cli.py`` with ``add_profile_commands(subparsers, parents)``. ``profile`` prints what the
``catalog_partition`` materialization shows as plots (``--json``: the figures; ``--png FILE``: the figure);
``preview`` writes ``index.html`` with annotated thumbnails and copies of the full images (``core/preview``).
Both read a local or an S3 lake (``Lake.partition_view``); the outputs are local files.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

from .limits import limit_arg


def add_profile_commands(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("profile", parents=parents, help="a partition's profile: sizes, formats, text, nulls")
    p.add_argument("--partition", required=True, help="provider/dataset/task/variant")
    p.add_argument("--png", metavar="FILE", help="also write the profile figure as PNG (missing folders are created)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --png file")
    p.set_defaults(func=cmd_profile)
    p = sub.add_parser("preview", parents=parents, help="write a static HTML gallery of a partition's rows")
    p.add_argument("--partition", required=True, help="provider/dataset/task/variant")
    p.add_argument(
        "--where",
        action="append",
        metavar="COLUMN=VALUE",
        help="one value, taken whole (commas included); repeat a column for a list (IN), other columns AND",
    )
    p.add_argument("--where-json", metavar="JSON", help='{"column": value or [values]}: lists and numbers at once')
    p.add_argument("--limit", type=limit_arg, default=100, help="rows shown (default 100)")
    p.add_argument("--out", required=True, help="output folder (index.html, thumbs/, images/)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=cmd_preview)


@contextlib.contextmanager
def _partition(args: argparse.Namespace, lake) -> Iterator[tuple[Any, Any, list]]:
    """``(view, ref, files)`` of ``--partition``: a local view holding its catalog files (the lake itself, or a
    throwaway work lake of an S3 lake, removed afterwards; it reads image bytes from the lake)."""
    from ..core.catalog.parts import partition_files
    from ..core.lake.layout import PartitionRef
    from .common import CliError

    ref = PartitionRef.parse(args.partition)
    with lake.partition_view(ref) as view:
        files = partition_files(view, ref)
        if not files:
            raise CliError(f"partition {ref.key} has no catalog files at {lake.catalog_uri(ref)}")
        yield view, ref, files


def _stats(s: dict[str, Any] | None, unit: str = "") -> str:
    if not s or s.get("count") in (0, None):
        return "n/a"
    return f"min {s['min']:.0f}{unit}, median {s['median']:.0f}{unit}, max {s['max']:.0f}{unit}"


def profile_text(key: str, doc: dict[str, Any]) -> str:
    lines = [f"{key}: {doc['rows']} rows, {doc['columns']} columns"]
    for col, img in doc["images"].items():
        lines.append(f"image column {col}: {img['count']} images")
        lines.append(f"  width  {_stats(img['width'], ' px')}")
        lines.append(f"  height {_stats(img['height'], ' px')}")
        top = ", ".join(f"{w}x{h} ({n})" for w, h, n in img["sizes"][:5])
        lines.append(f"  most common sizes: {top}")
        lines.append("  formats: " + ", ".join(f"{k} {v}" for k, v in img.get("formats", {}).items()))
        lines.append("  modes: " + ", ".join(f"{k} {v}" for k, v in img.get("modes", {}).items()))
        lines.append(
            f"  file size {_stats(img['file_bytes'], ' B')}"
            + (f" ({img['unknown_sizes']} unknown)" if img.get("unknown_sizes") else "")
        )
    for col, f in doc["files"].items():
        lines.append(f"file column {col}: size {_stats(f['file_bytes'], ' B')}")
    for col, t in doc["text_lengths"].items():
        lines.append(f"text column {col}: length {_stats(t['chars'], ' chars')}")
    nulls = {c: n for c, n in doc["nulls"].items() if n}
    lines.append("nulls: " + (", ".join(f"{c} {n}" for c, n in nulls.items()) or "none"))
    return "\n".join(lines)


def cmd_profile(args: argparse.Namespace) -> int:
    from ..core.export.output_guard import check_output, write_file
    from ..core.preview.partition import profile_partition
    from ..core.preview.profile import profile_png
    from .common import emit, lake_of

    lake = lake_of(args)
    if args.png:
        check_output(args.png, lake.base, args.overwrite, kind="file")  # before the work: same rule as --out
    with _partition(args, lake) as (view, ref, files):
        doc = profile_partition(view, files)
    if args.png:
        write_file(args.png, profile_png(doc, ref.key), lake.base, args.overwrite)
    emit(args, {"partition": ref.key, **doc}, lambda: profile_text(ref.key, doc))
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from ..core.export.output_guard import GALLERY_MARKERS, check_output
    from ..core.preview.gallery import select_rows, write_gallery
    from ..core.preview.partition import task_mapping
    from .common import emit, lake_of, parse_where

    lake = lake_of(args)
    check_output(args.out, lake.base, args.overwrite, GALLERY_MARKERS)  # before the work; checked again on writing
    with _partition(args, lake) as (view, ref, _):
        rows = select_rows(view, ref, parse_where(args.where, args.where_json), args.limit)
        mapping = task_mapping(view, ref.task)
        report = write_gallery(view.read_asset, rows, args.out, ref.key, mapping, args.overwrite, lake.base)
    emit(
        args,
        report,
        lambda: (
            f"wrote {report['thumbnails']} of {report['rows']} rows to {report['index']}"
            + "".join(f"\n  skipped {s}" for s in report["skipped"])
        ),
    )
    return 0


add_parser = add_profile_commands  # the cli package wires every group through its add_parser

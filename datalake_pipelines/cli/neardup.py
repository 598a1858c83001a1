"""``datalake near-dups``: clusters of near-duplicate images in the lake (pHash within a Hamming distance).

Registered from ``cli.py`` with ``add_near_dups_command(subparsers, parents)``. Prints each cluster's members
(partition, row hash, column, asset SHA-256, distance to the kept member); ``--json`` prints the whole report
(:func:`~datalake_pipelines.core.neardup.report.near_duplicate_report`). ``--out DIR`` also writes the report as
a static HTML page, each cluster's members side by side as thumbnails (``core/neardup/gallery.py``). Exit code 0
either way.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..core.neardup.report import DEFAULT_THRESHOLD
from .limits import limit_arg


def add_near_dups_command(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("near-dups", parents=parents, help="clusters of near-duplicate images (perceptual hash)")
    p.add_argument(
        "--threshold",
        type=int,
        default=DEFAULT_THRESHOLD,
        metavar="D",
        help=f"Hamming distance in bits of the 64-bit pHash (default {DEFAULT_THRESHOLD})",
    )
    p.add_argument(
        "--partition", metavar="P/D/T/V", help="only clusters with an image of this partition (against the whole lake)"
    )
    p.add_argument(
        "--limit",
        type=limit_arg,
        default=50,
        help="clusters printed in text output and shown in the --out page (default 50; 0: summary only; "
        "--json always holds all)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="also write an HTML page of the clusters, members side by side (index.html, thumbs/, images/)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument(
        "--include-near-constant",
        action="store_true",
        help="also cluster plain/single-colour images (left out by default: their pHashes all match)",
    )
    p.set_defaults(func=cmd_near_dups)


def _text(report: dict[str, Any], limit: int) -> str:
    lines = []
    for cluster in report["clusters"][:limit]:
        lines.append(f"cluster {cluster['cluster']}: {cluster['size']} images, {cluster['distinct_assets']} "
                     f"distinct asset(s), max distance {cluster['max_distance']}")  # fmt: skip
        for m in cluster["members"]:
            mark = "keep" if m["kept"] else f"d={m['distance']}"
            lines.append(f"  {mark:>5}  {m['partition']}  row {m['row_hash'][:16]}  {m['column']}  {m['sha256']}")
    if len(report["clusters"]) > limit:
        lines.append(f"... {len(report['clusters']) - limit} more clusters (--limit, or --json for all)")
    scope = f" touching {report['scope']}" if report["scope"] else ""
    lines.append(
        f"{report['cluster_count']} cluster(s){scope} holding {report['images_in_clusters']} of {report['images']} "
        f"images within {report['threshold']} bits ({report['images_without_phash']} without pHash, "
        f"{report['images_near_constant']} near-constant "
        f"{'included' if report['near_constant_included'] else 'left out'}), "
        f"{report['seconds']} s"
    )
    return "\n".join(lines)


def cmd_near_dups(args: argparse.Namespace) -> int:
    from ..core.neardup.report import near_duplicate_report
    from .common import emit, layout_of, s3_base

    base = s3_base(args) or str(layout_of(args).base)
    if args.out:
        from ..core.export.output_guard import GALLERY_MARKERS, check_output

        check_output(args.out, base, args.overwrite, GALLERY_MARKERS)  # before the report; checked again on writing
    report = near_duplicate_report(base, args.threshold, args.partition, args.include_near_constant)
    text = _text(report, args.limit)
    if args.out:
        from ..core.neardup.gallery import member_rows, write_near_dups_gallery
        from ..core.storage.backends import open_storage

        shown = [m["row_hash"] for c in report["clusters"][: args.limit] for m in c["members"]]
        page = write_near_dups_gallery(report, open_storage(base).read_bytes, args.out, member_rows(base, shown),
                                       args.limit, overwrite=args.overwrite, lake=base)  # fmt: skip
        report = {**report, "gallery": page}
        text += f"\nwrote {page['clusters_shown']} cluster(s), {page['thumbnails']} thumbnails to {page['index']}"
        text += "".join(f"\n  skipped {s}" for s in page["skipped"])
    emit(args, report, text)
    return 0


add_parser = add_near_dups_command  # the cli package wires every group through its add_parser

"""``datalake lineage <row_hash | asset sha256 | batch_id>``: the chain from a row or an asset to its source.

Prints row -> batch -> source (file or URL, sha256, upload method, host and user, staged time) -> run id,
partition and part file; for an asset, every row and dataset referencing it. ``--json`` prints the document of
:func:`~datalake_pipelines.core.lifecycle.lineage.lineage`. An unknown identifier exits 1.
"""

from __future__ import annotations

import argparse
from typing import Any

from .common import emit, lake_of


def cmd_lineage(args: argparse.Namespace) -> int:
    from ..core.lifecycle.lineage import lineage, lineage_text

    doc = lineage(lake_of(args), args.id)
    emit(args, doc, lambda: lineage_text(doc))
    return 0


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """``lineage``."""
    p = subparsers.add_parser(
        "lineage", parents=parents, help="trace a row, an asset or a batch to its source, upload and run"
    )
    p.add_argument("id", help="a row_hash, an asset's sha256 or a batch id")
    p.set_defaults(func=cmd_lineage)

"""The one ``--limit`` rule of ``datalake preview``, ``download`` and ``near-dups``: a whole number of 0 or more
(0: none, i.e. an empty gallery or download with the selection's columns, or near-dups' summary line alone).
A negative value is refused by argparse with the same message everywhere (exit code 2)."""

from __future__ import annotations

import argparse

LIMIT_RULE = "must be a whole number of 0 or more"


def limit_arg(text: str) -> int:
    """``--limit``'s argparse ``type``: ``ArgumentTypeError`` for anything but a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{LIMIT_RULE}, got {text!r}")
    return value

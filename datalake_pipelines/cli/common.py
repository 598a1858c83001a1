"""What every ``datalake`` command shares: its errors, prompting, ``key=value`` parsing and output.

Kept apart from ``cli.py`` so that the command modules (``cli_download``, ``cli_verify``, ``cli_ingest_url``)
import it without importing the parser that imports them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..core.lake.layout import BASE_PATH_ENV, LakeLayout


class UsageError(Exception):
    """A needed flag is missing and cannot be prompted for (exit code 2)."""


class CliError(Exception):
    """An expected failure outside the core (exit code 1)."""


# prompting ---------------------------------------------------------------------------------------------
def stdin_is_tty() -> bool:
    try:
        return bool(sys.stdin is not None and sys.stdin.isatty())
    except (ValueError, OSError):  # closed or detached stdin
        return False


def ask(
    value: Any,
    flag: str,
    prompt: str,
    *,
    choices: Sequence[str] | None = None,
    allow_empty: bool = False,
) -> str:
    """``value`` if given, else an answer read with ``input()`` on a terminal, else a :class:`UsageError`."""
    if value is not None:
        return value
    if not stdin_is_tty():
        raise UsageError(f"missing {flag} (stdin is not a terminal, so it cannot be asked for)")
    hint = f" [{'/'.join(choices)}]" if choices else ""
    for _ in range(3):
        try:
            answer = input(f"{prompt}{hint}: ").strip()
        except EOFError:
            raise UsageError(f"missing {flag} (no answer on stdin)") from None
        if choices and answer not in choices:
            print(f"please answer one of {', '.join(choices)}", file=sys.stderr)
            continue
        if answer or allow_empty:
            return answer
        print("an answer is required", file=sys.stderr)
    raise UsageError(f"missing {flag} (no valid answer)")


def split_list(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def parse_pairs(items: Sequence[str], flag: str) -> dict[str, str]:
    """``["lang=ko", "note=Seoul, Korea"]`` -> ``{"lang": "ko", "note": "Seoul, Korea"}``.

    One ``key=value`` per flag; the value is kept verbatim (commas, spaces) so it is never split or trimmed
    silently. A key given twice is refused rather than letting the last one win unseen.
    """
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key.strip() or not val:
            raise CliError(f"{flag} expects key=value (one pair per {flag}), got {item!r}")
        if key.strip() in pairs:
            raise CliError(f"{flag} names {key.strip()!r} twice")
        pairs[key.strip()] = val
    return pairs


def parse_allowed_values(items: Sequence[str]) -> dict[str, list[str]]:
    """``["lang=ko,en", "src=real"]`` (or one ``"lang=ko,en / src=real"``) -> ``{"lang": [...], ...}``."""
    allowed: dict[str, list[str]] = {}
    for item in items:
        for part in item.split("/"):
            if not part.strip():
                continue
            key, sep, vals = part.partition("=")
            values = split_list(vals)
            if not sep or not key.strip() or not values:
                raise CliError(f"--allowed-values expects field=v1,v2,..., got {part.strip()!r}")
            allowed[key.strip()] = values
    return allowed


# output -------------------------------------------------------------------------------------------------
def emit(args: argparse.Namespace, doc: Any, text: str | Callable[[], str]) -> None:
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=False, default=str))
    else:
        print(text() if callable(text) else text)


def layout_of(args: argparse.Namespace) -> LakeLayout:
    try:
        return LakeLayout(args.base_path)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def lake_of(args: argparse.Namespace):
    """The lake of ``--base-path`` / ``$DATALAKE_BASE_PATH`` (folder or ``s3://``), a ``core.lake`` ``Lake``."""
    from ..core.lake.open import open_lake

    try:
        return open_lake(args.base_path)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def s3_base(args: argparse.Namespace) -> str | None:
    """The lake base when it is ``s3://...`` (flag or ``$DATALAKE_BASE_PATH``), else None."""
    base = str(args.base_path or os.environ.get(BASE_PATH_ENV, ""))
    return base if base.startswith("s3://") else None

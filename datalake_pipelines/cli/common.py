"""What every ``datalake`` command shares, once: errors, global options, prompting, ``key=value`` parsing,
the lake selection and the output helper.

Command modules import this module and nothing else of the CLI (``main`` imports them), so there is no
import circle.

``key=value`` flags follow one rule, :func:`split_pair`: split at the first ``=``, the key trimmed and
required, the value verbatim (commas, spaces and further ``=`` are data, never split or trimmed). What
differs between flags is what a repeated key and an empty value mean, so each has its own small parser:

- :func:`parse_pairs` (``upload --meta``, ``collection create --meta``, ``ingest-url --meta``): one value per
  field of a task's meta; an empty value or a repeated key is refused (a second value would silently win).
- :func:`parse_where` (``download --where``): a repeated column is a list (SQL ``IN``), an empty value is the
  empty string (a value a column can hold); raises ``ValueError`` (the query's own error type).
- ``export.parse_filters`` (``export create --filter``): always a list of distinct values, an empty value is
  refused; raises ``ExportError`` with the export API's stable codes, so it lives with the export command.
- :func:`parse_allowed_values` (``config task create --allowed-values``): ``field=v1,v2``, the value *is* a
  comma list (allowed values are names, never free text).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..core.lake.layout import LakeLayout
from ..core.lake.open import lake_kind
from ..settings import BASE_PATH_ENV
from ..settings import load as load_settings


class UsageError(Exception):
    """A needed flag is missing and cannot be prompted for (exit code 2)."""


class CliError(Exception):
    """An expected failure outside the core (exit code 1)."""


# global options -----------------------------------------------------------------------------------------
BASE_HELP = f"lake folder (default ${BASE_PATH_ENV} or ./lake)"


def global_options() -> argparse.ArgumentParser:
    """The parent parser of every sub-command: ``--base-path`` and ``--json`` after the sub-command too.

    ``SUPPRESS`` keeps the value given before the sub-command (the top-level parser's) when it is not repeated.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--base-path", default=argparse.SUPPRESS, help=BASE_HELP)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    return common


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


# key=value ----------------------------------------------------------------------------------------------
def split_list(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def split_pair(item: str) -> tuple[str, str] | None:
    """``"key=value"`` -> ``("key", "value")``: the key trimmed, the value verbatim (possibly empty).

    None when ``item`` has no ``=`` or an empty key: each caller raises its own error type.
    """
    key, sep, value = item.partition("=")
    return (key.strip(), value) if sep and key.strip() else None


def parse_pairs(items: Sequence[str], flag: str) -> dict[str, str]:
    """``["lang=ko", "note=Seoul, Korea"]`` -> ``{"lang": "ko", "note": "Seoul, Korea"}``.

    One ``key=value`` per flag; the value is kept verbatim (commas, spaces) so it is never split or trimmed
    silently. A key given twice is refused rather than letting the last one win unseen. Raises
    :class:`CliError` for a malformed item.
    """
    pairs: dict[str, str] = {}
    for item in items:
        pair = split_pair(item)
        if pair is None or not pair[1]:
            raise CliError(f"{flag} expects key=value (one pair per {flag}), got {item!r}")
        key, value = pair
        if key in pairs:
            raise CliError(f"{flag} names {key!r} twice")
        pairs[key] = value
    return pairs


def parse_allowed_values(items: Sequence[str]) -> dict[str, list[str]]:
    """``["lang=ko,en", "src=real"]`` (or one ``"lang=ko,en / src=real"``) -> ``{"lang": [...], ...}``."""
    allowed: dict[str, list[str]] = {}
    for item in items:
        for part in item.split("/"):
            if not part.strip():
                continue
            pair = split_pair(part)
            values = split_list(pair[1]) if pair else []
            if pair is None or not values:
                raise CliError(f"--allowed-values expects field=v1,v2,..., got {part.strip()!r}")
            allowed[pair[0]] = values
    return allowed


def json_object(text: str, flag: str, shape: str, error: Callable[[str], Exception]) -> dict[str, Any]:
    """``text`` parsed as a JSON object; ``error(message)`` is raised for bad JSON or another JSON type
    (the message names ``flag`` and the expected ``shape``, e.g. ``{column: [values]}``)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{flag} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise error(f"{flag} must be an object {shape}")
    return doc


def parse_where(items: Sequence[str] | None, json_text: str | None = None) -> dict[str, Any]:
    """``--where`` flags and ``--where-json`` -> ``{column: value or [values]}``.

    Each ``--where COLUMN=VALUE`` holds exactly one value, everything after the first ``=`` (commas and spaces
    included: ``--where "city=Seoul, Korea"``; ``--where city=`` is the empty string); repeating a column gives
    a list (``IN``). ``--where-json '{"city": ["Seoul, Korea", "Busan"], "score": 3}'`` gives lists and numbers
    at once. Values are cast to their column's type by the query; one that does not cast is an error naming
    the column. Raises ``ValueError`` for a malformed flag.
    """
    where: dict[str, Any] = {}

    def add(key: str, value: Any) -> None:
        if key not in where:
            where[key] = value
        else:
            current = where[key] if isinstance(where[key], list) else [where[key]]
            where[key] = current + (value if isinstance(value, list) else [value])

    for item in items or []:
        pair = split_pair(item)
        if pair is None:  # an empty value is the empty string
            raise ValueError(f"--where expects COLUMN=VALUE, got {item!r}")
        add(*pair)
    if json_text:
        doc = json_object(json_text, "--where-json", "{column: value or [values]}", ValueError)
        for key, value in doc.items():
            add(key, value)
    return where


# the lake -----------------------------------------------------------------------------------------------
def layout_of(args: argparse.Namespace) -> LakeLayout:
    """The local lake of ``--base-path`` (``$DATALAKE_BASE_PATH`` or ``./lake``); CliError for an S3 base."""
    try:
        return LakeLayout(getattr(args, "base_path", None))
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
    base = str(getattr(args, "base_path", None) or load_settings().base_path)
    return base if lake_kind(base) == "s3" else None


def lake_base(args: argparse.Namespace) -> str | Path:
    """The lake of ``--base-path``: its ``s3://`` URI, else the resolved local folder."""
    return s3_base(args) or layout_of(args).base


def lake_target(args: argparse.Namespace) -> LakeLayout | str:
    """The lake of ``--base-path`` for APIs that take either backend: its ``s3://`` URI, else its local layout."""
    return s3_base(args) or layout_of(args)


AS_OF_HELP = (
    "the catalog as it was then: an ISO 8601 timestamp (UTC if no offset) or a catalog version id "
    "(`datalake catalog versions`); refused when older than GC's retention still holds"
)


# output -------------------------------------------------------------------------------------------------
def emit(args: argparse.Namespace, doc: Any, text: str | Callable[[], str]) -> None:
    """Print ``doc`` as indented JSON with ``--json``, else ``text`` (a string, or a function making it)."""
    if getattr(args, "json", False):
        print(json.dumps(doc, indent=2, ensure_ascii=False, default=str))
    else:
        print(text() if callable(text) else text)

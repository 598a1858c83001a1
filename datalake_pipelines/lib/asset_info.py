"""What every asset says about itself: owners and tags from settings, the code version, column descriptions.

``asset_info()`` reads ``DATALAKE_ASSET_OWNERS`` (comma list: ``team:data-eng,alice@example.com``) and
``DATALAKE_ASSET_TAGS`` (``k=v,k=v``) when the code location loads, so ``@dg.asset(**asset_info().asset_kwargs())``
shows them in the UI. ``CODE_VERSION`` is the installed package's version: Dagster marks an asset's
materializations as made by an older code version when it changes. ``BOOKKEEPING_COLUMNS`` describes the columns
the lake adds to every catalog row (``column_description`` also covers the ``<col>_sha256``-style columns of
stored files), for ``dagster/column_schema``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

import dagster as dg

# Dagster's own validators, so a bad setting is refused here with the variable's name instead of later with
# a message about some asset (they are the rules `@asset(owners=..., tags=...)` applies).
from dagster._core.definitions.utils import is_valid_owner
from dagster._utils.tags import is_valid_strict_tag_value, is_valid_tag_key

from ..core.catalog.parts import BATCH_ID, INGESTED_AT, ROW_HASH
from ..settings import ASSET_OWNERS_ENV as OWNERS_ENV
from ..settings import ASSET_TAGS_ENV as TAGS_ENV
from ..settings import load as load_settings


def _package_version() -> str:
    try:
        return version("datalake_pipelines")
    except PackageNotFoundError:  # run from a source tree that was never pip-installed
        return "0+source"


CODE_VERSION = _package_version()

BOOKKEEPING_COLUMNS: dict[str, str] = {
    "provider": "Partition level 1: who supplied the data (a provider of config/schema.yaml).",
    "dataset": "Partition level 2: the dataset name within the provider.",
    "task": "Partition level 3: the annotation task (ocr, vqa, ...) or 'raw' for raw uploads.",
    "variant": "Partition level 4: the variant of the task's annotations.",
    BATCH_ID: "The staging job id of the batch that added the row (logs/jobs/<batch_id>.json says what happened).",
    INGESTED_AT: "When the batch that added the row was ingested (UTC, microseconds).",
    ROW_HASH: "SHA-256 of the row's content plus its occurrence number in its batch: the row's identity "
    "(a re-upload of the same row is skipped).",
}

# Columns the lake adds next to each file column ``<col>`` (see core/catalog/parts.py image_fields/file_fields).
FILE_COLUMN_SUFFIXES: dict[str, str] = {
    "sha256": "SHA-256 of the file's original bytes: its name in the content-addressed assets/ store.",
    "width": "Displayed width in pixels (after the EXIF orientation).",
    "height": "Displayed height in pixels (after the EXIF orientation).",
    "format": "Image format as Pillow identifies it (JPEG, PNG, ...).",
    "mode": "Pillow image mode (RGB, L, RGBA, ...).",
    "orientation": "EXIF Orientation tag (1-8); null when the image has none. The stored bytes are never rotated.",
    "size": "File size in bytes.",
    "phash": "64-bit perceptual hash (DCT pHash) as a signed int64, for near-duplicate search; null when not "
    "computed ($DATALAKE_PHASH=0, or rows written before it existed).",
}


class AssetInfoError(ValueError):
    """A ``DATALAKE_ASSET_OWNERS``/``DATALAKE_ASSET_TAGS`` value Dagster would refuse; the message names it."""


def column_description(name: str, file_columns: frozenset[str] | set[str] = frozenset()) -> str | None:
    """Description of a column the lake adds: a bookkeeping column, or ``<col>_<suffix>`` of a file column
    named in ``file_columns`` (``image`` -> ``image_sha256``...); ``None`` for a user's own column."""
    if name in BOOKKEEPING_COLUMNS:
        return BOOKKEEPING_COLUMNS[name]
    if name in file_columns:
        return "Lake-relative path of the stored file (assets/provider=.../<sha256>.<ext>)."
    base, _, suffix = name.rpartition("_")
    if base in file_columns and suffix in FILE_COLUMN_SUFFIXES:
        return f"{FILE_COLUMN_SUFFIXES[suffix]} (of column {base})"
    return None


def parse_owners(raw: str) -> list[str]:
    """``"team:data-eng, a@b.org"`` -> ``["team:data-eng", "a@b.org"]``; raises ``AssetInfoError`` on a bad owner."""
    owners = [o.strip() for o in raw.split(",") if o.strip()]
    bad = [o for o in owners if not is_valid_owner(o)]
    if bad:
        raise AssetInfoError(f"{OWNERS_ENV}: {', '.join(map(repr, bad))} is not an email address or 'team:<name>'")
    return owners


def parse_tags(raw: str) -> dict[str, str]:
    """``"domain=ml,tier=gold"`` -> ``{"domain": "ml", "tier": "gold"}``; raises ``AssetInfoError`` naming the
    item when it has no ``=`` or breaks Dagster's asset tag rules (letters, digits, ``_.-``, at most 63)."""
    tags: dict[str, str] = {}
    for item in (i.strip() for i in raw.split(",")):
        if not item:
            continue
        key, sep, value = (p.strip() for p in item.partition("="))
        if not sep or not key:
            raise AssetInfoError(f"{TAGS_ENV}: {item!r} is not key=value")
        if not is_valid_tag_key(key) or not is_valid_strict_tag_value(value):
            raise AssetInfoError(
                f"{TAGS_ENV}: {item!r}: keys and values may hold letters, digits, '_', '.', '-' "
                "(keys also '/'), at most 63 characters"
            )
        tags[key] = value
    return tags


@dataclass(frozen=True)
class AssetInfo:
    owners: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    code_version: str = CODE_VERSION

    def asset_kwargs(self) -> dict:
        """``owners``, ``tags`` and ``code_version`` for ``@dg.asset(...)``."""
        return {"owners": list(self.owners), "tags": dict(self.tags), "code_version": self.code_version}


def asset_info(env: Mapping[str, str] | None = None) -> AssetInfo:
    """Owners and tags from ``DATALAKE_ASSET_OWNERS``/``DATALAKE_ASSET_TAGS`` (both optional) and the code version."""
    settings = load_settings(env)
    return AssetInfo(parse_owners(settings.asset_owners), parse_tags(settings.asset_tags))


def table_schema(
    columns: list[tuple[str, str]], file_columns: frozenset[str] | set[str] = frozenset()
) -> dg.TableSchema:
    """``dg.TableSchema`` of ``(name, type)`` pairs with the lake's own columns described."""
    return dg.TableSchema(
        columns=[dg.TableColumn(n, t, description=column_description(n, file_columns)) for n, t in columns]
    )

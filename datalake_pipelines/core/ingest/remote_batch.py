"""Stage a Parquet file or a zip of images at a URL as a batch, with no local copy of the data.

* **S3 lake**: the body is streamed into S3 part by part (:func:`stream_url_to_s3`) and read back through
  pyarrow's S3 file system with range requests. A Parquet file lands as ``staging/pending/<job>/data.parquet``
  and only its footer is read (validity, row count). A zip lands as ``staging/incoming/<job>.zip`` (outside
  ``pending/``, so never claimed) and each image member is streamed into ``staging/pending/<job>/files/``.
* **Local lake**: the body is streamed onto the lake's own disk, into ``staging/pending/.tmp-<job>``, which is
  renamed into place once complete (a zip is unpacked there, then deleted).

The lake at ``base`` hands out where the batch goes (``Lake.batch_sink``, :mod:`.batch_sinks`); a zip's members
are chosen and unpacked by :mod:`.remote_zip`. ``_metadata.json`` is written last. ``source.json`` in the batch
records the URL, byte count and sha256 of the transferred body and the zip members that were refused (absolute
path, ``..``, unreadable) or skipped (not an image). An empty ``description`` becomes the URL, sha256 and size,
so that survives ingestion.
Memory stays near part_size x (max_concurrency + 2) while streaming and part_size x workers while unpacking.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ValidationError
from ..lake.layout import BATCH_DATA, BATCH_MANIFEST, RAW_TASK
from ..lake.open import open_lake
from ..storage.files import utc_now_iso
from ..storage.transfer import TransferSettings
from .batch_sinks import BatchSink
from .manifest import BatchManifest
from .provenance import url_source
from .remote_zip import unpack_zip
from .staging import IMAGE_NAME_HINTS, build_manifest

log = logging.getLogger(__name__)

SOURCE_FILE = "source.json"
KINDS = {".parquet": "parquet", ".pq": "parquet", ".zip": "zip"}
DEFAULT_MAX_UNZIPPED_BYTES = 50 * 1024**3


@dataclass
class RemoteBatch:
    """A staged batch and what ``source.json`` says about where it came from."""

    staging_uri: str
    job_id: str
    kind: str
    rows: int
    source: dict[str, Any]

    @property
    def refused(self) -> list[dict[str, str]]:
        return self.source.get("refused", [])


def detect_kind(url: str, kind: str | None = None, option: str = "kind") -> str:
    """``parquet`` or ``zip``: ``kind`` if given, else from the URL path's suffix.

    Raises ``ValidationError`` for a ``kind`` that is neither, or a suffix that says neither; the message tells
    how to choose, spelled as the caller names its choice: ``option`` ``"kind"`` (the Python keyword:
    ``kind="zip"``) or a command-line flag such as ``"--kind"`` (``--kind zip``)."""
    kinds = sorted(set(KINDS.values()))
    how = " or ".join(f"{option} {k}" if option.startswith("-") else f'{option}="{k}"' for k in kinds)
    if kind:
        if kind not in kinds:
            raise ValidationError(f"{option} {kind!r} is none of {', '.join(kinds)}: pass {how}")
        return kind
    suffix = PurePosixPath(urlparse(url).path).suffix.lower()
    found = KINDS.get(suffix)
    if found is None:
        said = f"its suffix {suffix!r}" if suffix else "a URL without a file suffix"
        raise ValidationError(f"cannot tell whether {url!r} is a Parquet file or a zip from {said}: pass {how}")
    return found


def stage_url(
    url: str,
    base: str | os.PathLike,
    provider: str,
    dataset: str,
    task: str = RAW_TASK,
    variant: str | None = None,
    meta: dict[str, Any] | None = None,
    description: str = "",
    job_id: str | None = None,
    settings: TransferSettings | None = None,
    progress: bool = False,
    **options: Any,
) -> tuple[str, str]:
    """Stage the Parquet file or zip at ``url`` into the lake at ``base``; return ``(staging_uri, job_id)``.

    ``options``: ``kind``, ``max_unzipped_bytes``, ``workers`` (see :func:`stage_remote`, which also
    returns the refused/skipped members).
    """
    batch = stage_remote(
        url, base, provider, dataset, task, variant, meta, description, job_id, settings, progress, **options
    )
    return batch.staging_uri, batch.job_id


def stage_remote(
    url: str,
    base: str | os.PathLike,
    provider: str,
    dataset: str,
    task: str = RAW_TASK,
    variant: str | None = None,
    meta: dict[str, Any] | None = None,
    description: str = "",
    job_id: str | None = None,
    settings: TransferSettings | None = None,
    progress: bool = False,
    kind: str | None = None,
    max_unzipped_bytes: int = DEFAULT_MAX_UNZIPPED_BYTES,
    workers: int = 4,
) -> RemoteBatch:
    """Like :func:`stage_url`, returning a :class:`RemoteBatch`.

    Raises ``TransferError`` when the download fails and ``ValidationError`` when the manifest or the body
    is unusable; either way nothing is left in ``staging/pending`` (or ``staging/incoming``).
    """
    kind = detect_kind(url, kind)
    variant = variant or ("image" if kind == "zip" else "mixed" if task == RAW_TASK else "default")
    manifest = build_manifest(
        "raw" if task == RAW_TASK else "task", provider, dataset, task, variant, meta, description, job_id
    )
    lake = open_lake(base)
    sink = lake.batch_sink(manifest.job_id)
    manifest.validate(lake.schema())
    sink.check_free()
    settings = settings or TransferSettings()
    try:
        fetched = sink.fetch(url, BATCH_DATA if kind == "parquet" else sink.zip_name, settings, progress)
        source = {"url": url, "kind": kind, "bytes": fetched["bytes"], "sha256": fetched["sha256"]}
        if kind == "parquet":
            rows = _check_parquet(url, sink, manifest)
        else:
            rows, members = unpack_zip(url, sink, manifest, settings, max_unzipped_bytes, workers, progress)
            source.update(members)
        source["staged_at"] = utc_now_iso()
        manifest.source = url_source(url, kind, source["sha256"], source["bytes"])
        manifest.row_count = rows
        manifest.description = manifest.description or f"{url} sha256:{source['sha256']} bytes:{source['bytes']}"
        sink.write(SOURCE_FILE, _json(source))
        sink.write(BATCH_MANIFEST, _json(manifest.to_json()))  # the batch is complete from here on
        uri = sink.publish()
    except BaseException:
        sink.discard()
        raise
    sink.tidy()
    for item in source.get("refused", []):
        log.warning("%s: zip member %r not extracted: %s", url, item["name"], item["reason"])
    return RemoteBatch(uri, manifest.job_id, kind, rows, source)


def _json(doc: Any) -> bytes:
    return json.dumps(doc, indent=2, ensure_ascii=False, default=str).encode("utf-8")


# parquet ---------------------------------------------------------------------------------------------
def _check_parquet(url: str, sink: BatchSink, manifest: BatchManifest) -> int:
    """Validate ``data.parquet`` from its footer alone (range reads); return its row count."""
    try:
        with sink.open(BATCH_DATA) as fh:
            meta = pq.ParquetFile(fh).metadata
            schema, rows = meta.schema.to_arrow_schema(), meta.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise ValidationError(f"{url}: not a readable Parquet file ({exc}); nothing was staged") from None
    if rows == 0:
        raise ValidationError(f"{url}: the Parquet file has no rows; nothing was staged")
    clash = sorted(set(manifest.meta) & set(schema.names))
    if clash:
        raise ValidationError(f"{url}: data columns {clash} clash with meta fields of the same name")
    embedded = [f.name for f in schema if _holds_images(f)]
    if embedded:
        raise ValidationError(
            f"{url}: columns {embedded} hold image bytes; a remote Parquet file is staged as-is, so they would "
            "end up inside the catalog. Stage it with `datalake upload`, which moves images to the asset store"
        )
    return rows


def _holds_images(fld: pa.Field) -> bool:
    t = fld.type
    if pa.types.is_struct(t):
        return {t.field(i).name for i in range(t.num_fields)} >= {"bytes", "path"}
    binary = pa.types.is_binary(t) or pa.types.is_large_binary(t)
    return binary and any(hint in fld.name.lower() for hint in IMAGE_NAME_HINTS)

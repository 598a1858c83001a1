"""``create_data_file``: one file into the content-addressed store, with lake-wide dedup (the reference's call).

The id of a data file is the SHA-256 of its bytes. The file is hashed, looked up in the hash index (local
SQLite, or the validated cache of an S3 lake's published segments) and stored only when the content is new,
under ``assets/provider=P/dataset=D/ab/cd/<sha256>.<ext>``; a new file gets an index entry (on S3 a one-entry
segment, written after the object). Images (anything Pillow identifies) are checked like ingested images and
their facts recorded (format, displayed width/height, orientation, mode); a file Pillow identifies as an
image but cannot load is refused with the reason. Other files are stored as ``kind = "file"``.

Transfers (the reference recommends chunked uploads above 50 MB):

* ``use_chunked_upload=True``: streamed in chunks of :func:`chunk_size` bytes with a tqdm progress bar, so
  memory stays bounded whatever the size; on S3 a boto3 managed transfer, multipart above the threshold.
* ``use_chunked_upload=False``: one read and one write (one ``PUT`` on S3) for files up to the threshold.
  A larger file is streamed anyway (never read whole into memory) and the result says ``"chunked": True``.

The threshold is 50 MiB, or ``$DATALAKE_CHUNKED_THRESHOLD_MB`` / the ``threshold`` argument.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig
from tqdm import tqdm

from ...settings import load as load_settings
from ..errors import ValidationError
from ..lake.layout import LakeLayout, check_name
from ..neardup.phash import FrameHasher, phash_enabled
from ..storage.files import temp_sibling, utc_now_iso
from .asset_store import asset_problem, restore_asset
from .file_accounting import is_image_file
from .first_store import settle_one
from .hash_index import IndexEntry
from .images import ImageRejected, displayed_size, exif_orientation, inspect_image, max_pixels_from_env
from .index_store import open_hash_index

MiB = 1024 * 1024
DEFAULT_PROVIDER = "data_files"
DEFAULT_DATASET = "default"
S3_MIN_PART = 5 * MiB  # S3's smallest multipart part (every part but the last)


def chunked_threshold(threshold: int | None = None) -> int:
    """Bytes above which a transfer is chunked: ``threshold``, else ``$DATALAKE_CHUNKED_THRESHOLD_MB``, else 50 MiB."""
    if threshold is not None:
        return int(threshold)
    return load_settings().chunked_threshold


def chunk_size(threshold: int) -> int:
    """Read size of a streamed transfer: 8 MiB, smaller for a lowered threshold (1/8 of it, at least 64 KiB)."""
    return max(64 * 1024, min(8 * MiB, threshold // 8))


def _bar(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not enabled)


def _hash(path: Path, size: int, chunked: bool, step: int, progress: bool) -> tuple[str, bytes | None]:
    """SHA-256 of the file, and its bytes when it was read whole (not chunked)."""
    with open(path, "rb", buffering=0) as fh:
        if not chunked:
            data = fh.readall()
            return hashlib.sha256(data).hexdigest(), data
        digest = hashlib.sha256()
        buf = bytearray(step)
        view = memoryview(buf)
        with _bar(size, f"hashing {path.name}", progress) as bar:
            while n := fh.readinto(buf):
                digest.update(view[:n])
                bar.update(n)
        return digest.hexdigest(), None


def _facts(path: Path, data: bytes | None) -> dict[str, Any]:
    """Image facts (format, displayed size, orientation, mode) or ``kind = "file"`` for anything else."""
    source = data if data is not None else path
    try:
        # Identification reads the header only; a header Pillow refuses as a decompression bomb is an image
        # (rejected below by the pixel limit with its reason), never a plain file. A file named as an image
        # that Pillow cannot identify (cut inside its header) is a broken image, as in folder uploads.
        is_image = is_image_file(path)
    except OSError as exc:
        raise ValidationError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    if not is_image:
        return {"kind": "file", "format": None, "width": None, "height": None, "mode": None, "orientation": None}
    hasher = FrameHasher() if phash_enabled() else None
    try:
        info = inspect_image(source, max_pixels_from_env(), frame0=hasher)
    except ImageRejected as exc:
        raise ValidationError(f"{path}: an image, rejected: {exc}") from None
    orientation = exif_orientation(source)
    width, height = displayed_size(info.width, info.height, orientation, info.format)
    return {
        "kind": "image",
        "format": info.format,
        "width": width,
        "height": height,
        "mode": info.mode,
        "orientation": orientation or 0,
        "phash": hasher.result(source) if hasher is not None else None,
        "extension": info.extension,
    }


def _result(entry: IndexEntry, where: str, deduplicated: bool, chunked: bool, parts: int | None) -> dict[str, Any]:
    return {
        "id": entry.stored_sha256,
        "sha256": entry.stored_sha256,
        "size": entry.size,
        "path": entry.path,
        "uri": where,
        "kind": entry.kind,
        "format": entry.format,
        "width": entry.width,
        "height": entry.height,
        "orientation": entry.orientation or None,
        "mode": entry.mode,
        "deduplicated": deduplicated,
        "chunked": chunked,
        "parts": parts,
    }


def _prepare(file_path: str | os.PathLike, use_chunked_upload: bool, threshold: int | None, progress: bool):
    path = Path(file_path).expanduser()
    if not path.is_file():
        raise ValidationError(f"{path}: not a file")
    size = path.stat().st_size
    limit = chunked_threshold(threshold)
    chunked = use_chunked_upload or size > limit
    step = chunk_size(limit)
    sha, data = _hash(path, size, chunked, step, progress and use_chunked_upload)
    return path, size, limit, chunked, step, sha, data


def _new_entry(path: Path, sha: str, size: int, data: bytes | None, layout: LakeLayout, provider: str, dataset: str):
    facts = _facts(path, data)
    ext = facts.pop("extension", None) or path.suffix.lower().lstrip(".")[:16]
    relpath = layout.asset_relpath(provider, dataset, sha, ext)
    job = f"file-{sha[:16]}-{uuid.uuid4().hex[:8]}"
    return IndexEntry(
        sha,
        sha,
        relpath,
        size,
        provider=provider,
        dataset=dataset,
        first_batch_id=job,
        created_at=utc_now_iso(),
        **facts,
    )


def create_data_file_local(
    layout: LakeLayout,
    file_path: str | os.PathLike,
    use_chunked_upload: bool = False,
    provider: str = DEFAULT_PROVIDER,
    dataset: str = DEFAULT_DATASET,
    threshold: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Store one file in a local lake; return ``{"id", "sha256", "size", "path", "uri", "kind", "format",
    "width", "height", "orientation", "mode", "deduplicated", "chunked", "parts"}``.

    A known content whose asset is missing or has the wrong size (deleted or damaged) is stored again
    (``"deduplicated": False``). Raises :class:`ValidationError` for a path that is not a file or an image
    Pillow cannot load (a decompression bomb included), and
    ``InvalidNameError`` for a bad provider/dataset name. The source file is only read.
    """
    check_name("provider", provider)
    check_name("dataset", dataset)
    path, size, _limit, chunked, step, sha, data = _prepare(file_path, use_chunked_upload, threshold, progress)
    index = open_hash_index(layout)
    try:
        known = index.get(sha)
        if known is not None and asset_problem(layout, known) is None:
            return _result(known, str(layout.base / known.path), True, chunked, None)
        if known is not None and known.stored_sha256 == sha:  # its asset was deleted or damaged: store it again
            target = layout.asset_path(known.path)
            restore_asset(target, data if data is not None else path, sha)
            return _result(known, str(target), False, chunked, None)
        entry = _new_entry(path, sha, size, data, layout, provider, dataset)
        target = layout.asset_path(entry.path)
        written = not target.exists()
        if written:
            _copy(path, data, target, step, progress and use_chunked_upload)
        settled = settle_one(layout, index, entry, written)
        return _result(settled, str(layout.asset_path(settled.path)), settled is not entry, chunked, None)
    finally:
        index.close()


def _copy(path: Path, data: bytes | None, target: Path, step: int, progress: bool) -> None:
    """Write to a temp sibling, then ``os.link`` (never overwrites; an existing target is the same content)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target)
    try:
        with open(tmp, "wb") as dst:
            if data is not None:
                dst.write(data)
            else:
                buf = bytearray(step)
                view = memoryview(buf)
                with (
                    open(path, "rb", buffering=0) as src,
                    _bar(path.stat().st_size, f"copying {path.name}", progress) as bar,
                ):
                    while n := src.readinto(buf):
                        dst.write(view[:n])
                        bar.update(n)
        os.chmod(tmp, 0o444)  # read-only like every published asset (core/ingest/asset_store.py)
        try:
            os.link(tmp, target)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def create_data_file_s3(
    s3_lake,
    file_path: str | os.PathLike,
    use_chunked_upload: bool = False,
    provider: str = DEFAULT_PROVIDER,
    dataset: str = DEFAULT_DATASET,
    threshold: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """:func:`create_data_file_local` for an S3 lake (``s3_lake`` an :class:`~.s3_lake.S3Lake`).

    Dedup uses the validated cache of published segments; a hit is trusted after one HEAD finds its object
    at the indexed size, else the bytes are uploaded again (``"deduplicated": False``). A chunked upload is a
    boto3 managed transfer (multipart above the threshold, parts of at least 5 MiB, two concurrent parts); the
    object is written
    before its one-entry index segment, so the index never names a missing object.
    """
    check_name("provider", provider)
    check_name("dataset", dataset)
    path, size, limit, chunked, step, sha, data = _prepare(file_path, use_chunked_upload, threshold, progress)
    cache = s3_lake.index_cache()
    known = cache.index.get(sha)
    if known is not None and s3_lake.existing_assets([known.path]).get(known.path) == known.size:
        return _result(known, s3_lake.uri_of(known.path), True, chunked, None)
    if known is not None and known.stored_sha256 == sha:  # its object was deleted or damaged: upload it again
        entry = known
    else:
        entry = _new_entry(path, sha, size, data, LakeLayout(s3_lake.cache / "scratch"), provider, dataset)
    storage = s3_lake.storage
    parts = None
    if data is not None:
        storage.write_bytes(entry.path, data)
    else:
        part = max(S3_MIN_PART, step)
        config = TransferConfig(multipart_threshold=max(limit, part), multipart_chunksize=part, max_concurrency=2)
        with _bar(size, f"uploading {path.name}", progress and use_chunked_upload) as bar:
            storage.client.upload_file(
                str(path), storage.bucket, storage._key(entry.path), Config=config, Callback=bar.update
            )
        etag = storage.info(entry.path).etag.strip('"')
        parts = int(etag.rsplit("-", 1)[1]) if "-" in etag else 1
    if entry is not known:
        cache.publish(entry.first_batch_id, [entry])
    return _result(entry, s3_lake.uri_of(entry.path), False, chunked, parts)

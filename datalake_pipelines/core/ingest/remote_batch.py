"""Stage a Parquet file or a zip of images at a URL as a batch, with no local copy of the data.

* **S3 lake**: the body is streamed into S3 part by part (:func:`stream_url_to_s3`) and read back through
  pyarrow's S3 file system with range requests. A Parquet file lands as ``staging/pending/<job>/data.parquet``
  and only its footer is read (validity, row count). A zip lands as ``staging/incoming/<job>.zip`` (outside
  ``pending/``, so never claimed) and each image member is streamed into ``staging/pending/<job>/files/``.
* **Local lake**: the body is streamed onto the lake's own disk, into ``staging/pending/.tmp-<job>``, which is
  renamed into place once complete (a zip is unpacked there, then deleted).

``_metadata.json`` is written last. ``source.json`` in the batch records the URL, byte count and sha256 of
the transferred body and the zip members that were refused (absolute path, ``..``, unreadable) or skipped
(not an image). An empty ``description`` becomes the URL, sha256 and size, so that survives ingestion.
Memory stays near part_size x (max_concurrency + 2) while streaming and part_size x workers while unpacking.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import shutil
import threading
import urllib.error
import urllib.request
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from ..errors import ValidationError
from ..lake import keys
from ..lake.batches import JOB_ID_USED, check_job_id_free
from ..lake.layout import BATCH_DATA, BATCH_FILES_DIR, BATCH_MANIFEST, RAW_TASK, LakeLayout
from ..lake.s3 import S3Lake
from ..lake.schema import SchemaConfig, load_schema
from ..storage.backends import LocalStorage, S3Storage, is_s3_uri
from ..storage.files import utc_now_iso
from ..storage.transfer import MiB, TransferError, TransferSettings, stream_url_to_s3
from .file_accounting import IMAGE_EXTENSIONS
from .manifest import BatchManifest
from .staging import IMAGE_NAME_HINTS, build_manifest

log = logging.getLogger(__name__)

SOURCE_FILE = "source.json"
INCOMING = keys.INCOMING
KINDS = {".parquet": "parquet", ".pq": "parquet", ".zip": "zip"}
DEFAULT_MAX_UNZIPPED_BYTES = 50 * 1024**3
MAX_LISTED = 100  # skipped member names kept in source.json (all are counted)
CHUNK = 1000  # zip members in flight


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


def detect_kind(url: str, kind: str | None = None) -> str:
    """``parquet`` or ``zip``: ``kind`` if given, else from the URL path's suffix."""
    found = kind or KINDS.get(PurePosixPath(urlparse(url).path).suffix.lower())
    if found is None or found not in KINDS.values():
        raise ValidationError(f"cannot stage {url!r} as {found!r}: pass kind='parquet' or kind='zip'")
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
    sink = _S3Sink(str(base), manifest.job_id) if is_s3_uri(str(base)) else _LocalSink(base, manifest.job_id)
    manifest.validate(sink.schema())
    sink.check_free()
    settings = settings or TransferSettings()
    try:
        fetched = sink.fetch(url, BATCH_DATA if kind == "parquet" else sink.zip_name, settings, progress)
        source = {"url": url, "kind": kind, "bytes": fetched["bytes"], "sha256": fetched["sha256"]}
        if kind == "parquet":
            rows = _check_parquet(url, sink, manifest)
        else:
            rows, members = _unpack(url, sink, manifest, settings, max_unzipped_bytes, workers, progress)
            source.update(members)
        source["staged_at"] = utc_now_iso()
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
def _check_parquet(url: str, sink: _Sink, manifest: BatchManifest) -> int:
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


# zip -------------------------------------------------------------------------------------------------
def member_path(name: str) -> tuple[str | None, str | None]:
    """``(relative path, None)`` for a safe member name, ``(None, reason)`` for a hostile one."""
    raw = name.replace("\\", "/")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        return None, "absolute path"
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None, "path contains '..'"
    return ("/".join(parts), None) if parts else (None, "empty name")


def _plan(url: str, infos: list[zipfile.ZipInfo], max_bytes: int):
    """Split members into (index, relpath) to extract, refused (reported) and skipped (not images)."""
    accepted: list[tuple[int, str]] = []
    refused: list[dict[str, str]] = []
    skipped: list[str] = []
    files: set[str] = set()
    dirs: set[str] = set()
    for index, info in enumerate(infos):
        if info.is_dir():
            continue
        rel, reason = member_path(info.filename)
        if rel is not None:
            parts = rel.split("/")
            parents = {"/".join(parts[:i]) for i in range(1, len(parts))}
            if any(p.startswith(".") or p == "__MACOSX" for p in parts):
                skipped.append(info.filename)
                continue
            if Path(rel).suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append(info.filename)
                continue
            if rel in files or rel in dirs or parents & files:
                reason = "clashes with another member of the same path"
            elif info.flag_bits & 0x1:
                reason = "encrypted"
        if reason:
            refused.append({"name": info.filename, "reason": reason})
            continue
        assert rel is not None  # member_path gives a path or a reason
        files.add(rel)
        dirs |= parents
        accepted.append((index, rel))
    total = sum(infos[i].file_size for i, _ in accepted)
    if total > max_bytes:
        raise ValidationError(
            f"{url}: the zip's images would unpack to {total:,} bytes, above the limit of {max_bytes:,} "
            "(max_unzipped_bytes); nothing was staged"
        )
    return accepted, refused, skipped


def _unpack(url, sink, manifest, settings, max_bytes, workers, progress) -> tuple[int, dict[str, Any]]:
    """Copy the zip's image members into ``files/``, write ``data.parquet``; return (rows, report)."""
    try:
        with sink.open(sink.zip_name) as raw, zipfile.ZipFile(raw) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, pa.ArrowException) as exc:
        raise ValidationError(f"{url}: not a readable zip file ({exc}); nothing was staged") from None
    accepted, refused, skipped = _plan(url, infos, max_bytes)
    failures = _copy_members(sink, infos, accepted, settings, workers, progress)
    refused += [{"name": infos[i].filename, "reason": failures[i]} for i, _ in accepted if i in failures]
    done = [(i, rel) for i, rel in accepted if i not in failures]
    if not done:
        raise ValidationError(
            f"{url}: the zip holds no usable image files; nothing was staged (refused: {refused[:5]})"
        )
    paths = [f"{BATCH_FILES_DIR}/{rel}" for _, rel in done]
    table = pa.table({"image": pa.array(paths, pa.string()), "file_name": pa.array([r for _, r in done], pa.string())})
    sink_buf = pa.BufferOutputStream()
    pq.write_table(table, sink_buf)
    sink.write(BATCH_DATA, sink_buf.getvalue().to_pybytes())
    manifest.image_columns = ["image"]
    manifest.files = [
        {"path": p, "size": infos[i].file_size, "source": infos[i].filename} for p, (i, _) in zip(paths, done)
    ]
    report = {"members": len(done), "refused": refused, "skipped": len(skipped), "skipped_names": skipped[:MAX_LISTED]}
    return len(done), report


def _copy_members(sink, infos, accepted, settings, workers, progress) -> dict[int, str]:
    """Stream members into the batch, one zip reader per thread; return {index: reason} of unreadable ones."""
    local, opened, lock, stop = threading.local(), [], threading.Lock(), threading.Event()
    failures: dict[int, str] = {}

    def reader() -> zipfile.ZipFile:
        if not hasattr(local, "zf"):
            raw = sink.open(sink.zip_name)
            local.zf = zipfile.ZipFile(raw)
            with lock:
                opened.append((local.zf, raw))
        return local.zf

    def copy(item: tuple[int, str]) -> None:
        index, rel = item
        if stop.is_set():
            return
        try:
            zf = reader()
            with zf.open(zf.infolist()[index]) as src:
                sink.put(f"{BATCH_FILES_DIR}/{rel}", src, infos[index].file_size, settings)
        except (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError) as exc:
            failures[index] = f"unreadable: {exc}"
        except BaseException:
            stop.set()
            raise

    try:
        with (
            ThreadPoolExecutor(max(1, workers)) as pool,
            tqdm(total=len(accepted), unit="file", desc="unzipping", disable=not progress, leave=False) as bar,
        ):
            for start in range(0, len(accepted), CHUNK):  # bounded: map() submits a whole chunk at once
                for _ in pool.map(copy, accepted[start : start + CHUNK]):
                    bar.update(1)
    finally:
        for zf, raw in opened:
            zf.close()
            raw.close()
    return failures


# where the batch goes --------------------------------------------------------------------------------
class _Sink:
    """A batch being written: ``storage`` keys under ``batch``; the zip (if any) at ``zip_name``."""

    storage: LocalStorage | S3Storage
    batch: str
    zip_name: str

    def key(self, name: str) -> str:
        return name if name.startswith(INCOMING + "/") else f"{self.batch}/{name}"

    def open(self, name: str):
        fs, root = self.storage.arrow()
        return fs.open_input_file(f"{root}/{self.key(name)}")

    def write(self, name: str, data: bytes) -> None:
        self.storage.write_bytes(self.key(name), data)

    def tidy(self) -> None:
        """After success: drop what is no longer needed (best effort)."""


class _S3Sink(_Sink):
    storage: S3Storage

    def __init__(self, base: str, job_id: str):
        self.lake = S3Lake(base)
        self.storage, self.job_id = self.lake.storage, job_id
        self.batch, self.zip_name = keys.pending_batch(job_id), keys.incoming_zip(job_id)

    def schema(self) -> SchemaConfig:
        return self.lake.schema()

    def check_free(self) -> None:
        check_job_id_free(self.storage, self.job_id)

    def _full(self, name: str) -> str:
        key = self.key(name)
        return f"{self.storage.prefix}/{key}" if self.storage.prefix else key

    def fetch(self, url: str, name: str, settings: TransferSettings, progress: bool) -> dict[str, Any]:
        return stream_url_to_s3(url, f"s3://{self.storage.bucket}/{self._full(name)}", settings, progress=progress)

    def put(self, name: str, src: BinaryIO, size: int, settings: TransferSettings) -> None:
        """Upload a stream: one put if it fits a part, else a multipart upload of one part at a time."""
        client, bucket, key = self.storage.client, self.storage.bucket, self._full(name)
        part_size = settings.part_size_for(size)
        data = src.read(part_size)
        if len(data) < part_size:
            client.put_object(Bucket=bucket, Key=key, Body=data)
            return
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        parts: list[dict[str, Any]] = []
        try:
            while data:
                number = len(parts) + 1
                etag = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data)
                parts.append({"PartNumber": number, "ETag": etag["ETag"]})
                del data  # free the part before reading the next one
                data = src.read(part_size)
            client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(Exception):  # the original error matters more
                client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise

    def publish(self) -> str:
        return self.lake.uri_of(self.batch)

    def discard(self) -> None:
        """Delete everything staged for the job (manifest first, so it never looks complete)."""
        keys = [o.key for o in self.storage.list(self.batch)]
        manifest = f"{self.batch}/{BATCH_MANIFEST}"
        self.storage.delete([k for k in keys if k == manifest])
        self.storage.delete([k for k in keys if k != manifest] + [self.zip_name])

    def tidy(self) -> None:
        try:
            self.storage.delete([self.zip_name])
        except Exception as exc:  # noqa: BLE001 - the batch is staged; a lifecycle rule can clean up
            log.warning("could not delete %s: %s", self.lake.uri_of(self.zip_name), exc)


class _LocalSink(_Sink):
    def __init__(self, base: str | os.PathLike, job_id: str):
        self.layout = LakeLayout(base)
        self.storage, self.job_id = LocalStorage(self.layout.base), job_id
        self.tmp = self.layout.pending_temp(job_id)
        self.batch, self.zip_name = self.tmp.relative_to(self.layout.base).as_posix(), ".source.zip"

    def schema(self) -> SchemaConfig:
        return load_schema(self.layout)

    def check_free(self) -> None:
        check_job_id_free(self.storage, self.job_id)
        try:
            self.tmp.mkdir()  # claims the name: a concurrent stager with the same job id fails here
        except FileExistsError:
            raise ValidationError(JOB_ID_USED.format(job_id=self.job_id)) from None

    def fetch(self, url: str, name: str, settings: TransferSettings, progress: bool) -> dict[str, Any]:
        return download(url, self.tmp / name, progress=progress)

    def put(self, name: str, src: BinaryIO, size: int, settings: TransferSettings) -> None:
        dest = self.tmp / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(dest, "xb") as out:
                shutil.copyfileobj(src, out, MiB)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise

    def publish(self) -> str:
        (self.tmp / self.zip_name).unlink(missing_ok=True)
        final = self.layout.pending_batch(self.job_id)
        os.rename(self.tmp, final)
        return str(final)

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def download(url: str, dest: Path, progress: bool = False, timeout: float = 60) -> dict[str, Any]:
    """Stream ``url`` into ``dest`` 1 MiB at a time; return its bytes and sha256 (``TransferError`` on failure)."""
    try:
        resp = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - http(s) URLs from the caller
    except urllib.error.HTTPError as exc:
        raise TransferError(f"GET {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise TransferError(f"GET {url} failed: {exc}") from exc
    digest, nbytes = hashlib.sha256(), 0
    length = resp.headers.get("Content-Length")
    size = int(length) if length and length.isdigit() else None
    try:
        with (
            resp,
            open(dest, "wb") as out,
            tqdm(total=size, unit="B", unit_scale=True, disable=not progress, leave=False, desc=dest.name) as bar,
        ):
            while chunk := resp.read(MiB):
                digest.update(chunk)
                out.write(chunk)
                nbytes += len(chunk)
                bar.update(len(chunk))
    except (OSError, http.client.HTTPException) as exc:
        raise TransferError(f"reading {url} failed after {nbytes} bytes: {exc}") from exc
    if size is not None and nbytes != size:
        raise TransferError(f"{url} ended after {nbytes} of {size} bytes (Content-Length)")
    return {"bytes": nbytes, "sha256": digest.hexdigest()}

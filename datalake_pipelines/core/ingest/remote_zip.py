"""The image members of a zip staged from a URL: which are safe to extract, and streaming them into the batch.

Members are read from the zip where it was fetched (the sink's ``zip_name``: range reads on S3), one zip reader
per thread; a member with an absolute path, ``..``, a clash with another member's path, encryption or an
unreadable body is refused and reported, one that is not an image is skipped. Memory stays near
part_size x workers.
"""

from __future__ import annotations

import threading
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from ..errors import ValidationError
from ..lake.layout import BATCH_DATA, BATCH_FILES_DIR
from ..storage.transfer import TransferSettings
from .batch_sinks import BatchSink
from .file_accounting import IMAGE_EXTENSIONS
from .manifest import BatchManifest

MAX_LISTED = 100  # skipped member names kept in source.json (all are counted)
CHUNK = 1000  # zip members in flight


def member_path(name: str) -> tuple[str | None, str | None]:
    """``(relative path, None)`` for a safe member name, ``(None, reason)`` for a hostile one."""
    raw = name.replace("\\", "/")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        return None, "absolute path"
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None, "path contains '..'"
    return ("/".join(parts), None) if parts else (None, "empty name")


def plan_members(url: str, infos: list[zipfile.ZipInfo], max_bytes: int):
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


def unpack_zip(
    url: str,
    sink: BatchSink,
    manifest: BatchManifest,
    settings: TransferSettings,
    max_bytes: int,
    workers: int,
    progress: bool,
) -> tuple[int, dict[str, Any]]:
    """Copy the zip's image members into ``files/``, write ``data.parquet``; return (rows, report)."""
    try:
        with sink.open(sink.zip_name) as raw, zipfile.ZipFile(raw) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, pa.ArrowException) as exc:
        raise ValidationError(f"{url}: not a readable zip file ({exc}); nothing was staged") from None
    accepted, refused, skipped = plan_members(url, infos, max_bytes)
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

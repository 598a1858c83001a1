"""Quarantine of rejected rows: kept with their files as a re-submittable batch in ``failed/<job_id>-rejected``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..lake.layout import BATCH_DATA, BATCH_MANIFEST, ERROR_FILE, LakeLayout
from ..storage.files import UnsafePathError, safe_join, utc_now_iso, write_json_atomic
from .asset_store import sha256_file
from .manifest import BatchManifest


def quarantine_rows(
    layout: LakeLayout, batch_dir: Path, manifest: BatchManifest, rejected: list[pa.Table], result: Any
) -> Path:
    """Write the rejected rows (``rejected`` tables of the batch's data) and their files to
    ``staging/failed/<job_id>-rejected/`` (a valid batch to fix and move back to pending); return that folder.
    ``result`` is the batch's ``BatchResult`` (its ``rejected`` reasons go to ``error.json``).

    When an earlier quarantine already holds the same rejected rows and files for the same partition (its
    ``error.json`` ``fingerprint``: SHA-256 of partition, row values and file bytes), no new copy is made and
    that folder is returned, so re-uploading a folder with bad files does not pile up identical quarantines.
    """
    target = layout.rejected_batch(manifest.job_id)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    table = pa.concat_tables(rejected)
    files = []
    for col in manifest.image_columns + manifest.file_columns:
        for value in table.column(col).to_pylist():
            if not value:
                continue
            if "\\" in value and not (batch_dir / value).is_file():  # imgs\a.png, resolved as imgs/a.png
                value = value.replace("\\", "/")
            try:
                source = safe_join(batch_dir, value)
            except UnsafePathError:
                continue
            if source.is_file():
                dest = tmp / value
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)
                files.append({"path": value, "size": dest.stat().st_size})
    if not manifest.hand_drop or (batch_dir / BATCH_DATA).exists():
        pq.write_table(table, tmp / BATCH_DATA)
    doc = manifest.to_json()
    doc.update(job_id=f"{manifest.job_id}-rejected", row_count=table.num_rows, files=files)
    if manifest.hand_drop:
        doc = {k: doc[k] for k in ("provider", "dataset", "task", "variant", "meta", "description")}
    write_json_atomic(tmp / BATCH_MANIFEST, doc)
    write_json_atomic(
        tmp / ERROR_FILE,
        {
            "job_id": manifest.job_id,
            "error": f"{result.rows_rejected} rows were rejected and quarantined; the rest was ingested",
            "rejected": result.rejected,
            "failed_at": utc_now_iso(),
        },
    )
    fingerprint = _fingerprint(manifest, table, tmp, files)
    same = _same_quarantine(layout, fingerprint)
    if same is not None:  # a re-upload of the same bad rows and files: the existing quarantine holds them
        shutil.rmtree(tmp, ignore_errors=True)
        return same
    error = json.loads((tmp / ERROR_FILE).read_text())
    write_json_atomic(tmp / ERROR_FILE, {**error, "fingerprint": fingerprint})
    shutil.rmtree(target, ignore_errors=True)
    os.rename(tmp, target)
    return target


def _fingerprint(manifest: BatchManifest, table: pa.Table, folder: Path, files: list[dict[str, Any]]) -> str:
    """SHA-256 of the partition, the rejected rows (their values as JSON) and the bytes of their files."""
    digest = hashlib.sha256(manifest.partition.key.encode())
    digest.update(json.dumps(table.to_pylist(), sort_keys=True, default=repr).encode())
    for item in sorted(files, key=lambda f: f["path"]):
        digest.update(item["path"].encode("utf-8", "backslashreplace"))
        digest.update(sha256_file(folder / item["path"]).encode())
    return digest.hexdigest()


def _same_quarantine(layout: LakeLayout, fingerprint: str) -> Path | None:
    for error_file in sorted(layout.failed.glob(f"*-rejected/{ERROR_FILE}")):
        try:
            if json.loads(error_file.read_text()).get("fingerprint") == fingerprint:
                return error_file.parent
        except (OSError, ValueError, AttributeError):
            continue
    return None

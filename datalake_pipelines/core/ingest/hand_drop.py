"""A hand drop (a folder written by hand into ``staging/pending/<name>/`` with ``_metadata.json``): its image
columns, and every file of it that no catalog row takes, kept rather than deleted.

* **Image columns of a hand-dropped ``data.parquet``** follow the upload rules of :mod:`.image_columns`:
  ``image_columns`` in ``_metadata.json`` when given (exactly those columns), else resolved, relative to the
  batch folder. Processing then reads only regular files inside the batch: a value that is absolute, climbs
  out with ``..`` or goes through a symbolic link is rejected for its row (quarantined with its reason).
* **Nothing a user wrote is deleted.** When the batch is done, every file of the folder that no row
  references (unreferenced images, notes, hidden files and folders, FIFOs, symbolic links, files whose names
  are not valid UTF-8, user files named like the lake's control files) is moved, with its relative path, to
  ``staging/failed/<job_id>-unreferenced/files/``; ``error.json`` there and the batch's staging report
  (``kept``) list each with its reason. Symbolic links are moved as links (never followed). Only the lake's
  own control files are removed with the batch: ``_metadata.json``, the ``data.parquet`` that was ingested,
  and the claim marker ``.claim.json`` that the lake writes when it claims a batch (recognised by its
  ``job_id`` and ``run_key`` keys; a user's file of that name without them is kept, but one already
  present is overwritten when the Dagster sensor claims the batch, since the layout has one name for both).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..lake.layout import BATCH_DATA, BATCH_MANIFEST, ERROR_FILE, LakeLayout
from ..storage.files import utc_now_iso, write_json_atomic
from .file_accounting import CLAIM_MARKER, display_name, is_lake_claim_marker, is_utf8_name, walk_files
from .image_columns import is_string_like, resolve_image_columns

KEPT_FILES_DIR = "files"
LEFTOVER_DIR = "batch"  # the rest of the batch folder, when a file could not be moved out of it


def resolve_hand_drop_columns(data_path: Path, batch_dir: Path, named: list[str] | None) -> dict[str, Any]:
    """The image columns of a hand drop's ``data.parquet`` (``{"image_columns": {col: why}, "text_columns":
    {col: why}}``), by the upload rules, relative to ``batch_dir``. Only the string columns are read."""
    if named:
        return resolve_image_columns(pa.table({}), batch_dir, named).report()
    schema = pq.read_schema(data_path)
    table = pq.read_table(data_path, columns=[f.name for f in schema if is_string_like(f.type)])
    return resolve_image_columns(table, batch_dir).report()


def _lake_files(batch_dir: Path, with_data: bool) -> set[str]:
    owned = {BATCH_MANIFEST} | ({BATCH_DATA} if with_data else set())
    if is_lake_claim_marker(batch_dir / CLAIM_MARKER):
        owned.add(CLAIM_MARKER)
    return owned


def unreferenced_files(batch_dir: Path, referenced: set[str], with_data: bool) -> list[str]:
    """Relative paths of every entry under ``batch_dir`` that is not a folder (regular files, symlinks, FIFOs,
    ...) and neither in ``referenced`` nor one of the lake's own files; symlinked folders are not entered."""
    owned = _lake_files(batch_dir, with_data)
    found = [rel for rel, _ in walk_files(batch_dir) if rel not in referenced and not ("/" not in rel and rel in owned)]
    return sorted(found)


def _reason(rel: str, skipped: list[dict[str, Any]], batch_dir: Path) -> str:
    for item in skipped:
        path = str(item.get("path", ""))
        if path == display_name(rel) or (path.endswith("/") and display_name(rel).startswith(path)):
            return str(item.get("reason"))
    if not is_utf8_name(rel):
        return f"the file name is not valid UTF-8: {os.fsencode(rel)!r}"
    mode = os.lstat(batch_dir / rel).st_mode
    if stat.S_ISLNK(mode):
        return "symbolic link (kept as a link, never followed)"
    if not stat.S_ISREG(mode):
        return "not a regular file (FIFO, socket or device)"
    if any(part.startswith(".") for part in rel.split("/")):
        return "hidden file (not uploaded)"
    return "no row of the batch references the file"


def keep_unreferenced(
    layout: LakeLayout,
    batch_dir: Path,
    job_id: str,
    referenced: set[str],
    skipped: list[dict[str, Any]],
    with_data: bool,
) -> dict[str, Any] | None:
    """Move every unreferenced file of a done hand drop to ``staging/failed/<job_id>-unreferenced/files/`` and
    return ``{"folder", "files": [{"path", "reason"}]}`` (``None`` when there is none). ``os.rename`` moves a
    symbolic link or a FIFO as itself; nothing is read or followed."""
    rels = unreferenced_files(batch_dir, referenced, with_data)
    if not rels:
        return None
    target = layout.failed / f"{job_id}-unreferenced"
    if target.exists():
        target = target.with_name(f"{target.name}-{utc_now_iso().replace(':', '')}")
    kept = []
    stuck = []
    for rel in rels:
        reason = _reason(rel, skipped, batch_dir)
        dest = target / KEPT_FILES_DIR / rel
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.rename(batch_dir / rel, dest)
        except OSError as exc:
            stuck.append(rel)
            reason += f"; could not be moved ({exc.strerror or exc}): kept in {LEFTOVER_DIR}/ with the batch"
        kept.append({"path": display_name(rel), "reason": reason})
    if stuck:  # never delete what could not be moved: the whole rest of the batch folder is kept instead
        target.mkdir(parents=True, exist_ok=True)
        os.rename(batch_dir, target / LEFTOVER_DIR)
        batch_dir.mkdir()  # the caller discards an empty folder
    write_json_atomic(
        target / ERROR_FILE,
        {
            "job_id": job_id,
            "error": f"{len(kept)} file(s) of the hand drop were not ingested; they are kept in {KEPT_FILES_DIR}/",
            "kept": kept,
            "failed_at": utc_now_iso(),
        },
    )
    return {"folder": str(target), "files": kept}

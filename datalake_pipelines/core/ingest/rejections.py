"""A partition's rejection history: which files its batches rejected, why, and where they were quarantined.

The history is kept in the partition's ``_metadata.json`` under ``rejections``: one entry per batch that had
rejected rows, newest last. Being in that file it is

- written under the partition lock, next to the batch's own record (``record_batch_in_partition``);
- published with the partition on S3 (the work lake's ``_metadata.json`` is uploaded after the part);
- kept by a rebuild (compaction rewrites only ``row_count``, ``schema``, ``contract`` and ``compacted_at``).

An entry::

    {"job_id": "...", "run_id": "..." | None, "rejected_at": "<UTC ISO>", "rows": 1, "files_total": 1,
     "quarantine": "staging/failed/<job_id>-rejected",
     "files": [{"file": "/home/me/bad.jpg", "batch_file": "files/image/00000000.jpg", "row": 0,
                "column": "image", "reason": "image file is truncated: ..."}]}

``file`` is the name the uploader knows (the upload's ``source`` path, else the path in the batch, which is
also the path inside the quarantine folder: ``batch_file``). ``quarantine`` is lake-relative, so the same
entry holds on a folder and on S3 (:func:`quarantine_location` joins it to the lake's base).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..catalog.parts import read_partition_metadata
from ..lake.layout import LakeLayout, PartitionRef
from ..storage.files import utc_now_iso, write_json_atomic

HISTORY_KEY = "rejections"
MAX_BATCHES = 50  # entries kept per partition; the oldest go first (the file is read and rewritten per batch)
MAX_FILES = 50  # files listed per entry (``files_total`` stays exact; error.json in the quarantine lists all)


def rejected_file(problem: Mapping[str, Any]) -> dict[str, Any]:
    """One ``BatchResult.rejected`` item (``row``, ``column``, ``file``, ``reason``, optional ``source``) as a
    history/table row: ``file`` (the uploader's name), ``batch_file``, ``row``, ``column``, ``reason`` (whole)."""
    batch_file = problem.get("file")
    return {
        "file": problem.get("source") or batch_file or "",
        "batch_file": batch_file or "",
        "row": problem.get("row"),
        "column": problem.get("column") or "",
        "reason": str(problem.get("reason") or ""),
    }


def lake_relative(layout: LakeLayout, folder: str | Path) -> str:
    """``folder`` (inside ``layout``) as a lake-relative POSIX path; an outside folder is returned unchanged."""
    path = Path(folder)
    try:
        return path.resolve().relative_to(layout.base.resolve()).as_posix()
    except ValueError:
        return str(folder)


def quarantine_location(base: str, quarantine: str) -> str:
    """The quarantine folder as users reach it: ``<base>/<lake-relative path>`` (a folder path or ``s3://`` URI);
    an absolute path or URI is returned unchanged."""
    if not quarantine or "://" in quarantine or quarantine.startswith("/"):
        return quarantine
    return f"{base.rstrip('/')}/{quarantine}"


def record_rejections(
    layout: LakeLayout,
    ref: PartitionRef,
    job_id: str,
    rejected: Iterable[Mapping[str, Any]],
    quarantine: str | Path,
    run_info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Append (or replace: a batch processed again) the history entry of ``job_id`` in the partition's
    ``_metadata.json`` and return it. ``rejected`` are the batch's ``BatchResult.rejected`` items and
    ``quarantine`` the folder holding them (stored lake-relative); ``run_info``'s ``run_id`` is recorded. Call it
    with the partition locked: the file is read, updated and rewritten (atomically)."""
    files = [rejected_file(p) for p in rejected]
    entry = {
        "job_id": job_id,
        "run_id": (run_info or {}).get("run_id"),
        "rejected_at": utc_now_iso(),
        "rows": len({f["row"] for f in files}),
        "files_total": len(files),
        "quarantine": lake_relative(layout, quarantine),
        "files": files[:MAX_FILES],
    }
    doc = read_partition_metadata(layout, ref) or {**ref.as_dict(), "created_at": utc_now_iso()}
    history = [e for e in doc.get(HISTORY_KEY, []) if e.get("job_id") != job_id]
    doc[HISTORY_KEY] = (history + [entry])[-MAX_BATCHES:]
    write_json_atomic(layout.partition_metadata(ref), doc)
    return entry


def rejection_history(doc: Mapping[str, Any], base: str = "") -> list[dict[str, Any]]:
    """The history of a partition's ``_metadata.json`` document, one row per rejected file, newest batch first:
    ``rejected_at``, ``job_id``, ``file``, ``batch_file``, ``row``, ``column``, ``reason``, ``quarantine`` (joined
    to ``base`` when given). Empty for a partition that never rejected anything (or predates the history)."""
    rows = []
    for entry in reversed(doc.get(HISTORY_KEY, [])):
        where = quarantine_location(base, entry.get("quarantine", "")) if base else entry.get("quarantine", "")
        for item in entry.get("files", []):
            rows.append(
                {
                    "rejected_at": entry.get("rejected_at", ""),
                    "job_id": entry.get("job_id", ""),
                    **{k: item.get(k, "") for k in ("file", "batch_file", "row", "column", "reason")},
                    "quarantine": where,
                }
            )
    return rows


def history_totals(doc: Mapping[str, Any]) -> dict[str, int]:
    """``{"batches": n, "files": n}``: how many batches of the partition rejected files, and how many files."""
    history = doc.get(HISTORY_KEY, [])
    return {"batches": len(history), "files": sum(int(e.get("files_total", 0)) for e in history)}

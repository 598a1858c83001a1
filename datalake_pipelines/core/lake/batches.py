"""Where a batch is and what happened to it: pending, processing (queued/running), done or failed.

The entries (:func:`staged_entry`, :func:`record_entry`, :func:`failed_entry`) are built from the batch's
documents whatever holds them, so a local and an S3 lake (``s3.S3Lake.status``) answer with the same fields."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..storage.files import read_json
from .layout import BATCH_MANIFEST, ERROR_FILE, LakeLayout, PartitionRef
from .queue import read_claim

# Given a claim marker of a batch in processing/, the orchestrator's view: (state, run_id).
RunState = Callable[[dict[str, Any]], "tuple[str, str | None]"]


def _safe_json(path: Path) -> dict[str, Any]:
    try:
        doc = read_json(path)
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _partition_of(doc: dict[str, Any]) -> str | None:
    if doc.get("partition"):
        return doc["partition"]
    try:
        task = doc.get("task") or "raw"
        variant = doc.get("variant") or ("image" if task == "raw" else "default")
        return PartitionRef(doc["provider"], doc["dataset"], task, variant).key
    except (KeyError, TypeError, ValueError):
        return None


def staged_entry(job_id: str, state: str, manifest: dict[str, Any], path: str) -> dict[str, Any]:
    """The entry of a staged batch (pending, processing, failed) from its ``_metadata.json`` and its location."""
    return {
        "job_id": job_id,
        "state": state,
        "partition": _partition_of(manifest),
        "rows": manifest.get("row_count"),
        "path": path,
    }


def record_entry(job_id: str, record: dict[str, Any]) -> dict[str, Any]:
    """The entry of a processed batch from its job record (``path``: the catalog part, or where rows went)."""
    state = record.get("status") if record.get("status") in ("done", "failed") else "failed"
    return {
        "job_id": job_id,
        "state": state,
        "partition": record.get("partition"),
        "rows": record.get("rows_in"),
        "rows_added": record.get("rows_added"),
        "rows_duplicate": record.get("rows_duplicate"),
        "rows_rejected": record.get("rows_rejected"),
        "error": record.get("error"),
        "path": record.get("rejected_dir") or record.get("part_file"),
        "finished_at": record.get("finished_at"),
    }


def failed_entry(job_id: str, manifest: dict[str, Any], error: dict[str, Any], path: str) -> dict[str, Any]:
    """The entry of a batch in ``failed/`` without a job record, from its manifest and ``error.json``."""
    entry = staged_entry(job_id, "failed", manifest, path)
    entry["error"] = error.get("error") or "(no error.json)"
    entry["rows_rejected"] = len(error.get("rejected") or []) or None
    return entry


def _staged_entry(job_id: str, state: str, folder: Path) -> dict[str, Any]:
    return staged_entry(job_id, state, _safe_json(folder / BATCH_MANIFEST), str(folder))


def _failed_entry(job_id: str, folder: Path) -> dict[str, Any]:
    return failed_entry(job_id, _safe_json(folder / BATCH_MANIFEST), _safe_json(folder / ERROR_FILE), str(folder))


def _processing_entry(layout: LakeLayout, job_id: str, run_state: RunState | None) -> dict[str, Any]:
    entry = _staged_entry(job_id, "processing", layout.processing_batch(job_id))
    if run_state is not None:
        entry["state"], entry["run_id"] = run_state(read_claim(layout, job_id) or {"job_id": job_id})
    return entry


def batch_status(layout: LakeLayout, job_id: str, run_state: RunState | None = None) -> dict[str, Any] | None:
    """Where a batch is: pending / processing (queued or running with ``run_state``) / done / failed."""
    if layout.pending_batch(job_id).is_dir():
        return _staged_entry(job_id, "pending", layout.pending_batch(job_id))
    if layout.processing_batch(job_id).is_dir():
        return _processing_entry(layout, job_id, run_state)
    record_path = layout.job_record(job_id)
    if record_path.is_file():
        return record_entry(job_id, _safe_json(record_path))
    if layout.failed_batch(job_id).is_dir():
        return _failed_entry(job_id, layout.failed_batch(job_id))
    return None


def list_batches(layout: LakeLayout, run_state: RunState | None = None) -> list[dict[str, Any]]:
    """Every batch of the lake, one entry per job id (the most current place wins)."""
    entries: dict[str, dict[str, Any]] = {}

    def subdirs(folder: Path) -> list[Path]:
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))

    for folder in subdirs(layout.pending):
        entries[folder.name] = _staged_entry(folder.name, "pending", folder)
    for folder in subdirs(layout.processing):
        entries.setdefault(folder.name, _processing_entry(layout, folder.name, run_state))
    if layout.jobs_dir.is_dir():
        for path in sorted(layout.jobs_dir.glob("*.json")):
            entries.setdefault(path.stem, record_entry(path.stem, _safe_json(path)))
    for folder in subdirs(layout.failed):
        entries.setdefault(folder.name, _failed_entry(folder.name, folder))
    order = {"pending": 0, "queued": 1, "processing": 1, "running": 1, "done": 2, "failed": 3}
    return sorted(entries.values(), key=lambda e: (order.get(e["state"], 9), e["job_id"]))

"""The staging queue: which pending batches are ready, claiming them exactly once, claim markers, failing a batch.

A batch written by the client is complete the moment it appears in ``pending/`` (atomic rename).
A hand-dropped folder (copied with ``cp``/``rsync``) is ready only once its file count, sizes and
mtimes have not changed for ``quiet_seconds``; the caller keeps the observed signatures between scans.
Claiming is an atomic ``rename`` into ``processing/`` followed by a ``.claim.json`` marker naming the
run key, so a crash between claim and run launch is recovered by re-issuing the same run key.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ...settings import DEFAULT_GRACE_SECONDS, DEFAULT_QUIET_SECONDS  # noqa: F401 - one default, in settings
from ..errors import ValidationError
from ..ingest.manifest import load_manifest
from ..storage.files import read_json, utc_now, utc_now_iso, write_json_atomic
from .keys import LOCAL_CLAIM_MARKER
from .layout import BATCH_MANIFEST, ERROR_FILE, LakeLayout, PartitionRef

CLAIM_MARKER = LOCAL_CLAIM_MARKER
MAX_ATTEMPTS = 2  # a batch whose run died is tried once more (run key <job>.attempt2), then failed


@dataclass
class PendingBatch:
    job_id: str
    partition: PartitionRef | None
    hand_drop: bool
    signature: tuple[int, int, float] | None
    problem: str | None = None
    fatal: bool = False  # the manifest is readable but invalid: waiting will not fix it
    staged_at: str = ""  # the manifest's created_at (a hand drop's: its folder's mtime), UTC ISO 8601


def folder_signature(folder: Path) -> tuple[int, int, float]:
    """(file count, total bytes, newest mtime) of a folder tree, without following symlinks."""
    count = size = 0
    newest = 0.0
    for root, _dirs, files in os.walk(folder, followlinks=False):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            count += 1
            size += st.st_size
            newest = max(newest, st.st_mtime)
    return count, size, newest


def scan_pending(layout: LakeLayout) -> list[PendingBatch]:
    """Every batch folder in ``pending/`` (hidden temp folders excluded), with its partition or problem, in
    staging order: the manifest's ``created_at`` (a hand drop's folder mtime), then job id. Batches of one partition
    are processed in this order, so the partition's first batch (which fixes its schema contract) is the first
    one staged, whatever its job id."""
    batches = []
    with os.scandir(layout.pending) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            folder = Path(entry.path)
            fatal = False
            staged_at = ""
            try:
                manifest = load_manifest(folder, entry.name)
                partition, hand_drop, problem = manifest.partition, manifest.hand_drop, None
                staged_at = "" if hand_drop else str(manifest.created_at)
            except (ValidationError, ValueError) as exc:
                if not folder.is_dir():
                    continue  # claimed by a concurrent scan meanwhile
                partition, hand_drop, problem = None, True, str(exc)
                fatal = _manifest_parses(folder)
            try:
                staged_at = staged_at or _iso(folder.stat().st_mtime)
            except FileNotFoundError:
                continue
            signature = folder_signature(folder) if hand_drop else None
            batches.append(PendingBatch(entry.name, partition, hand_drop, signature, problem, fatal, staged_at))
    return sorted(batches, key=lambda b: (b.staged_at, b.job_id))


def _iso(timestamp: float) -> str:
    """``timestamp`` as the UTC ISO 8601 text of ``utc_now_iso`` (so the two sort together)."""
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="microseconds")


def _manifest_parses(folder: Path) -> bool:
    try:
        json.loads((folder / BATCH_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def is_quiet(
    batch: PendingBatch, seen: dict[str, Any], now: float, quiet_seconds: float = DEFAULT_QUIET_SECONDS
) -> bool:
    """True when a hand-drop's signature has been unchanged for ``quiet_seconds``; updates ``seen``.

    ``seen`` maps job id to ``[signature, first_seen_with_that_signature]`` and survives between scans.
    """
    if not batch.hand_drop:
        return True
    signature = list(batch.signature or ())
    previous = seen.get(batch.job_id)
    if previous is None or previous[0] != signature:
        seen[batch.job_id] = [signature, now]
        return quiet_seconds <= 0
    return now - previous[1] >= quiet_seconds


def claim(layout: LakeLayout, job_id: str, run_key: str, partition: PartitionRef) -> bool:
    """Move a pending batch to ``processing/`` and write its claim marker; False if already taken."""
    try:
        os.rename(layout.pending_batch(job_id), layout.processing_batch(job_id))
    except OSError:
        return False
    write_claim(layout, job_id, run_key, partition)
    return True


def write_claim(layout: LakeLayout, job_id: str, run_key: str, partition: PartitionRef, attempt: int = 1) -> None:
    marker = {
        "job_id": job_id,
        "run_key": run_key,
        "partition": partition.key,
        "claimed_at": utc_now_iso(),
        "claimed_ts": time.time(),
        "attempt": attempt,
    }
    write_json_atomic(layout.processing_batch(job_id) / CLAIM_MARKER, marker)


def read_claim(layout: LakeLayout, job_id: str) -> dict[str, Any] | None:
    path = layout.processing_batch(job_id) / CLAIM_MARKER
    try:
        return read_json(path)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def claimed_batches(layout: LakeLayout) -> list[dict[str, Any]]:
    """Claim markers of every batch in ``processing/``; a folder without a marker gets a synthetic one."""
    claims = []
    with os.scandir(layout.processing) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            marker = read_claim(layout, entry.name)
            if marker is None:
                marker = {"job_id": entry.name, "run_key": None, "partition": None, "claimed_ts": None}
            claims.append(marker)
    return claims


def requeue(layout: LakeLayout, job_id: str) -> bool:
    """Move a claimed batch back to ``pending/`` (after its run died) so it is claimed again."""
    (layout.processing_batch(job_id) / CLAIM_MARKER).unlink(missing_ok=True)
    try:
        os.rename(layout.processing_batch(job_id), layout.pending_batch(job_id))
    except OSError:
        return False
    return True


def manifest_present(folder: Path) -> bool:
    return (folder / BATCH_MANIFEST).is_file()


def mark_running(layout: LakeLayout, job_id: str, run_id: str, pid: int) -> None:
    """Record in the claim marker which run (and process) is working on the batch, for the reaper. Nothing for a
    batch no longer in ``processing/``: a step run again after its batches were done (a Celery task re-delivered)
    would otherwise re-create the folder with only the marker, and processing would fail a done batch."""
    if not layout.processing_batch(job_id).is_dir():
        return
    marker = read_claim(layout, job_id) or {"job_id": job_id}
    marker.update(run_id=run_id, pid=pid, host=os.uname().nodename, started_at=utc_now_iso())
    write_json_atomic(layout.processing_batch(job_id) / CLAIM_MARKER, marker)


def process_alive(pid: int | None, host: str | None) -> bool | None:
    """Whether a process on this host exists; ``None`` when it cannot be told (other host, no pid)."""
    if not pid or (host and host != os.uname().nodename):
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


ATTEMPT_FILE = ".attempt"


def attempt_of(folder: Path) -> int:
    try:
        return int((folder / ATTEMPT_FILE).read_text().strip() or 1)
    except (FileNotFoundError, ValueError):
        return 1


def run_key_for(job_id: str, attempt: int) -> str:
    return job_id if attempt <= 1 else f"{job_id}.attempt{attempt}"


def requeue_or_fail(layout: LakeLayout, job_id: str, reason: str, run_id: str | None) -> str:
    """After the run holding a batch died: back to ``pending/`` for another attempt, or to ``failed/``."""
    folder = layout.processing_batch(job_id)
    attempt = attempt_of(folder)
    if attempt < MAX_ATTEMPTS:
        (folder / ATTEMPT_FILE).write_text(str(attempt + 1))
        if requeue(layout, job_id):
            return "requeued"
    (folder / CLAIM_MARKER).unlink(missing_ok=True)
    fail_batch(layout, job_id, {"error": reason, "run_id": run_id, "attempts": attempt})
    return "failed"


def fail_batch(layout: LakeLayout, job_id: str, error: dict[str, Any]) -> Path:
    """Move a batch from ``processing/`` to ``failed/`` with ``error.json``; its files stay intact."""
    source = layout.processing_batch(job_id)
    target = layout.failed_batch(job_id)
    if target.exists():
        target = target.with_name(f"{job_id}-{utc_now():%Y%m%dT%H%M%S%f}")
    if source.exists():
        os.rename(source, target)
    else:
        target.mkdir(parents=True, exist_ok=True)
    write_json_atomic(target / ERROR_FILE, {"job_id": job_id, "failed_at": utc_now_iso(), **error})
    return target


def reject_pending(layout: LakeLayout, job_id: str, reason: str) -> Path | None:
    """Move an unusable pending batch straight to ``failed/`` with ``error.json``; None if it is gone."""
    target = layout.failed_batch(job_id)
    if target.exists():
        target = target.with_name(f"{job_id}-{int(time.time())}")
    try:
        os.rename(layout.pending_batch(job_id), target)
    except FileNotFoundError:  # claimed or removed by someone else meanwhile
        return None
    write_json_atomic(target / "error.json", {"job_id": job_id, "error": reason, "failed_at": utc_now_iso()})
    return target


def discard_batch(batch_dir: Path) -> None:
    """Remove a processed batch: an instant rename to a hidden name, the deletion in the background."""
    done = batch_dir.with_name(f".done-{batch_dir.name}-{uuid.uuid4().hex[:6]}")
    os.rename(batch_dir, done)
    threading.Thread(target=shutil.rmtree, args=(done,), kwargs={"ignore_errors": True}).start()


def purge_discarded(layout: LakeLayout) -> None:
    """Delete processed batches whose background deletion was interrupted (process killed)."""
    for path in layout.processing.glob(".done-*"):
        shutil.rmtree(path, ignore_errors=True)

"""``datalake gc``: mark-and-sweep of the content-addressed assets, on either backend.

Mark: every asset path referenced by a row of the catalog, by a retained catalog file of a deletion still within
the retention (:mod:`.retained`), or by a ``create_data_file`` index entry (:func:`.refs.lake_references`).
Sweep: every object under ``assets/`` not marked and older than the grace period (``--grace``, default 24 h,
counted from the object's creation: mtime locally, ``LastModified`` on S3), so an asset a run in flight has just
stored is never taken. An asset shared by two datasets is referenced by rows of both and is never collected while
either references it. Before the mark, the retained files of deletions older than ``--retention`` are purged.

Order (safe to interrupt anywhere, safe to run again): the hash-index entries of every collected asset are removed
first, then the assets, in batches of at most 1000 (one ``DeleteObjects`` call each on S3). Interrupted after the
index step, the assets are left unreferenced and unindexed: the next GC sweeps them (they are still old and
unmarked), and meanwhile an ingest of the same content finds no entry and stores it again. The other order could
leave an index entry naming a deleted asset, which a later ingest would dedup against.

A run in flight could dedup against an old unreferenced asset between the mark and the sweep, so GC refuses to
start while any batch is claimed, and stops before its next batch of deletions once one is (the rest is left for
the next GC). ``create_data_file`` claims nothing: a data file deduplicated against an ingested asset is an
ingested asset (only entries it created itself are roots).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ...settings import load as load_settings
from ..errors import DatalakeError
from ..lake import keys
from ..lake.locks import exclusive_lock
from . import as_of, refs, retained
from .delete import finish_open, mark_purged, open_deletions

DEFAULT_GRACE_SECONDS = 24 * 3600.0
DELETE_BATCH = 1000  # S3 DeleteObjects takes at most 1000 keys
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class LakeBusy(DatalakeError):
    """A run is in flight (a batch is claimed): GC waits until none is."""


def parse_duration(text: str | float | int) -> float:
    """``"24h"``, ``"7d"``, ``"30m"``, ``"90s"``, ``"2w"`` or a number of seconds -> seconds (ValueError otherwise)."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(text).lower())
        if not match:
            raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 24h, 7d, 2w or 0)")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {text!r}")
    return seconds


def _claimed(lake) -> list[str]:
    return [c.job_id for c in lake.claims() if not (c.run_key or "").endswith(".rejected")]


def collect_garbage(
    lake,
    dry_run: bool = False,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    retention_seconds: float = retained.DEFAULT_RETENTION_SECONDS,
    batch: int = DELETE_BATCH,
    log: Any = None,
) -> dict[str, Any]:
    """Collect the unreferenced assets of ``lake`` (see the module); with ``dry_run`` only count them.

    Returns ``{"dry_run", "grace_seconds", "retention_seconds", "assets", "referenced", "within_grace",
    "collected", "bytes", "index_entries_removed", "retained_purged" (deletion ids), "retained_bytes",
    "stopped" (why the sweep stopped early, or None), "gc_id", "who", "started_at", "seconds"}`` (and "warehouse",
    the refresh of ``catalog.duckdb``, when index entries were removed); ``collected`` and
    ``bytes`` count the assets removed (a dry run: that would be). Raises :class:`LakeBusy` (nothing changed) while
    a batch is claimed, ValueError for a negative duration or a batch size outside 1..1000 (S3 DeleteObjects
    takes at most 1000 keys per request)."""
    log = log or logging.getLogger("datalake")
    if grace_seconds < 0 or retention_seconds < 0 or not 1 <= batch <= DELETE_BATCH:
        raise ValueError(
            f"grace and retention must be >= 0 and the batch size within 1..{DELETE_BATCH} (S3 DeleteObjects takes "
            f"at most {DELETE_BATCH} keys per request), got batch size {batch}"
        )
    busy = _claimed(lake)
    if busy and not dry_run:
        raise LakeBusy(
            f"GC waits while a run is in flight: batch {busy[0]} is claimed ({len(busy)} in all); retry later"
        )
    started, now = time.monotonic(), time.time()
    stamp = datetime.now(timezone.utc)
    gc_id = f"gc-{stamp:%Y%m%dT%H%M%S%f}"
    storage = lake.storage
    finished = [] if dry_run else finish_open(lake)  # a deletion killed midway: its record completed before a purge
    still_open = set(open_deletions(lake))  # never purge what an unfinished deletion retained (a dry run)
    expired = [r for r in retained.expired(storage, retention_seconds, now) if r.deletion_id not in still_open]
    if not dry_run:
        for old in expired:
            as_of.raise_horizon(storage, old.deleted_ts, retention_seconds)  # first: as_of refuses, never misses
            mark_purged(lake, old.deletion_id, stamp.isoformat(timespec="seconds"))
            retained.purge(storage, old)
    skip = {k for old in expired for k in old.keys} if dry_run else set()
    marked = refs.lake_references(lake, skip=skip)
    report: dict[str, Any] = {
        "dry_run": dry_run,
        "grace_seconds": grace_seconds,
        "retention_seconds": retention_seconds,
        "assets": 0,
        "referenced": 0,
        "within_grace": 0,
        "collected": 0,
        "bytes": 0,
        "index_entries_removed": 0,
        "retained_purged": [r.deletion_id for r in expired],
        "deletions_finished": finished,
        "retained_bytes": sum(r.bytes for r in expired),
        "stopped": None,
    }
    garbage = []
    for obj in storage.list(keys.ASSETS):
        report["assets"] += 1
        if obj.key in marked:
            report["referenced"] += 1
        elif now - obj.modified.timestamp() < grace_seconds:
            report["within_grace"] += 1
        elif not obj.key.rsplit("/", 1)[-1].startswith("."):  # a temporary file of a store in progress
            garbage.append(obj)
    paths = {o.key for o in garbage}
    if dry_run:
        report["collected"], report["bytes"] = len(garbage), sum(o.size for o in garbage)
        with lake.hash_index() as index:
            report["index_entries_removed"] = _indexed(index, paths)
    else:
        # the index entries first: see the module for why this order is safe to interrupt
        report["index_entries_removed"] = lake.forget_assets(paths) if paths else 0
        pause = load_settings().gc_sweep_pause
        for start in range(0, len(garbage), batch):
            if start and _claimed(lake):
                report["stopped"] = "a run started: the rest is left for the next GC"
                log.warning(f"gc: {report['stopped']}")
                break
            chunk = garbage[start : start + batch]
            storage.delete([o.key for o in chunk])
            report["collected"] += len(chunk)
            report["bytes"] += sum(o.size for o in chunk)
            if pause:
                time.sleep(pause)
        _remove_empty_shards(storage, [o.key for o in garbage[: report["collected"]]])
        if report["index_entries_removed"]:  # catalog.duckdb's hash_index table mirrors the index: no stale entry
            with exclusive_lock(lake.warehouse_lock):
                report["warehouse"] = lake.refresh_warehouse()
    report.update(
        gc_id=None if dry_run else gc_id,
        who=refs.who(),
        started_at=stamp.isoformat(timespec="seconds"),
        seconds=round(time.monotonic() - started, 3),
    )
    if not dry_run:
        doc = json.dumps({"action": "gc", **report}, indent=2, default=str).encode()
        storage.write_bytes(keys.lifecycle_record(gc_id), doc)
    return report


def _indexed(index, paths: set[str]) -> int:
    if index is None or not paths:
        return 0
    return sum(1 for rows in index.iter_rows() for row in rows if row[2] in paths)


def _remove_empty_shards(storage, removed: list[str]) -> None:
    """On a local lake, the shard folders (``ab/cd``) and dataset folders a sweep emptied; S3 has no folders."""
    if storage.kind != "local":
        return
    root = Path(storage.uri)
    folders = {str(Path(k).parent) for k in removed}
    for folder in sorted(folders | {str(Path(f).parent) for f in folders}, key=len, reverse=True):
        with contextlib.suppress(OSError):  # not empty: other assets live there
            os.rmdir(root / folder)

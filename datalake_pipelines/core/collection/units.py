"""Data units of a collection: the files of one sample, the problems found in them, the report of a folder.

:func:`~.organize.organize` builds them from a folder; :func:`format_table` prints a report (also an upload's).
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .config import Collection
from .reading import split_ext

ERRORS = ("missing_required", "duplicate", "invalid_json", "unreadable", "vanished", "upload_failed")
WARNINGS = ("unmatched",)


@dataclass(slots=True)
class UnitFile:
    path: str
    rel: str
    size: int = 0
    mtime: float | None = None


@dataclass(slots=True)
class DataUnit:
    """One sample: spec name -> file, JSON texts read during validation, problems found."""

    key: str
    files: dict[str, UnitFile] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    problems: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, list[UnitFile]] = field(default_factory=dict)
    batch_id: str | None = None

    @property
    def complete(self) -> bool:
        return not any(p["kind"] in ERRORS for p in self.problems)

    @property
    def meta(self) -> dict[str, Any]:
        first = next(iter(self.files.values()), None)
        mtimes = [f.mtime for f in self.files.values() if f.mtime is not None]
        if not mtimes and first is not None:
            try:
                mtimes = [os.stat(first.path).st_mtime]
            except OSError:
                mtimes = []
        created = datetime.fromtimestamp(max(mtimes), timezone.utc).isoformat() if mtimes else None
        return {
            "origin_file_stem": self.key,
            "origin_file_extension": split_ext(first.rel)[1] if first else "",
            "file_size": sum(f.size for f in self.files.values()),
            "created_at": created,
            "batch_id": self.batch_id,
        }

    def organized_file(self) -> dict[str, Any]:
        """The reference client's organized-file shape: ``{"files": {spec: Path}, "meta": {...}}``."""
        return {"files": {name: Path(f.path) for name, f in self.files.items()}, "meta": self.meta}

    def add_problem(self, kind: str, detail: str, spec: str | None = None, files: list[str] | None = None) -> None:
        self.problems.append({"kind": kind, "spec": spec, "files": files or [], "detail": detail})

    def to_report(self) -> dict[str, Any]:
        return {
            "unit": self.key,
            "status": "complete" if self.complete else "incomplete",
            "files": {name: f.rel for name, f in self.files.items()},
            "problems": list(self.problems),
        }


@dataclass
class Organized:
    """The units found in ``folder`` for ``collection``, validated."""

    folder: Path
    collection: Collection
    group_by: str
    units: list[DataUnit]
    unmatched_files: list[str]
    files_seen: int

    @property
    def complete_units(self) -> list[DataUnit]:
        return [u for u in self.units if u.complete]

    @property
    def bad_units(self) -> list[DataUnit]:
        return [u for u in self.units if u.problems]

    def report(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for unit in self.units:
            for p in unit.problems:
                counts[p["kind"]] = counts.get(p["kind"], 0) + 1
        complete = sum(1 for u in self.units if u.complete)
        return {
            "collection": self.collection.name,
            "folder": str(self.folder),
            "group_by": self.group_by,
            "summary": {
                "files": self.files_seen,
                "units": len(self.units),
                "complete": complete,
                "incomplete": len(self.units) - complete,
                "unmatched_files": len(self.unmatched_files),
                "problems": counts,
            },
            "units": [u.to_report() for u in self.units],
            "unmatched_files": list(self.unmatched_files),
        }


# report --------------------------------------------------------------------------------------------------
def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _width(text))


# Why a unit without a problem of its own was not staged, by its upload status.
NOT_STAGED_BECAUSE = {
    "refused": "not staged: strict mode refused the whole upload (other units or files have problems)",
    "not_uploaded": "not staged: the upload stopped before this unit",
}


def format_table(report: dict[str, Any], limit: int = 50) -> str:
    """A printable table of the units that have problems (or were not staged), then a summary.

    Every row's problems column says something: a unit refused or left out without a problem of its own says
    why (:data:`NOT_STAGED_BECAUSE`). The error that stopped an upload (``report["upload"]["error"]``) is not
    repeated here: it is the message of the :class:`~.upload.UploadError` the caller shows."""
    rows = []
    for unit in report["units"]:
        status = unit.get("upload") or unit["status"]
        if not unit["problems"] and status in ("complete", "uploaded", "skipped"):
            continue
        details = "; ".join(
            f"{p['kind']}{'[' + p['spec'] + ']' if p.get('spec') else ''}: {p['detail']}"
            + (f" ({', '.join(p['files'])})" if p.get("files") else "")
            for p in unit["problems"]
        )
        rows.append((unit["unit"], status, details or NOT_STAGED_BECAUSE.get(status, status)))
    lines = []
    if rows:
        header = ("unit", "status", "problems")
        widths = [min(40, max(_width(r[i]) for r in [header, *rows])) for i in range(2)]
        lines.append(f"{_pad(header[0], widths[0])}  {_pad(header[1], widths[1])}  {header[2]}")
        lines.append(f"{'-' * widths[0]}  {'-' * widths[1]}  {'-' * 8}")
        for unit, status, details in rows[:limit]:
            lines.append(f"{_pad(unit, widths[0])}  {_pad(status, widths[1])}  {details}")
        if len(rows) > limit:
            lines.append(f"... and {len(rows) - limit} more (see the JSON report)")
    for rel in report["unmatched_files"][:limit]:
        lines.append(f"unmatched file (no unit): {rel}")
    s = report["summary"]
    summary = (
        f"{s['units']} units in {s['files']} files: {s['complete']} complete, {s['incomplete']} incomplete, "
        f"{s['unmatched_files']} unmatched files"
    )
    if s.get("problems"):
        summary += " | " + ", ".join(f"{k}={v}" for k, v in sorted(s["problems"].items()))
    if "upload" in report:
        u = report["upload"]
        summary += (
            f"\nupload ({u['mode']}, {u['status']}): {u['uploaded']} units staged in {len(u['batches'])} batches, "
            f"{u['skipped']} skipped (already in the lake), {u['failed']} failed, {u['not_uploaded']} not uploaded"
        )
    lines.append(summary)
    return "\n".join(lines)

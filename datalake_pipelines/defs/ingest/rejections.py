"""Rejected files of ``catalog_partition`` as the UI shows them: WARNING log lines, metadata tables, a WARN check.

A run's own rejections come from its ``BatchResult``s; the partition's history (every batch that ever rejected
a file, kept in its ``_metadata.json``: ``core/ingest/rejections.py``) is shown by every materialization, a
rebuild's included, so a rebuild does not hide an earlier rejection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from ...core.ingest.processing import BatchResult
from ...core.ingest.rejections import history_totals, rejected_file, rejection_history

CHECK_NAME = "no_rejected_files"
MAX_LOGGED = 1000  # WARNING lines per run; past that one line says how many more (error.json lists them all)
MAX_TABLE_ROWS = 200  # rows of each table (the UI downloads recent events' metadata on every asset page load)

_COLUMNS = {
    "rejected_at": ("string", "When the batch was processed (UTC)."),
    "job_id": ("string", "The batch (staging job id) the file came in."),
    "file": ("string", "The file as its uploader named it (the upload's source path), else its path in the batch."),
    "row": ("int", "Row number in the batch (0-based)."),
    "column": ("string", "The file column of the row that named the file."),
    "reason": ("string", "Why the file was refused, in full."),
    "quarantine": ("string", "Folder keeping the rejected rows and files: a batch to fix and move back to pending."),
    "batch_file": ("string", "The file's path inside the batch, and so inside the quarantine folder."),
}
RUN_COLUMNS = ["file", "row", "column", "reason", "quarantine", "job_id", "batch_file"]
HISTORY_COLUMNS = ["rejected_at", "file", "row", "column", "reason", "quarantine", "job_id", "batch_file"]


def _schema(columns: Sequence[str]) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(c, _COLUMNS[c][0], description=_COLUMNS[c][1]) for c in columns],
    )


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> dg.TableMetadataValue:
    records = [
        dg.TableRecord({c: (r.get(c) if c == "row" else str(r.get(c) or "")) for c in columns})
        for r in rows[:MAX_TABLE_ROWS]
    ]
    return dg.MetadataValue.table(records=records, schema=_schema(columns))


def run_rejections(results: Sequence[BatchResult]) -> list[dict[str, Any]]:
    """Every file the run's batches rejected: ``file``, ``row``, ``column``, ``reason``, ``quarantine`` (the folder
    holding it: the batch's ``-rejected`` quarantine, or ``staging/failed/<job>`` for a failed batch),
    ``job_id``, ``batch_file``."""
    return [
        {**rejected_file(problem), "quarantine": r.rejected_dir or "", "job_id": r.job_id}
        for r in results
        for problem in r.rejected
    ]


def log_rejections(log: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """One WARNING per rejected file naming the file, the column, the whole reason and the quarantine folder."""
    for row in rows[:MAX_LOGGED]:
        log.warning(
            f"rejected file {row['file']} (batch {row['job_id']}, row {row['row']}, column {row['column']!r}): "
            f"{row['reason']}; quarantined in {row['quarantine']}"
        )
    if len(rows) > MAX_LOGGED:
        log.warning(f"{len(rows) - MAX_LOGGED} more rejected files: see error.json in each quarantine folder")


def rejection_metadata(rows: Sequence[Mapping[str, Any]], doc: Mapping[str, Any], base: str) -> dict[str, Any]:
    """Metadata entries: ``rejected_files`` (this run's, a table, empty when none), ``rejection_history`` (every
    rejection the partition's ``_metadata.json`` ``doc`` recorded, newest first) and their counts. ``base`` is
    the lake's path or ``s3://`` URI, to which the history's lake-relative quarantine folders are joined."""
    totals = history_totals(doc)
    return {
        "files_rejected": len(rows),
        "rejected_files": _table(rows, RUN_COLUMNS),
        "rejection_history": _table(rejection_history(doc, base), HISTORY_COLUMNS),
        "history_batches_with_rejections": totals["batches"],
        "history_files_rejected": totals["files"],
    }


def rejection_check(rows: Sequence[Mapping[str, Any]], doc: Mapping[str, Any]) -> dg.AssetCheckResult:
    """The ``no_rejected_files`` check (severity WARN): fails when this run rejected any file, so the partition
    shows a warning instead of plain green; the rows that were kept are in the catalog all the same."""
    totals = history_totals(doc)
    files = sorted({str(r["file"]) for r in rows})
    history = f"; the partition's history holds {totals['files']} rejected file(s) in {totals['batches']} batch(es)"
    if rows:
        shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
        description = f"{len(rows)} file(s) rejected by this run: {shown} (see rejected_files){history}"
    else:
        description = "no file rejected by this run" + (history if totals["files"] else "")
    return dg.AssetCheckResult(
        check_name=CHECK_NAME,
        passed=not rows,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "files_rejected": len(rows),
            "files": dg.MetadataValue.json(files[:100]),
            "quarantines": dg.MetadataValue.json(sorted({str(r["quarantine"]) for r in rows})),
            "history_files_rejected": totals["files"],
        },
    )

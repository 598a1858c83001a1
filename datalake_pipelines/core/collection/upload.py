"""Uploading a folder as data units of a collection: organized, validated, staged in batches, reported.

:func:`upload_collection` organizes the folder (:mod:`.organize`), uploads each complete unit
(:func:`~.data_units.upload_data_file`, retrying transient errors) and stages them batch by batch
(:func:`~.data_units.create_data_units`). A unit whose file vanishes or cannot be read fails alone; a batch
that cannot be staged stops the upload but the batches already in ``staging/pending`` stay. Units whose
catalog row (same ``row_hash`` the processing computes, see ``row_identity``) is already in the partition,
with every file in the hash index, are skipped.
"""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ...settings import load as load_settings
from ..errors import DatalakeError
from ..lake.layout import LakeLayout, PartitionRef
from ..lake.schema import load_schema
from ..storage.files import utc_now, write_json_atomic
from .backend import CollectionLake, LocalCollectionLake
from .config import Collection, find_collection, validate_against_schema
from .data_units import UnitFailed, create_data_units, upload_data_file, upload_scratch
from .file_copy import CopyProgress, RetryPolicy
from .organize import organize
from .units import DataUnit, Organized


class UploadError(DatalakeError):
    """The upload stopped (or was refused); ``report`` says what was staged and what was not."""

    def __init__(self, message: str, report: dict[str, Any] | None = None):
        super().__init__(message)
        self.report = report or {}


def upload_collection(
    layout: LakeLayout,
    folder: str | os.PathLike,
    collection: Collection | str,
    strict: bool = False,
    batch_size: int = 1000,
    progress: bool = True,
    retries: int = 4,
    group_by: str = "stem",
    pattern: str | None = None,
    num_proc: int | None = None,
    report_path: str | os.PathLike | None = None,
    policy: RetryPolicy | None = None,
    lake: CollectionLake | None = None,
) -> dict[str, Any]:
    """Organize ``folder`` into units, validate them and stage complete units in batches; return the report.

    Strict mode refuses the whole upload (:class:`UploadError`, nothing staged) if any unit has a problem or a
    file matches no spec; lenient mode uploads complete units and reports the rest. The report (also written
    as JSON to ``report_path`` or ``logs/collections/``) lists every unit with its upload status. ``lake``
    (default: ``layout`` itself) says where batches and dedup facts live (an S3 lake: :mod:`.backend`).
    """
    started = time.perf_counter()
    num_proc = num_proc or load_settings().num_proc  # default: $DATALAKE_NUM_PROC or the CPU count
    if not isinstance(collection, Collection):
        collection = find_collection(layout, collection)
    validate_against_schema(collection, load_schema(layout))
    policy = policy or RetryPolicy(attempts=max(1, retries))
    organized = organize(folder, collection, group_by, pattern, skip=[layout.base])
    state = _UploadState(organized, strict)
    target = (
        Path(report_path)
        if report_path
        else layout.logs_dir / "collections" / (f"{collection.name}-{utc_now():%Y%m%dT%H%M%S%f}.json")
    )
    try:
        if strict and (organized.bad_units or organized.unmatched_files):
            state.refuse()
            raise UploadError(
                f"strict mode: upload refused, {len(organized.bad_units)} units have problems and "
                f"{len(organized.unmatched_files)} files match no unit (nothing was staged)"
            )
        lake = lake or LocalCollectionLake(layout)
        _upload_units(layout, collection, organized, state, batch_size, progress, num_proc, policy, lake)
    except UploadError as exc:
        state.error = str(exc)
        exc.report = state.finish(target, started)
        raise
    except Exception as exc:  # noqa: BLE001 - the report must say how far the upload got
        state.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, DatalakeError) else str(exc)
        raise UploadError(f"upload stopped: {state.error}", state.finish(target, started)) from exc
    return state.finish(target, started)


class _UploadState:
    """Upload status per unit, and the report built from it."""

    def __init__(self, organized: Organized, strict: bool):
        self.organized = organized
        self.strict = strict
        self.status: dict[str, dict[str, Any]] = {
            u.key: {"upload": "pending" if u.complete else "not_uploaded"} for u in organized.units
        }
        self.batches: list[dict[str, Any]] = []
        self.bytes = 0
        self.error: str | None = None

    def refuse(self) -> None:
        for entry in self.status.values():
            entry["upload"] = "refused"

    def finish(self, target: Path, started: float) -> dict[str, Any]:
        report = self.organized.report()
        for unit in report["units"]:
            st = self.status[unit["unit"]]
            unit.update({k: v for k, v in st.items() if k != "upload"})
            unit["upload"] = "not_uploaded" if st["upload"] == "pending" else st["upload"]
        counts = {k: 0 for k in ("uploaded", "skipped", "failed", "not_uploaded", "refused")}
        for unit in report["units"]:
            counts[unit["upload"]] = counts.get(unit["upload"], 0) + 1
        report["upload"] = {
            "mode": "strict" if self.strict else "lenient",
            "status": "refused" if counts["refused"] else "failed" if self.error else "done",
            **counts,
            "bytes": self.bytes,
            "batches": self.batches,
            "error": self.error,
            "seconds": round(time.perf_counter() - started, 3),
        }
        report["report_path"] = str(target)
        write_json_atomic(target, report)
        return report


def _upload_units(
    layout: LakeLayout,
    collection: Collection,
    organized: Organized,
    state: _UploadState,
    batch_size: int,
    progress: bool,
    num_proc: int,
    policy: RetryPolicy,
    lake: CollectionLake,
) -> None:
    units = organized.complete_units
    partition = PartitionRef(collection.provider, collection.dataset, collection.task, collection.variant)
    known_rows = lake.known_rows(partition)
    index = lake.hash_index()
    scratch = upload_scratch(layout)
    n_files = sum(len(u.files) - len(u.texts) for u in units)
    n_bytes = sum(f.size for u in units for name, f in u.files.items() if name not in u.texts)
    bar = CopyProgress(n_bytes, n_files, f"upload {collection.name}", progress)
    try:
        with ThreadPoolExecutor(max(1, num_proc)) as pool:
            for start in range(0, len(units), max(1, batch_size)):
                chunk = units[start : start + batch_size]

                def one(unit: DataUnit) -> dict[str, Any] | UnitFailed:
                    organized_file = {**unit.organized_file(), "texts": unit.texts}
                    try:
                        return upload_data_file(
                            layout, organized_file, collection, scratch, policy, bar, known_rows, index
                        )
                    except UnitFailed as exc:
                        return exc

                ready = []
                for unit, outcome in zip(chunk, pool.map(one, chunk)):
                    st = state.status[unit.key]
                    if isinstance(outcome, UnitFailed):
                        unit.add_problem(outcome.kind, outcome.detail, outcome.spec, [outcome.file or ""])
                        st["upload"] = "failed"
                    elif outcome["skipped"]:
                        st.update(upload="skipped", row_hash=outcome["row_hash"])
                    else:
                        ready.append(outcome)
                if state.strict and any(state.status[u.key]["upload"] == "failed" for u in chunk):
                    raise UploadError("strict mode: a unit failed during the upload; this batch was not staged")
                if ready:
                    data_units = create_data_units(
                        layout,
                        ready,
                        collection,
                        num_proc=num_proc,
                        batch_size=batch_size,
                        source_folder=str(organized.folder.resolve()),
                    )
                    job_id = data_units[0]["job_id"]
                    for du in data_units:
                        state.status[du["unit"]].update(upload="uploaded", batch_id=job_id, row_hash=du["id"])
                    state.bytes += sum(f.get("size") or 0 for u in ready for f in u["files"].values())
                    state.batches.append({"job_id": job_id, "units": len(ready), "staging_dir": lake.publish(job_id)})
    finally:
        bar.close()
        shutil.rmtree(scratch, ignore_errors=True)

"""Integrity checks of one catalog partition: asset files, duplicate rows, required meta."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .catalog import BATCH_ID, ROW_HASH, iter_partition_batches, read_partition_metadata
from .layout import RAW_TASK, LakeLayout, PartitionRef
from .schema import SchemaConfig
from .store import sha256_file

MAX_REPORTED = 20


@dataclass
class CheckOutcome:
    passed: bool
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    def add(self, problem: str) -> None:
        self.passed = False
        if len(self.problems) < MAX_REPORTED:
            self.problems.append(problem)


def stored_file_columns(names: list[str]) -> list[str]:
    return [n for n in names if f"{n}_sha256" in names]


def check_asset_files(
    layout: LakeLayout,
    ref: PartitionRef,
    batch_ids: list[str] | None = None,
    sha256_of: Callable[[str], str] | None = None,
) -> CheckOutcome:
    """Every image path of the selected rows exists, and the file's SHA-256 equals its name and recorded hash.

    ``sha256_of(relpath)`` hashes an asset somewhere else (an S3 lake); it returns "missing" when absent.
    """
    outcome = CheckOutcome(True)
    verified: dict[str, str] = {}
    for table in iter_partition_batches(layout, ref):
        if batch_ids is not None and BATCH_ID in table.column_names:
            table = table.filter(pc.is_in(table.column(BATCH_ID), value_set=pa.array(batch_ids, pa.string())))
        for col in stored_file_columns(table.column_names):
            for path, sha in zip(table.column(col).to_pylist(), table.column(f"{col}_sha256").to_pylist()):
                if path is None:
                    continue
                outcome.checked += 1
                if path not in verified and sha256_of is not None:
                    verified[path] = sha256_of(path)
                if path not in verified:
                    try:
                        full = layout.resolve(path)
                        verified[path] = sha256_file(full) if full.is_file() else "missing"
                    except ValueError:
                        verified[path] = "outside the lake"
                actual = verified[path]
                if actual in ("missing", "outside the lake"):
                    outcome.add(f"{col}: asset {path} is {actual}")
                elif actual != sha or not Path(path).name.startswith(actual):
                    outcome.add(f"{col}: asset {path} has sha256 {actual}, catalog says {sha}")
    return outcome


def check_duplicate_rows(layout: LakeLayout, ref: PartitionRef) -> CheckOutcome:
    outcome = CheckOutcome(True)
    seen: set[str] = set()
    for table in iter_partition_batches(layout, ref, columns=[ROW_HASH]):
        for h in table.column(ROW_HASH).to_pylist() if ROW_HASH in table.column_names else []:
            outcome.checked += 1
            if h in seen:
                outcome.add(f"row_hash {h} appears more than once")
            seen.add(h)
    return outcome


def check_required_meta(layout: LakeLayout, ref: PartitionRef, schema: SchemaConfig) -> CheckOutcome:
    """Task partitions: every row carries each required field with an allowed value."""
    outcome = CheckOutcome(True)
    if ref.task == RAW_TASK:
        return outcome
    if ref.task not in schema.tasks:
        outcome.add(f"task {ref.task!r} is not declared in the schema")
        return outcome
    spec = schema.tasks[ref.task]
    for table in iter_partition_batches(layout, ref):
        outcome.checked += table.num_rows
        for name in spec.required_fields:
            if name not in table.column_names:
                outcome.add(f"required field {name!r} is not a column")
                continue
            values = table.column(name).to_pylist()
            if any(v in (None, "") for v in values):
                outcome.add(f"required field {name!r} is empty in some rows")
            allowed = spec.allowed_values.get(name)
            if allowed:
                bad = sorted({str(v) for v in values if v is not None and v not in allowed})
                if bad:
                    outcome.add(f"{name} has values {bad} outside {allowed}")
    return outcome


def partition_summary(layout: LakeLayout, ref: PartitionRef) -> dict[str, Any]:
    meta = read_partition_metadata(layout, ref)
    return {"row_count": meta.get("row_count", 0), "batches": len(meta.get("batches", []))}

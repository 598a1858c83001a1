"""A staged batch's ``_metadata.json``: what the batch is, for which partition, with which files.

Two shapes are accepted. A full manifest written by :mod:`staging` lists ``data.parquet`` and every
file. A *hand-drop* manifest names only ``provider`` and ``dataset`` (optionally ``task``, ``variant``,
``meta``, ``description``); the batch folder then holds the files and one row is made per file, an image or
another file (see :mod:`~datalake_pipelines.core.ingest.file_accounting`).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ValidationError
from ..lake.layout import BATCH_MANIFEST, RAW_TASK, PartitionRef, check_name
from ..lake.schema import SchemaConfig
from ..storage.files import read_json, utc_now, utc_now_iso

FORMAT_VERSION = 1
JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
DATA_TYPES = ("raw", "task")


def new_job_id() -> str:
    return f"{utc_now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not JOB_ID_PATTERN.match(job_id) or ".." in job_id:
        raise ValidationError(f"invalid job id {job_id!r}: use letters, digits, '_', '-' and '.'")
    return job_id


@dataclass
class BatchManifest:
    job_id: str
    data_type: str
    provider: str
    dataset: str
    task: str
    variant: str
    meta: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    created_at: str = field(default_factory=utc_now_iso)
    row_count: int | None = None
    image_columns: list[str] = field(default_factory=list)
    file_columns: list[str] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    # What staging decided: image/other/skipped file counts, skipped files with reasons, and each image
    # column with why it is one (see core/file_accounting.py and core/image_columns.py).
    staging_report: dict[str, Any] = field(default_factory=dict)
    hand_drop: bool = False
    # Where the batch came from: method, file/URL/folder, sha256, host, user (see core/ingest/provenance.py).
    source: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def partition(self) -> PartitionRef:
        return PartitionRef(self.provider, self.dataset, self.task, self.variant)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # shallow: files lists can be long

    def validate(self, schema: SchemaConfig) -> BatchManifest:
        """Check names, provider, task and meta against the schema; raise :class:`ValidationError`."""
        check_job_id(self.job_id)
        if self.data_type not in DATA_TYPES:
            raise ValidationError(f"data_type must be one of {DATA_TYPES}, not {self.data_type!r}")
        try:
            self.partition  # noqa: B018 - validates every name
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        schema.check_provider(self.provider)
        if self.data_type == "raw" and self.task != RAW_TASK:
            raise ValidationError(f"raw data must use task 'raw', not {self.task!r}")
        if self.data_type == "task" and self.task == RAW_TASK:
            raise ValidationError("task data needs a task other than 'raw'")
        if not isinstance(self.meta, dict):
            raise ValidationError("meta must be a mapping of field to value")
        self.meta = schema.validate_meta(self.task, self.meta)
        check_meta_values(self.meta)
        for name in ("image_columns", "file_columns"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
                raise ValidationError(f"{name} must be a list of column names")
        if set(self.image_columns) & set(self.file_columns):
            raise ValidationError("a column cannot be both an image column and a file column")
        return self


# int64 is the widest integer every engine of the lake reads (DuckDB BIGINT, Athena bigint).
_INT64 = (-(2**63), 2**63 - 1)


def check_meta_values(meta: dict[str, Any]) -> None:
    """Refuse meta values the catalog cannot store exactly as a column (one value repeated on every row).

    Accepted: ``str``, ``bool``, ``int`` within int64, ``float`` and ``None`` (a null column). Anything else (an
    int beyond int64, a list, a dict, a date, bytes...) raises :class:`ValidationError` naming the field.
    """
    for key, value in meta.items():
        if value is None or isinstance(value, (str, bool, float)):
            continue
        if isinstance(value, int):
            if not _INT64[0] <= value <= _INT64[1]:
                raise ValidationError(
                    f"meta field {key!r}: {value} is beyond int64 (the widest integer the catalog stores); "
                    "give it as a string"
                )
            continue
        raise ValidationError(
            f"meta field {key!r}: a {type(value).__name__} value cannot be stored; meta values must be "
            "str, bool, int (within int64), float or None"
        )


def load_manifest(batch_dir: Path, job_id: str | None = None) -> BatchManifest:
    """Read ``_metadata.json`` of a batch folder (full or hand-drop shape) or raise :class:`ValidationError`."""
    path = batch_dir / BATCH_MANIFEST
    if not path.is_file() or path.is_symlink():
        raise ValidationError(f"{path}: the batch has no {BATCH_MANIFEST}")
    try:
        doc = read_json(path)
    except FileNotFoundError:
        raise ValidationError(f"{path}: the batch has no {BATCH_MANIFEST}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValidationError(f"{path}: must be a JSON object")
    for key in ("provider", "dataset"):
        if not isinstance(doc.get(key), str):
            raise ValidationError(f"{path}: missing {key!r}")
    hand_drop = "format_version" not in doc
    task = doc.get("task") or RAW_TASK
    data_type = doc.get("data_type") or ("raw" if task == RAW_TASK else "task")
    known = {f for f in BatchManifest.__dataclass_fields__}
    unknown = set(doc) - known
    if unknown:
        raise ValidationError(f"{path}: unknown keys {sorted(unknown)}")
    values = dict(doc)
    values.update(
        job_id=job_id or doc.get("job_id") or batch_dir.name,
        data_type=data_type,
        task=task,
        variant=doc.get("variant") or ("image" if task == RAW_TASK else "default"),
        hand_drop=hand_drop,
    )
    try:
        manifest = BatchManifest(**values)
    except TypeError as exc:
        raise ValidationError(f"{path}: {exc}") from None
    for key in ("provider", "dataset", "task", "variant"):
        try:
            check_name(key, getattr(manifest, key))
        except ValueError as exc:
            raise ValidationError(f"{path}: {exc}") from None
    return manifest

"""What processing one batch did (:class:`BatchResult`): job records, CLI output and Dagster metadata."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..storage.files import utc_now_iso


@dataclass
class BatchResult:
    """What processing one batch did; serialisable for job records, CLI output and Dagster metadata."""

    job_id: str
    partition: str | None = None
    status: str = "processing"
    rows_in: int = 0
    rows_added: int = 0
    rows_duplicate: int = 0
    rows_rejected: int = 0
    images_new: int = 0
    images_deduplicated: int = 0
    bytes_stored: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    part_file: str | None = None
    conformed_parts: list[str] = field(default_factory=list)  # older parts rewritten in the widened contract types
    rejected_dir: str | None = None
    staging_report: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)  # where the batch came from (core/ingest/provenance.py)
    error: str | None = None
    catalog_version: str | None = None  # the catalog version its publication recorded (lifecycle/versions.py)
    started_at: str = field(default_factory=utc_now_iso)
    finished_at: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

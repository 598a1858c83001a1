"""Collections on any lake (a :class:`LakeLayout`, a folder or ``s3://bucket/prefix``): what the CLI and the
Python client call. Each function opens the lake's :class:`~.backend.CollectionLake` and runs the local code of
:mod:`.config`, :mod:`.data_units` and :mod:`.upload` on its layout, publishing config, batches and reports
where the lake keeps them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..lake.layout import LakeLayout
from . import config as cols
from . import data_units
from . import upload as uploads
from .backend import open_collection_lake

Lake = LakeLayout | str | os.PathLike | None


def list_data_collection(lake: Lake) -> list[dict[str, Any]]:
    """Every collection of the lake (``id``, ``name``, ``description``, ``file_specifications``, ``project``...)."""
    target = open_collection_lake(lake)
    target.pull_config()
    return cols.list_data_collection(target.layout)


def get_data_collection(lake: Lake, id_or_name: str | int) -> dict[str, Any]:
    """One collection by id or name (``CollectionError`` naming the known ones otherwise)."""
    target = open_collection_lake(lake)
    target.pull_config()
    return cols.get_data_collection(target.layout, id_or_name)


def create_collection(lake: Lake, *args: Any, **kwargs: Any) -> cols.Collection:
    """:func:`.config.create_collection` on any lake; the new ``collections.yaml`` is published to the lake."""
    target = open_collection_lake(lake)
    target.pull_config()
    collection = cols.create_collection(target.layout, *args, **kwargs)
    target.push_config()
    return collection


def upload_data_file(lake: Lake, organized_file: dict[str, Any], collection_id: str, **kwargs: Any) -> dict[str, Any]:
    """:func:`.data_units.upload_data_file` on any lake (files go to the local upload scratch until staged)."""
    target = open_collection_lake(lake)
    target.pull_config()
    return data_units.upload_data_file(target.layout, organized_file, collection_id, **kwargs)


def create_data_units(lake: Lake, uploaded_files: list[dict[str, Any]], **kwargs: Any) -> list[dict[str, Any]]:
    """:func:`.data_units.create_data_units` on any lake; the batch is published to the lake's ``staging/pending``."""
    target = open_collection_lake(lake)
    target.pull_config()
    units = data_units.create_data_units(target.layout, uploaded_files, **kwargs)
    if units:
        target.publish(units[0]["job_id"])
    return units


def upload_collection(lake: Lake, folder: str | os.PathLike, collection: str, **kwargs: Any) -> dict[str, Any]:
    """:func:`.upload.upload_collection` on any lake: batches are published as they are staged, the report is
    kept with the lake (``report_path``: where the lake keeps it, a path or an ``s3://`` URI;
    ``local_report_path``: the local file, the same path on a lake folder)."""
    target = open_collection_lake(lake)
    target.pull_config()
    try:
        report = uploads.upload_collection(target.layout, folder, collection, lake=target, **kwargs)
    except uploads.UploadError as exc:
        if getattr(exc, "report", None):
            _publish_report(target, exc.report)
        raise
    _publish_report(target, report)
    return report


def _publish_report(target, report: dict[str, Any]) -> None:
    local = Path(report["report_path"])
    report.update(report_path=target.publish_report(local), local_report_path=str(local))  # the same on a folder

"""``DatalakeClient``: the Python API for putting data into the lake (and, later, taking it out)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .client_collections import CollectionClientMixin
from .core.ingest.known_content import KnownContent
from .core.ingest.manifest import check_job_id
from .core.ingest.processing import BatchResult, ProcessOptions
from .core.ingest.staging import BatchStager, build_manifest
from .core.lake.layout import RAW_TASK, LakeLayout
from .core.lake.open import open_lake
from .core.lake.schema import SchemaConfig, load_schema
from .settings import load as load_settings


class DatalakeClient(CollectionClientMixin):
    """Stage raw and task data into ``staging/pending`` of a lake at ``base_path``."""

    def __init__(
        self,
        base_path: str | os.PathLike | None = None,
        num_proc: int | None = None,
        batch_size: int | None = None,
        progress: bool = True,
        upload_method: str = "client",
    ):
        settings = load_settings()
        base = str(base_path) if base_path is not None else settings.base_path
        self.lake = open_lake(base)
        self.s3_lake = self.lake if self.lake.kind == "s3" else None  # for the S3-only data-file path below
        # On S3 a batch is assembled in a local scratch lake, then uploaded with its manifest last.
        self.layout = self.lake.scratch_layout()
        self.num_proc = num_proc or settings.num_proc
        self.batch_size = batch_size or settings.batch_size
        self.progress = progress
        # Recorded as the method in each batch's source (core/ingest/provenance.py): `datalake upload` says "cli".
        self.upload_method = upload_method
        # The staging report of the last upload: images, other_files, skipped_count, skipped (path, reason),
        # image_columns and text_columns (column -> why); also in the batch's _metadata.json.
        self.last_staging_report: dict[str, Any] = {}

    @property
    def base_path(self) -> Path | str:
        return self.lake.base if self.s3_lake else self.layout.base

    @property
    def lake_ref(self) -> LakeLayout | str:
        """The lake as downloads, exports and collections take it: the layout, or the ``s3://`` base."""
        return self.s3_lake.base if self.s3_lake else self.layout

    @property
    def schema(self) -> SchemaConfig:
        return load_schema(self.layout)

    def _stager(self) -> BatchStager:
        stager = BatchStager(self.layout, self.num_proc, self.batch_size, self.progress)
        stager.method = self.upload_method
        return stager

    def upload_raw_data(
        self,
        data_file: Any,
        provider: str,
        dataset: str,
        dataset_description: str = "",
        image_columns: list[str] | None = None,
        variant: str | None = None,
        job_id: str | None = None,
    ) -> tuple[str, str]:
        """Stage raw data (``task=raw``); return ``(staging_dir, job_id)``.

        ``data_file`` is a pandas DataFrame, a pyarrow Table, RecordBatch or RecordBatchReader, an object with
        ``__arrow_c_stream__``/``__arrow_c_array__``, or the path of a Parquet file or a folder. An upload without
        rows or columns, or of another kind, raises :class:`~datalake_pipelines.core.errors.ValidationError` and
        stages nothing.

        ``variant`` defaults to ``image`` for a folder of images and ``mixed`` for tabular data.
        """
        if variant is None:
            is_folder = isinstance(data_file, (str, os.PathLike)) and Path(data_file).expanduser().is_dir()
            variant = "image" if is_folder else "mixed"
        manifest = build_manifest("raw", provider, dataset, RAW_TASK, variant, {}, dataset_description, job_id)
        return self._stage(data_file, manifest, image_columns)

    def _stage(self, data_file: Any, manifest, image_columns: list[str] | None) -> tuple[str, str]:
        check_job_id(manifest.job_id)
        self.lake.check_job_id_free(manifest.job_id)  # in the lake itself, before anything is assembled
        with self.lake.hash_index() as index:  # content the lake holds is not staged (core/ingest/known_content.py)
            stager = self._stager()
            stager.known = KnownContent(index, always=self.s3_lake is not None, sound=self.lake.sound_assets)
            staged = stager.stage(data_file, manifest, image_columns)
        self.last_staging_report = staged.manifest.staging_report
        return self.lake.stage(staged.staging_dir, staged.job_id), staged.job_id

    def upload_task_data(
        self,
        data_file: Any,
        provider: str,
        dataset: str,
        task: str,
        variant: str,
        meta: dict[str, Any] | None = None,
        dataset_description: str = "",
        image_columns: list[str] | None = None,
        job_id: str | None = None,
    ) -> tuple[str, str]:
        """Stage task data; ``meta`` is validated against the schema before anything is written."""
        manifest = build_manifest("task", provider, dataset, task, variant, meta, dataset_description, job_id)
        return self._stage(data_file, manifest, image_columns)

    def download(
        self, selection: Any = None, format: str = "parquet", out_dir: str | os.PathLike = "downloads", **options: Any
    ) -> dict[str, Any]:
        """Write the selected rows (partitions, ``where``, or a text search) as parquet, arrow or hf.

        ``selection`` is a dict or :class:`~datalake_pipelines.core.export.download.Selection`; returns the
        ``download.json`` manifest. Streams in batches, so memory stays bounded for any selection. Columns keep
        their catalog types (``hf``: maps become key/value lists, recorded as ``hf_conversions``).
        ``as_of=`` (a timestamp or a catalog version id) downloads the catalog as it was then. ``out_dir``
        is never replaced unless ``overwrite=True`` (``FileExistsError`` otherwise, also for the loser of two
        downloads racing to one folder). See :func:`~datalake_pipelines.core.export.download.download` for the errors.
        """
        from .core.export.download import download

        return download(self.lake_ref, selection, format, out_dir, progress=self.progress, **options)

    def create_export(
        self,
        destination: str | os.PathLike,
        filter: dict[str, list[Any]] | None = None,
        export_all: bool = False,
        file_type: str = "parquet",
        options: dict[str, Any] | None = None,
        wait: bool = False,
        instance: Any = None,
        exclude_near_duplicates: int | None = None,
        as_of: str | None = None,
    ) -> str:
        """Start an export job (a Dagster run); return its task id (the run id).

        ``wait=True`` runs it in this process and returns when it is done; otherwise it is submitted to the
        instance in ``$DAGSTER_HOME`` (run by the daemon / ``dagster dev``). ``exclude_near_duplicates=D`` (or
        the option of that name) keeps one row per cluster of images within ``D`` bits of pHash. ``as_of`` (an
        ISO 8601 timestamp or a catalog version id) exports the catalog as it was then (``AS_OF_UNAVAILABLE``
        when the retention no longer holds it).
        """
        from .core.export.tasks import ExportParams
        from .services.exports import create_export
        from .services.runner import get_instance

        options = dict(options or {})
        if exclude_near_duplicates is not None:
            options["exclude_near_duplicates"] = exclude_near_duplicates
        params = ExportParams(str(destination), filter or {}, export_all, file_type, options, as_of)
        return create_export(instance or get_instance(), params, base_path=str(self.base_path), wait=wait)

    def near_duplicates(self, threshold: int | None = None, partition: str | None = None) -> dict[str, Any]:
        """Clusters of near-duplicate images (pHash within ``threshold`` bits, default 8) across the lake, or
        those touching one ``partition`` (``provider/dataset/task/variant``); local or S3 lake. See
        :func:`~datalake_pipelines.core.neardup.report.near_duplicate_report` for the report's shape."""
        from .core.neardup.report import DEFAULT_THRESHOLD, near_duplicate_report

        threshold = DEFAULT_THRESHOLD if threshold is None else threshold
        return near_duplicate_report(str(self.base_path), threshold, partition)

    def export_info(self, task_id: str, instance: Any = None) -> dict[str, Any]:
        """Status, progress, counts and sampled rows of an export, like the reference's ``/task/info``."""
        from .services.exports import export_info
        from .services.runner import get_instance

        return export_info(instance or get_instance(), self.lake_ref, task_id)

    def create_data_file(
        self,
        file_path: str | os.PathLike,
        use_chunked_upload: bool = False,
        provider: str | None = None,
        dataset: str | None = None,
        threshold: int | None = None,
    ) -> dict[str, Any]:
        """Upload one file into the content-addressed store (lake-wide dedup), like the reference's call.

        Returns ``{"id": sha256, "sha256", "size", "path" (lake-relative), "uri", "kind" ("image" or "file"),
        "format", "width", "height" (displayed), "orientation", "mode", "deduplicated", "chunked", "parts"}``.
        ``use_chunked_upload=True`` streams the file (bounded memory, progress bar; multipart on S3 above
        ``threshold`` bytes, default 50 MiB or ``$DATALAKE_CHUNKED_THRESHOLD_MB``); without it a file up to the
        threshold goes in one read and one write. The file lands under ``provider``/``dataset`` (default
        ``data_files``/``default``). Raises :class:`~datalake_pipelines.core.errors.ValidationError` for a
        missing file or an image Pillow cannot load. See :mod:`datalake_pipelines.core.ingest.data_file`.
        """
        from .core.ingest import data_file

        provider = provider or data_file.DEFAULT_PROVIDER
        dataset = dataset or data_file.DEFAULT_DATASET
        if self.s3_lake is not None:
            return data_file.create_data_file_s3(
                self.s3_lake, file_path, use_chunked_upload, provider, dataset, threshold, progress=self.progress
            )
        return data_file.create_data_file_local(
            self.layout, file_path, use_chunked_upload, provider, dataset, threshold, progress=self.progress
        )

    def delete(
        self,
        batch: str | None = None,
        partition: str | None = None,
        dataset: str | None = None,
        provider: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Remove a batch, a partition (``P/D/T/V``), a dataset (``P/D``) or a provider from the catalog (exactly
        one), like ``datalake delete``; see :func:`~datalake_pipelines.core.lifecycle.delete.delete` for the
        returned document (rows, partitions, ``bytes_freed``, ``deletion_id``, who and when). Raises ValueError when
        nothing matches and ``PartitionBusy`` while a run holds one of the partitions."""
        from .core.lifecycle.delete import DeleteSelection
        from .core.lifecycle.delete import delete as delete_rows

        selection = DeleteSelection(batch, partition, dataset, provider)
        return delete_rows(self.lake, selection, dry_run=dry_run, batch_size=self.batch_size)

    def gc(self, dry_run: bool = False, grace: str | float = "24h", retention: str | float = "7d") -> dict[str, Any]:
        """Collect assets no row references, older than ``grace`` (``"24h"`` or seconds), after purging catalog
        files retained by deletions older than ``retention``, like ``datalake gc``; see
        :func:`~datalake_pipelines.core.lifecycle.gc.collect_garbage` for the report. Raises ``LakeBusy`` while a
        batch is claimed."""
        from .core.lifecycle.gc import collect_garbage, parse_duration

        return collect_garbage(
            self.lake, dry_run=dry_run, grace_seconds=parse_duration(grace), retention_seconds=parse_duration(retention)
        )

    def lineage(self, ident: str) -> dict[str, Any]:
        """Trace a ``row_hash``, an asset's sha256 or a batch id to its batch, source (file or URL, sha256, upload
        method, host, user), run and part file, like ``datalake lineage --json``; for an asset, every row and
        dataset referencing it. See :func:`~datalake_pipelines.core.lifecycle.lineage.lineage` for the document.
        Raises :class:`~datalake_pipelines.core.lifecycle.lineage.LineageNotFound` for an unknown identifier."""
        from .core.lifecycle.lineage import lineage

        return lineage(self.lake, ident)

    def catalog_versions(self, partition: str | None = None) -> list[dict[str, Any]]:
        """The catalog versions recorded at each ingest, rebuild and delete (of ``partition`` ``P/D/T/V`` when
        given), oldest first: ``version_id``, ``partition``, ``action``, ``time``, ``rows``, ``files``. A
        ``version_id`` is a valid ``as_of`` for queries, downloads and exports."""
        from .core.lifecycle.versions import list_versions

        return list_versions(self.lake.storage, partition)

    def process_pending(self, **options: Any) -> list[BatchResult]:
        """Process every pending batch in this process (no Dagster needed)."""
        opts = ProcessOptions(num_proc=self.num_proc, batch_size=self.batch_size, **options)
        return self.lake.process_pending(opts)

"""Export writers: one function per ``file_type``, each streaming record batches into an export folder.

``write_export`` returns what the export's ``export.json`` must record about encodings: for ``jsonl`` the
base64 columns and the Arrow schema (:mod:`.jsonl_codec`), for ``hf`` the type conversions (:mod:`.hf_types`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from ..lake.layout import PartitionRef
from .download import _write_arrow, _write_hf, _write_parquet, image_columns
from .jsonl_codec import column_encodings, encode_batch, serialize_schema
from .source import LakeSource

DATA_FILES = {"parquet": "data.parquet", "jsonl": "data.jsonl", "arrow": "data.arrow", "hf": ".", "hdf5": "data.h5"}


def _write_jsonl(reader: pa.RecordBatchReader, out: Path) -> dict[str, Any]:
    """One JSON object per line, rendered by DuckDB's ``to_json`` (timestamps as text, bytes as base64, maps as
    key/value lists; see :mod:`.jsonl_codec`)."""
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    try:
        with open(out / DATA_FILES["jsonl"], "w", encoding="utf-8", newline="\n") as fh:
            for batch in reader:
                con.register("__export_batch", pa.Table.from_batches([encode_batch(batch)]))
                lines = con.sql("SELECT to_json(__export_row)::VARCHAR FROM __export_batch AS __export_row")
                text = lines.to_arrow_table().column(0).to_pylist()
                con.unregister("__export_batch")
                if text:
                    fh.write("\n".join(text))
                    fh.write("\n")
    finally:
        con.close()
    return {"encodings": column_encodings(reader.schema), "arrow_schema": serialize_schema(reader.schema)}


def _write_hdf5(
    source: LakeSource,
    reader: pa.RecordBatchReader,
    out: Path,
    opts: dict[str, Any],
    partition_rows: Mapping[tuple[str, ...], int] | None,
) -> None:
    from .hdf5 import Hdf5ExportWriter

    def partition_meta(key: tuple[str, ...]) -> dict[str, Any]:
        return source.partition_metadata(PartitionRef(*key))

    writer = Hdf5ExportWriter(
        out / DATA_FILES["hdf5"],
        read_asset=source.read_asset,
        partition_meta=partition_meta,
        image_columns=image_columns(reader.schema),
        image_mode=opts["hdf5_images"],
        image_shape=tuple(opts["hdf5_image_shape"]),
        compression=opts["hdf5_compression"],
        partition_rows=partition_rows,
    )
    try:
        for batch in reader:
            writer.write(batch)
        writer.close()
    except BaseException:
        writer.abort()
        raise


def write_export(
    source: LakeSource,
    file_type: str,
    reader: pa.RecordBatchReader,
    out: Path,
    opts: dict,
    partition_rows: Mapping[tuple[str, ...], int] | None = None,
) -> dict[str, Any]:
    """Write ``reader`` as ``file_type`` into the local folder ``out`` (images and partition metadata read from
    ``source``); return the manifest entries about encodings. ``partition_rows`` (the most rows of each
    partition ``(provider, dataset, task, variant)``, when known) bounds the chunks of an HDF5 file."""
    if file_type == "parquet":
        _write_parquet(reader, out, hive=False)
    elif file_type == "arrow":
        _write_arrow(reader, out)
    elif file_type == "jsonl":
        return _write_jsonl(reader, out)
    elif file_type == "hf":
        return {"hf_conversions": _write_hf(source, reader, out, progress=False, batch_size=opts["batch_size"])}
    else:
        _write_hdf5(source, reader, out, opts, partition_rows)
    return {}

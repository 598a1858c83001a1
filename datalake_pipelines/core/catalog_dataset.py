"""``catalog_dataset``: the catalog (or any hive-partitioned download) as a ``pyarrow.dataset`` with text keys.

``pyarrow.dataset.dataset(path, partitioning="hive")`` infers partition types from the folder names, so
``dataset=2017`` reads as an int32 and ``variant=007`` and ``variant=7`` both read as 7. Partition values are
names, always text: the helper declares ``provider``, ``dataset``, ``task`` and ``variant`` as strings, and
takes the schema from every file's footer (``pa.unify_schemas``) instead of the first file's only.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads

from .catalog import PARTITION_COLUMNS

PARTITIONING_SCHEMA = pa.schema([pa.field(c, pa.string()) for c in PARTITION_COLUMNS])


def catalog_partitioning() -> pads.Partitioning:
    """Hive partitioning with the four partition keys as strings."""
    return pads.partitioning(PARTITIONING_SCHEMA, flavor="hive")


def catalog_dataset(base_path: str | os.PathLike) -> pads.FileSystemDataset:
    """A dataset over ``<base_path>/catalog`` (a lake folder), or over ``base_path`` itself when it is a
    hive-partitioned folder of Parquet files (e.g. ``download(..., hive=True)``'s ``data/``).

    Partition columns are strings exactly as in the folder names; the schema is the union of the files'
    schemas (``promote_options="permissive"``), partition columns last. Raises ``FileNotFoundError`` if the
    folder does not exist.
    """
    root = Path(base_path).expanduser()
    if (root / "catalog").is_dir():
        root = root / "catalog"
    if not root.is_dir():
        raise FileNotFoundError(f"no catalog folder at {root}")
    files = sorted(str(p) for p in root.rglob("*.parquet") if not p.name.startswith((".", "_")))
    partitioning = catalog_partitioning()
    if not files:
        return pads.dataset([], schema=PARTITIONING_SCHEMA, format="parquet")
    probe = pads.dataset(files, format="parquet", partitioning=partitioning, partition_base_dir=str(root))
    schemas = [fragment.physical_schema for fragment in probe.get_fragments()]
    unified = pa.unify_schemas(schemas, promote_options="permissive")
    fields = [f for f in unified if f.name not in PARTITION_COLUMNS] + list(PARTITIONING_SCHEMA)
    return pads.dataset(
        files, schema=pa.schema(fields), format="parquet", partitioning=partitioning, partition_base_dir=str(root)
    )

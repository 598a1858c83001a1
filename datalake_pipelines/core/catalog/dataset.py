"""``catalog_dataset``: the catalog (or any hive-partitioned download) as a ``pyarrow.dataset`` with text keys.

``pyarrow.dataset.dataset(path, partitioning="hive")`` infers partition types from the folder names, so
``dataset=2017`` reads as an int32 and ``variant=007`` and ``variant=7`` both read as 7. Partition values are
names, always text: the helper declares ``provider``, ``dataset``, ``task`` and ``variant`` as strings.

Each partition has its own schema contract, so partitions may disagree on a column's type. The dataset's schema
is the union of the *selected* files' footers under the same rule as queries (:mod:`.arrow_restore`): lossless
promotions only (``int8``/``int16``, ``timestamp[ms]``/``timestamp[us]``, ``null`` with anything), anything
else (``int64`` with ``double``, a number with a string) is one :class:`~.arrow_restore.TypeConflictError`
naming the column, the types and the partitions. ``pa.unify_schemas(..., promote_options="permissive")`` would
turn ``int64`` 5 into ``5.0`` (and fail on ``2**53+2`` while scanning) or raise a raw ``ArrowTypeError``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..arrow.restore import local_schema, partition_of, selection_schema
from ..lake import keys
from ..storage.backends import S3Storage, storage_kind
from .parts import PARTITION_COLUMNS, CatalogError

PARTITIONING_SCHEMA = pa.schema([pa.field(c, pa.string()) for c in PARTITION_COLUMNS])
SchemaReader = Callable[[Sequence[str]], list[pa.Schema]]  # the footers' schemas of catalog files, in order


def catalog_partitioning() -> pads.Partitioning:
    """Hive partitioning with the four partition keys as strings."""
    return pads.partitioning(PARTITIONING_SCHEMA, flavor="hive")


def _wanted(value: str | Sequence[str] | None) -> set[str] | None:
    if value is None:
        return None
    return {value} if isinstance(value, str) else set(value)


def _local_files(base_path: str | os.PathLike) -> tuple[str, list[str], pafs.FileSystem, SchemaReader]:
    root = Path(base_path).expanduser()
    if (root / keys.CATALOG).is_dir():
        root = root / keys.CATALOG
    if not root.is_dir():
        raise FileNotFoundError(f"no catalog folder at {root}")
    files = sorted(str(p) for p in root.rglob("*.parquet") if not p.name.startswith((".", "_")))
    return str(root), files, pafs.LocalFileSystem(), lambda fs: [local_schema(Path(f)) for f in fs]


def _s3_files(base: str) -> tuple[str, list[str], pafs.FileSystem, SchemaReader]:
    """An S3 lake's catalog files as ``bucket/prefix/catalog/...`` paths of its ``pyarrow`` S3 file system."""
    storage = S3Storage(base)
    fs, top = storage.arrow()
    names = [o.key for o in storage.list(keys.CATALOG)]
    if not names and not storage.list_dirs(""):
        raise FileNotFoundError(f"no lake at {storage.uri} (no catalog/ or any other object under it)")
    files = sorted(
        f"{top}/{k}" for k in names if k.endswith(".parquet") and not k.rsplit("/", 1)[-1].startswith((".", "_"))
    )

    def footers(paths: Sequence[str]) -> list[pa.Schema]:
        with ThreadPoolExecutor(max_workers=8) as pool:  # one ranged GET or two per file: latency-bound
            return list(pool.map(lambda p: _footer(p, fs), paths))

    return f"{top}/{keys.CATALOG}", files, fs, footers


def _footer(path: str, fs: pafs.FileSystem) -> pa.Schema:
    try:
        return pq.read_schema(path, filesystem=fs)
    except (pa.ArrowException, OSError) as exc:
        raise CatalogError(f"cannot read catalog file s3://{path}: {exc}") from None


def catalog_dataset(
    base_path: str | os.PathLike,
    providers: str | Sequence[str] | None = None,
    datasets: str | Sequence[str] | None = None,
    tasks: str | Sequence[str] | None = None,
    variants: str | Sequence[str] | None = None,
) -> pads.FileSystemDataset:
    """A dataset over ``<base_path>/catalog`` (a lake folder or ``s3://bucket/prefix``), or over ``base_path``
    itself when it is a local hive-partitioned folder of Parquet files (e.g. ``download(..., hive=True)``'s
    ``data/``). An S3 lake is read in place through ``pyarrow.fs.S3FileSystem`` (the AWS environment boto3
    uses): nothing is copied locally.

    ``providers``/``datasets``/``tasks``/``variants`` (a name or a list of names each, ``None``: all) select
    the partitions; only their files are in the dataset, and its schema is the exact union of those files'
    schemas (user columns, then the partition columns as strings). Raises
    :class:`~.arrow_restore.TypeConflictError` (code ``type_conflict``) when the selected partitions hold a
    column with types that no lossless promotion unifies, ``FileNotFoundError`` if the folder (or, on S3,
    anything under the prefix) does not exist, ``CatalogError`` for an unreadable catalog file, and
    ``ValueError`` if a selection matches no partition.
    """
    if storage_kind(base_path) == "s3":
        root, files, fs, read_schemas = _s3_files(str(base_path))
    else:
        root, files, fs, read_schemas = _local_files(base_path)
    selection = [_wanted(v) for v in (providers, datasets, tasks, variants)]
    if any(s is not None for s in selection):
        files = [
            f for f in files if all(s is None or key in s for s, key in zip(selection, partition_of(f).split("/")))
        ]
        if not files:
            chosen = {c: sorted(s) for c, s in zip(PARTITION_COLUMNS, selection) if s is not None}
            raise ValueError(f"no partition under {root} matches {chosen}")
    partitioning = catalog_partitioning()
    if not files:
        return pads.dataset([], schema=PARTITIONING_SCHEMA, format="parquet")
    unified = selection_schema(files, None, read_schemas)
    return pads.dataset(
        files,
        schema=pa.schema([*unified, *PARTITIONING_SCHEMA]),
        format="parquet",
        partitioning=partitioning,
        partition_base_dir=root,
        filesystem=fs,
    )

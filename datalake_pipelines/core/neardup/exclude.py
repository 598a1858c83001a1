"""``exclude_near_duplicates=D`` for exports and downloads: keep one row per cluster of near-duplicate rows.

Rows are the unit (a row may hold several images): two selected rows are linked when an image of one is within ``D``
bits of an image of the other (any image columns), and each connected group keeps its first row in
:func:`.report.member_order` order (earliest ``ingested_at``, then upload order: the row's place in its partition's
files); the others are left out. Clusters are computed **within the selection** (the export's snapshot and filters,
the download's selection), so the output holds no two near-duplicates whatever else the lake holds. Rows without any
pHash are always kept and counted (``images_without_phash``), as are near-constant images (plain, single-colour:
``images_near_constant``, see :func:`.report.near_constant`). A ``limit`` applies after the exclusion, to the rows
kept; ``near_duplicates.json`` then lists only excluded rows whose kept row was written. A row is identified by its
partition and ``row_hash``; rows identical in every value share that identity and are kept or left out together.

What was left out is written next to the data as ``near_duplicates.json`` (:data:`EXCLUDED_FILE`): every excluded
row with the row kept in its place and their distance; the manifest holds a summary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..catalog.query import DuckDBClient, QueryPlan
from ..storage.files import write_json_atomic
from .clusters import check_threshold
from .report import PARTITION_KEYS, member_labels, member_order, members_of_plan, near_constant, partition_keys

EXCLUDED_FILE = "near_duplicates.json"
ROW_KEY_COLUMNS = (*PARTITION_KEYS, "row_hash")
SEPARATOR = "\x1f"  # cannot occur in partition names ([a-z0-9_-]) or row hashes (hex)


@dataclass
class Exclusion:
    """The rows to leave out of one output and why."""

    threshold: int
    excluded: dict[str, dict[str, Any]] = field(default_factory=dict)  # row key -> {kept_partition, ...}
    kept_key: dict[str, str] = field(default_factory=dict)  # excluded row key -> the kept row's key
    clusters: int = 0
    images: int = 0
    images_without_phash: int = 0
    images_near_constant: int = 0
    written: set[str] | None = None  # row keys written when a limit cut the output (apply), else None

    def listed(self) -> list[dict[str, Any]]:
        """Excluded rows whose kept row is in the output (all of them unless a limit cut the output)."""
        if self.written is None:
            return list(self.excluded.values())
        return [v for k, v in self.excluded.items() if self.kept_key[k] in self.written]

    def summary(self) -> dict[str, Any]:
        """``rows_excluded``: the excluded rows listed (those whose kept row was written); a ``limit`` applies
        after the exclusion, so ``rows_excluded_in_selection`` may be larger."""
        return {"threshold": self.threshold, "clusters": self.clusters, "rows_excluded": len(self.listed()),
                "rows_excluded_in_selection": len(self.excluded), "images_considered": self.images,
                "images_without_phash": self.images_without_phash, "images_near_constant": self.images_near_constant,
                "file": EXCLUDED_FILE}  # fmt: skip

    def write(self, folder: Path) -> None:
        """``near_duplicates.json`` in ``folder``: the summary and every listed excluded row (after the output
        was written: a limited output lists only rows whose kept row it holds)."""
        write_json_atomic(folder / EXCLUDED_FILE, {**self.summary(), "excluded": self.listed()})

    def apply(
        self, reader: pa.RecordBatchReader, drop: list[str] | tuple[str, ...] = (), limit: int | None = None
    ) -> pa.RecordBatchReader:
        """``reader`` without the excluded rows, then without the ``drop`` columns, at most ``limit`` rows.
        The reader must hold the partition columns and ``row_hash``."""
        missing = [c for c in ROW_KEY_COLUMNS if c not in reader.schema.names]
        if missing:
            raise ValueError(f"excluding near-duplicates needs the columns {missing} in the rows")
        out_schema = pa.schema([f for f in reader.schema if f.name not in drop], metadata=reader.schema.metadata)
        value_set = pa.array(sorted(self.excluded), pa.string())

        if limit is not None:
            self.written = set()

        def batches() -> Iterator[pa.RecordBatch]:
            left = limit
            for batch in reader:
                keys = pc.binary_join_element_wise(*(batch.column(c) for c in ROW_KEY_COLUMNS), SEPARATOR)
                if len(value_set):
                    mask = pc.invert(pc.fill_null(pc.is_in(keys, value_set=value_set), False))
                    batch, keys = batch.filter(mask), keys.filter(mask)
                if left is not None and self.written is not None:
                    self.written.update(keys.slice(0, left).to_pylist())
                if drop:
                    batch = pa.RecordBatch.from_arrays([batch.column(f.name) for f in out_schema], schema=out_schema)
                if left is not None:
                    batch = batch.slice(0, left)
                    left -= batch.num_rows
                yield batch
                if left == 0:
                    return

        return pa.RecordBatchReader.from_batches(out_schema, batches())


def plan_exclusion(duck: DuckDBClient, plan: QueryPlan, threshold: int) -> Exclusion:
    """Which rows of ``plan``'s selection to leave out so that no two kept rows are within ``threshold`` bits.

    ``plan`` must select every column (the image columns and their pHashes are read from it).
    Raises ``ValueError`` for a bad threshold."""
    threshold = check_threshold(threshold)
    members = members_of_plan(duck, plan)
    has_hash = members.column("phash").is_valid()
    without = members.num_rows - int(pc.sum(has_hash).as_py() or 0)
    members = members.filter(has_hash)
    flat = near_constant(members.column("phash").to_numpy()) if members.num_rows else np.array([], bool)
    members = members.filter(pa.array(~flat))  # plain images are all "near" each other: never excluded
    result = Exclusion(threshold, images=members.num_rows, images_without_phash=without,
                       images_near_constant=int(flat.sum()))  # fmt: skip
    if members.num_rows < 2:
        return result
    labels, _ = member_labels(members, threshold)
    order = member_order(members)
    members, labels = members.take(pa.array(order)), labels[order]
    parts = partition_keys(members)
    row_hash = np.asarray(members.column("row_hash").to_numpy(zero_copy_only=False), object)
    row_keys = np.array([f"{p.replace('/', SEPARATOR)}{SEPARATOR}{h}" for p, h in zip(parts, row_hash)], object)
    # rows and image clusters as one graph: a row joins the clusters of each of its images
    # first_member: a row's first member in keep order (np.unique returns first occurrences)
    uniq_rows, first_member, row_of = np.unique(row_keys, return_index=True, return_inverse=True)
    n_rows = len(uniq_rows)
    shape = (n_rows + int(labels.max()) + 1,) * 2
    graph = coo_matrix((np.ones(len(row_of), np.int8), (row_of, n_rows + labels)), shape=shape)
    group = connected_components(graph, directed=False)[1][:n_rows]
    result.clusters = int(np.count_nonzero(np.bincount(group) > 1))
    keeper: dict[int, int] = {}
    phash = members.column("phash").to_numpy().view(np.uint64)
    for row in np.argsort(first_member, kind="stable").tolist():  # rows in keep order
        g = int(group[row])
        if g not in keeper:
            keeper[g] = row
            continue
        a, b = first_member[row], first_member[keeper[g]]
        result.kept_key[uniq_rows[row]] = uniq_rows[keeper[g]]
        result.excluded[uniq_rows[row]] = {
            "partition": parts[a], "row_hash": row_hash[a], "kept_partition": parts[b], "kept_row_hash": row_hash[b],
            "distance": int(np.bitwise_count(phash[a] ^ phash[b])),  # between the two rows' first images
        }  # fmt: skip
    return result


def excluding_reader(
    duck: DuckDBClient,
    plan_for: Callable[[list[str] | None], QueryPlan],
    columns: list[str] | None,
    limit: int | None,
    threshold: int,
    batch_size: int,
) -> tuple[pa.RecordBatchReader, Exclusion]:
    """The rows of a download selection without their near-duplicates, and what was left out.

    ``plan_for(columns)`` plans the selection with those columns (``None``: all) and no limit; the clusters are
    computed over the whole selection, the row identity columns are added to ``columns`` for the filter and
    dropped again, and ``limit`` applies to the rows kept."""
    exclusion = plan_exclusion(duck, plan_for(None), threshold)
    added = [] if columns is None else [c for c in ROW_KEY_COLUMNS if c not in columns]
    plan = plan_for(None if columns is None else [*columns, *added])
    reader = duck.stream(plan, batch_size)
    if plan.empty:
        return reader, exclusion
    return exclusion.apply(reader, drop=added, limit=limit), exclusion

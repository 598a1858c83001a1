"""The near-duplicate report of a lake: clusters of catalog images within a Hamming distance of their pHashes.

A **member** is one image reference of one catalog row: ``(partition, row_hash, image column)`` with its asset
path, SHA-256 and pHash. Members with the same content (one asset referenced by several rows) have distance 0
and always share a cluster. Clusters come from :mod:`.clusters` (never all pairs). In each cluster the member
kept by ``exclude_near_duplicates`` comes first: the earliest ``ingested_at``, then partition, ``row_hash`` and
column (a deterministic order); every member carries its distance in bits to that first one.

Scope: the whole lake, or one partition against the rest (``scope="provider/dataset/task/variant"``): only
pairs with a member of that partition are searched, and only clusters holding one of its members are reported.
Rows written before pHashes existed, or with ``$DATALAKE_PHASH=0``, have no hash and are counted as
``images_without_phash``.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image, ImageOps

from ..catalog.query import DuckDBClient, QueryPlan
from ..catalog.query_sql import quote_identifier
from ..catalog.warehouse import sql_string
from ..lake.layout import InvalidNameError, PartitionRef
from .clusters import check_threshold, cluster_labels, near_pairs, plan_bands
from .phash import to_hex

MIN_PHASH_BITS = 8  # fewer set bits: a near-constant image (see near_constant), left out of clustering
DEFAULT_THRESHOLD = 8  # bits of 64; see README "Near-duplicates" for the measured distances
PARTITION_KEYS = ("provider", "dataset", "task", "variant")
MEMBER_SCHEMA = pa.schema(
    [
        *(pa.field(c, pa.string()) for c in PARTITION_KEYS),
        pa.field("row_hash", pa.string()),
        pa.field("ingested_at", pa.timestamp("us", "UTC")),
        pa.field("position", pa.int64()),
        pa.field("image_column", pa.string()),
        pa.field("path", pa.string()),
        pa.field("sha256", pa.string()),
        pa.field("phash", pa.int64()),
    ]
)


def phash_columns(names: list[str]) -> list[str]:
    """Image columns of a catalog schema that have a ``<col>_phash`` (and ``<col>_sha256``) sibling."""
    have = set(names)
    return [n for n in names if f"{n}_phash" in have and f"{n}_sha256" in have]


def members_query(inner_sql: str, names: list[str], with_null: bool = False) -> str | None:
    """SQL over ``inner_sql`` (a query yielding catalog rows with columns ``names``) giving one row per image
    reference in :data:`MEMBER_SCHEMA` order; ``None`` when no column has a pHash. ``with_null`` keeps
    references without a pHash (to count them)."""
    parts = []
    for col in phash_columns(names):
        q = quote_identifier
        ph = q(f"{col}_phash")
        parts.append(
            f"SELECT provider, dataset, task, variant, row_hash, ingested_at, __position AS position, "
            f"{sql_string(col)} AS image_column, "
            f"{q(col)} AS path, {q(col + '_sha256')} AS sha256, {ph} AS phash FROM __rows WHERE {q(col)} IS NOT NULL"
            + ("" if with_null else f" AND {ph} IS NOT NULL")
        )
    if not parts:
        return None
    # __position: the row's place in the scan of the catalog files (each partition's files in name order, each
    # file in row order), i.e. upload order within a batch; DuckDB keeps scan order for an empty OVER ()
    return (f"WITH __scan AS ({inner_sql}), __rows AS (SELECT *, row_number() OVER () AS __position FROM __scan) "
            + " UNION ALL ".join(parts))  # fmt: skip


def members_of_plan(duck: DuckDBClient, plan: QueryPlan) -> pa.Table:
    """Members (with and without a pHash) of the rows ``plan`` selects; the plan must keep the partition,
    ``row_hash``, ``ingested_at`` and image columns (a plan of all columns does)."""
    if plan.empty:
        return MEMBER_SCHEMA.empty_table()
    names = list(duck.describe(plan.files)) if plan.columns is None else list(plan.columns)
    sql = members_query(plan.sql, names, with_null=True)
    if sql is None:
        return MEMBER_SCHEMA.empty_table()
    table = duck.run(QueryPlan(sql, plan.params, plan.files, MEMBER_SCHEMA.names))
    return table.select(MEMBER_SCHEMA.names).cast(MEMBER_SCHEMA)


def partition_keys(members: pa.Table) -> np.ndarray:
    """``provider/dataset/task/variant`` of each member (object array)."""
    if members.num_rows == 0:
        return np.array([], object)
    joined = pc.binary_join_element_wise(*(members.column(c) for c in PARTITION_KEYS), "/")
    return np.asarray(joined.to_numpy(zero_copy_only=False), object)


def near_constant(phash: np.ndarray) -> np.ndarray:
    """Which pHashes (int64) are of near-constant images: fewer than :data:`MIN_PHASH_BITS` bits set.

    pHash sets a bit for each of its 64 DCT coefficients *above their median*, so an image with structure has
    about 32 bits set; a plain or single-colour image has all coefficients tied (0 or 1 bit set: 0x0, 0x8000...)
    and a smooth gradient a few. All such images are within a few bits of each other whatever they show."""
    return np.bitwise_count(np.asarray(phash, np.int64).view(np.uint64)) < MIN_PHASH_BITS


def member_labels(members: pa.Table, threshold: int, in_scope: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Cluster label of each member (members sharing a label are one cluster) and search statistics.

    ``members`` must all have a pHash. ``in_scope`` (bool per member) limits the search to pairs touching it."""
    phash = members.column("phash").to_numpy()
    distinct, inverse = np.unique(phash, return_inverse=True)
    sources = None
    if in_scope is not None:
        sources = np.zeros(len(distinct), bool)
        sources[inverse[in_scope]] = True
    i, j, _ = near_pairs(distinct, threshold, sources)
    labels = cluster_labels(len(distinct), i, j)[inverse]
    plan = plan_bands(len(distinct), threshold)
    stats = {"distinct_hashes": int(len(distinct)), "pairs": int(len(i)), "bands": list(plan.widths),
             "band_radius": plan.radius}  # fmt: skip
    return labels, stats


def member_order(members: pa.Table) -> np.ndarray:
    """Indices of ``members`` in keep order: ``ingested_at``, then upload order (``position``: partition files
    in name order, rows in file order), then partition, ``row_hash`` and column."""
    if members.num_rows == 0:
        return np.array([], np.int64)
    names = ("ingested_at", "position", *PARTITION_KEYS, "row_hash", "image_column")
    keys = [(c, "ascending", "at_end") for c in names]
    return pc.sort_indices(members, sort_keys=keys).to_numpy()


def build_clusters(members: pa.Table, labels: np.ndarray, in_scope: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Clusters of at least two members (holding an in-scope member when ``in_scope`` is given), largest first."""
    if members.num_rows == 0:
        return []
    sizes = np.bincount(labels)
    wanted = sizes >= 2
    if in_scope is not None:
        touched = np.zeros(len(sizes), bool)
        touched[labels[in_scope]] = True
        wanted &= touched
    order = member_order(members)
    order = order[wanted[labels[order]]]
    rows = members.take(pa.array(order)).to_pylist()
    keys = partition_keys(members)[order]
    grouped: dict[int, list[dict[str, Any]]] = {}
    for label, key, row in zip(labels[order].tolist(), keys, rows):
        first = grouped.setdefault(label, [])
        keeper = first[0]["_phash"] if first else row["phash"]
        first.append({
            "partition": key, "row_hash": row["row_hash"], "column": row["image_column"], "path": row["path"],
            "sha256": row["sha256"], "phash": to_hex(row["phash"]), "_phash": row["phash"],
            "ingested_at": row["ingested_at"].isoformat() if row["ingested_at"] else None,
            "distance": ((keeper ^ row["phash"]) & ((1 << 64) - 1)).bit_count(), "kept": not first,
        })  # fmt: skip
    clusters = []
    for members_ in grouped.values():
        for m in members_:
            m.pop("_phash")
        clusters.append({"size": len(members_), "distinct_assets": len({m["sha256"] for m in members_}),
                         "max_distance": max(m["distance"] for m in members_), "members": members_})  # fmt: skip
    clusters.sort(key=lambda c: (-c["size"], c["members"][0]["ingested_at"] or "", c["members"][0]["row_hash"]))
    for number, cluster in enumerate(clusters, 1):
        cluster["cluster"] = number
    return clusters


def near_duplicate_report(
    base: str, threshold: int = DEFAULT_THRESHOLD, scope: str | None = None, include_near_constant: bool = False
) -> dict[str, Any]:
    """Find clusters of near-duplicate images in the lake at ``base`` (a folder or ``s3://bucket/prefix``).

    Returns ``{"threshold", "scope", "images", "images_without_phash", "distinct_hashes", "pairs", "bands",
    "band_radius", "cluster_count", "images_in_clusters", "clusters": [{"cluster", "size", "distinct_assets",
    "max_distance", "members": [{"partition", "row_hash", "column", "path", "sha256", "phash" (16 hex digits),
    "ingested_at", "distance", "kept"}]}], "seconds", "images_near_constant", "near_constant_included"}``.
    Near-constant images (:func:`near_constant`: plain, single-colour) are left out of the clusters and counted
    unless ``include_near_constant``. Raises ``ValueError`` for a bad threshold or scope (``InvalidNameError``
    for a scope that is no partition key, ``UnknownPartitionError`` for a partition the lake does not have).
    """
    threshold = check_threshold(threshold)
    if scope is not None and not isinstance(scope, str):
        raise InvalidNameError(f"partition key {scope!r} must look like provider/dataset/task/variant")
    started = time.perf_counter()
    with DuckDBClient(base_path=base) as duck:
        if scope is not None:
            levels: dict[str, Any] = {f"{k}s": [v] for k, v in PartitionRef.parse(scope).as_dict().items()}
            duck.plan_retrieval(**levels, limit=0)
        all_members = members_of_plan(duck, duck.plan_retrieval())
    has_hash = all_members.column("phash").is_valid()
    members = all_members.filter(has_hash)
    flat = near_constant(members.column("phash").to_numpy()) if members.num_rows else np.array([], bool)
    if not include_near_constant:
        members = members.filter(pa.array(~flat))
    in_scope = partition_keys(members) == scope if scope is not None else None
    labels, stats = member_labels(members, threshold, in_scope)
    clusters = build_clusters(members, labels, in_scope)
    return {
        "threshold": threshold,
        "scope": scope,
        "images": int(members.num_rows),
        "images_without_phash": int(all_members.num_rows - int(pc.sum(has_hash).as_py() or 0)),
        "images_near_constant": int(flat.sum()),
        "near_constant_included": include_near_constant,
        **stats,
        "cluster_count": len(clusters),
        "images_in_clusters": sum(c["size"] for c in clusters),
        "clusters": clusters,
        "seconds": round(time.perf_counter() - started, 3),
    }


def thumbnail(data: bytes, side: int = 96, quality: int = 70) -> bytes:
    """A JPEG of at most ``side`` px a side of an image file's bytes, as displayed (EXIF orientation applied)."""
    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", (side, side))
        small = ImageOps.exif_transpose(im).convert("RGB")
        small.thumbnail((side, side))
        out = io.BytesIO()
        small.save(out, "JPEG", quality=quality)
        return out.getvalue()


def thumbnails_markdown(
    clusters: list[dict[str, Any]],
    read: Callable[[str], bytes],
    budget: int = 60_000,
    side: int = 96,
    per_cluster: int = 6,
) -> str:
    """A Markdown table, one cluster per row, its members side by side as data-URI JPEG thumbnails.

    The Dagster UI renders such images only inside the metadata's "Show Markdown" dialog and strips HTML, so
    the thumbnails are sized themselves (``side`` px). Rows are added while the text stays under ``budget``
    characters; a last line says how many clusters were left out. ``read(path)`` returns an asset's bytes."""
    width = min(per_cluster, max((c["size"] for c in clusters), default=1))
    header = "| cluster | " + " | ".join(f"member {k + 1}" for k in range(width)) + " |\n"
    header += "|---" * (width + 1) + "|\n"
    lines, used, shown = [], len(header), 0
    for cluster in clusters:
        cells = []
        for m in cluster["members"][:width]:
            try:
                uri = "data:image/jpeg;base64," + base64.b64encode(thumbnail(read(m["path"]), side)).decode()
                cells.append(f"![{m['partition']} {m['row_hash'][:8]} d={m['distance']}]({uri})")
            except Exception as exc:  # noqa: BLE001 - one unreadable asset must not hide the report
                cells.append(f"({m['path']}: {type(exc).__name__})")
        cells += [""] * (width - len(cells))
        more = f" (+{cluster['size'] - width})" if cluster["size"] > width else ""
        line = f"| {cluster['cluster']}: {cluster['size']} images{more} | " + " | ".join(cells) + " |\n"
        if used + len(line) > budget:
            break
        lines.append(line)
        used += len(line)
        shown += 1
    if not clusters:
        return "No near-duplicate clusters."
    rest = len(clusters) - shown
    return header + "".join(lines) + (f"\n{rest} more clusters not shown (size cap).\n" if rest else "")

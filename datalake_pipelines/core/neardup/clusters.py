"""Pairs of 64-bit hashes within a Hamming distance, and clusters of them, without comparing every pair.

Multi-index hashing (Norouzi, Punjani, Fleet, "Fast search in Hamming space with multi-index hashing", CVPR
2012): the 64 bits are split into ``m`` bands. If two hashes differ in at most ``D`` bits, then by the
pigeonhole principle some band differs in at most ``r = D // m`` bits (``m`` bands of more than ``r`` bits each
would add up to more than ``D``). So every pair within ``D`` is found by probing, for each hash and band, the
band values within ``r`` bits of its own in a direct-address table of that band (``2**bits`` buckets), and each
candidate is then checked on all 64 bits. ``m = D + 1`` (``r = 0``, exact band matches) is the classic banding;
it is cheap to probe but its narrow bands fill up with unrelated hashes once there are many, so ``m`` is chosen
by a cost model (probes plus expected candidates for uniformly spread hashes) among 3..D+1 bands. At 1M
hashes and ``D = 8`` that is 3 bands of 21-22 bits probed at radius 2 (measured in ``benchmarks/near_dups.py``).

Clusters are the connected components of the found pairs (``scipy.sparse.csgraph.connected_components``, a
union-find over the pair graph): a cluster may hold two members further apart than ``D`` linked through a third.
Memory is bounded: candidates are expanded in chunks of :data:`CHUNK` pairs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from math import comb

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

HASH_BITS = 64
MAX_THRESHOLD = 24  # beyond this a 64-bit pHash says little and any band scheme degrades to all pairs
MIN_BANDS = 3  # a band of more than 22 bits would need a table of more than 4M buckets
CHUNK = 4_000_000  # candidate pairs expanded at once (bounds memory: ~100 MB of index arrays)


@dataclass(frozen=True)
class BandPlan:
    """How the 64 bits are split: band widths (bits, low bits first) and the per-band probe radius."""

    widths: tuple[int, ...]
    radius: int

    @property
    def probes(self) -> int:
        """Probes per hash and band."""
        return sum(comb(self.widths[0], k) for k in range(self.radius + 1))


def check_threshold(threshold: object) -> int:
    """``threshold`` as an int in 0..:data:`MAX_THRESHOLD`; ``ValueError`` otherwise."""
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, np.integer))
        or not (0 <= int(threshold) <= MAX_THRESHOLD)
    ):
        raise ValueError(f"the near-duplicate threshold must be a whole number of bits from 0 to {MAX_THRESHOLD}, "
                         f"got {threshold!r}")  # fmt: skip
    return int(threshold)


def plan_bands(n: int, threshold: int) -> BandPlan:
    """The band split with the least expected work for ``n`` hashes within ``threshold`` bits."""
    best: tuple[float, BandPlan] | None = None
    for m in range(MIN_BANDS, max(MIN_BANDS, threshold + 1) + 1):
        widths = tuple(HASH_BITS // m + (1 if i < HASH_BITS % m else 0) for i in range(m))
        radius = threshold // m
        probes = sum(sum(comb(w, k) for k in range(radius + 1)) for w in widths)
        candidates = n * n / 2 * sum(sum(comb(w, k) for k in range(radius + 1)) / 2**w for w in widths)
        cost = n * probes + 4 * candidates  # a candidate (gather, XOR, popcount) costs a few probes
        if best is None or cost < best[0]:
            best = (cost, BandPlan(widths, radius))
    assert best is not None
    return best[1]


def _masks(bits: int, radius: int) -> np.ndarray:
    out = [0]
    for k in range(1, radius + 1):
        out += [sum(1 << b for b in chosen) for chosen in itertools.combinations(range(bits), k)]
    return np.array(out, dtype=np.int64)


def near_pairs(
    hashes: np.ndarray, threshold: int, sources: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)`` of ``hashes`` (int64 or uint64, shape ``(n,)``, **distinct** values) whose Hamming
    distance is at most ``threshold``, each pair once, with their distances: three int arrays of equal length.

    ``sources`` (bool, shape ``(n,)``) limits the search to pairs with at least one end among them (one
    partition against the rest); ``None`` is all pairs. Raises ``ValueError`` for a bad threshold.
    """
    threshold = check_threshold(threshold)
    u = np.ascontiguousarray(hashes).view(np.uint64)
    n = len(u)
    is_source = np.ones(n, bool) if sources is None else np.asarray(sources, bool)
    src_idx = np.nonzero(is_source)[0]
    found_i: list[np.ndarray] = []
    found_j: list[np.ndarray] = []
    if n < 2 or len(src_idx) == 0:
        empty = np.array([], np.int64)
        return empty, empty, empty
    plan = plan_bands(n, threshold)
    shift = 0
    for bits in plan.widths:
        band = ((u >> np.uint64(shift)) & np.uint64((1 << bits) - 1)).astype(np.int64)
        shift += bits
        order = np.argsort(band, kind="stable")
        counts = np.bincount(band, minlength=1 << bits)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        probe_from = band[src_idx]
        for mask in _masks(bits, plan.radius):
            keys = probe_from ^ mask
            hit_counts = counts[keys]
            hits = np.nonzero(hit_counts)[0]
            for i, j in _expand(src_idx[hits], starts[keys[hits]], hit_counts[hits], order):
                keep = (i != j) & (~is_source[j] | (i < j))  # each pair once
                i, j = i[keep], j[keep]
                close = np.bitwise_count(u[i] ^ u[j]) <= threshold
                found_i.append(i[close])
                found_j.append(j[close])
    i = np.concatenate(found_i) if found_i else np.array([], np.int64)
    j = np.concatenate(found_j) if found_j else np.array([], np.int64)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    pairs = np.unique(lo * n + hi)  # a pair close in several bands is found in each
    lo, hi = pairs // n, pairs % n
    return lo, hi, np.bitwise_count(u[lo] ^ u[hi]).astype(np.int64)


def _expand(src: np.ndarray, start: np.ndarray, count: np.ndarray, order: np.ndarray):
    """Yield ``(i, j)`` arrays: every source with every member of its bucket, at most ~CHUNK pairs at a time."""
    ends = np.cumsum(count)
    lo = 0
    while lo < len(src):
        base = ends[lo - 1] if lo else 0
        hi = max(lo + 1, int(np.searchsorted(ends, base + CHUNK, side="right")))
        c = count[lo:hi]
        total = int(c.sum())
        offsets = np.arange(total) - np.repeat(np.cumsum(c) - c, c)
        yield np.repeat(src[lo:hi], c), order[np.repeat(start[lo:hi], c) + offsets]
        lo = hi


def cluster_labels(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected-component label (int, shape ``(n,)``) of each of ``n`` nodes given edges ``i``-``j``."""
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1]

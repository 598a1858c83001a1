"""``datalake catalog verify``: every asset a partition (or the whole lake) references exists, at its size.

Works on a local lake and on an S3 lake (each partition's catalog files are fetched into a throwaway work
lake; assets are checked with one HEAD per distinct path, expected sizes come from the validated hash-index
cache). ``hashes=True`` also re-hashes every asset (streamed from S3), which reads every byte.
"""

from __future__ import annotations

import os
from typing import Any

from ..ingest.verify import CheckOutcome, check_asset_files, check_index_assets
from ..lake.layout import PartitionRef
from ..lake.open import open_lake
from .parts import contract_disagreements

INDEX = "(index)"  # the pseudo-partition name of the hash-index check


def _doc(
    ref: PartitionRef | str, outcome: CheckOutcome, contract_problems: list[str] | tuple[str, ...] = ()
) -> dict[str, Any]:
    return {
        "partition": ref if isinstance(ref, str) else ref.key,
        "ok": outcome.passed and not contract_problems,
        "references": outcome.checked,
        "missing": outcome.missing,
        "problems": [*outcome.problems, *contract_problems],
        "truncated": outcome.truncated,
    }


def verify_lake(
    base: str | os.PathLike, partition: str | None = None, hashes: bool = False, index: bool | None = None
) -> dict[str, Any]:
    """Check one partition (``provider/dataset/task/variant``) or every partition of the lake at ``base``.

    ``index`` (default: when no partition is given) also checks every hash-index entry, so assets that no
    partition references (``create_data_file``) are covered; it is reported under ``"index"`` (the shape of
    a partition's entry, ``references`` = index entries; ``None`` when not checked).

    Returns ``{"base", "ok", "hashes", "partitions": [{"partition", "ok", "references", "missing",
    "problems", "truncated"}], "references", "missing_count", "index"}``; ``ok`` is False when any reference
    is missing, outside the lake, of the wrong size or (with ``hashes``) of the wrong content, or when a part
    file holds a column in another type than the partition's schema contract (``problems`` names the file,
    column and both types), or when the row index disagrees with the part files (``problems`` says how).
    Raises ``InvalidNameError`` for a malformed ``partition`` and ``ValueError`` when that partition does not
    exist.
    """
    refs = [PartitionRef.parse(partition)] if partition else None
    lake = open_lake(base, create=False)
    known = lake.partitions()
    if refs is not None and refs[0] not in known:
        raise ValueError(f"no partition {partition} in {lake.base}")
    docs: list[dict[str, Any]] = []
    for ref in refs if refs is not None else known:
        with lake.partition_view(ref) as view:  # the lake itself, or a work copy of an S3 partition
            outcome = check_asset_files(
                view, ref, sha256_of=lake.asset_sha256, storage=lake.storage, sizes_of=lake.asset_sizes, hashes=hashes
            )
            problems = [*contract_disagreements(view, ref), *lake.row_index_problems(ref, view)]
            docs.append(_doc(ref, outcome, problems))
    index_doc: dict[str, Any] | None = None
    if index or (index is None and partition is None):
        with lake.hash_index() as hash_index:
            if hash_index is not None:
                outcome = check_index_assets(hash_index, lake.storage, lake.asset_sha256, hashes)
                index_doc = _doc(INDEX, outcome)
    shown = lake.base
    return {
        "base": shown,
        "ok": all(d["ok"] for d in docs) and (index_doc is None or index_doc["ok"]),
        "hashes": hashes,
        "partitions": docs,
        "references": sum(d["references"] for d in docs),
        "missing_count": sum(len(d["missing"]) for d in docs),
        "index": index_doc,
    }

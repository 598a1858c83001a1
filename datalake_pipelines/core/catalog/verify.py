"""``datalake catalog verify``: every asset a partition (or the whole lake) references exists, at its size.

Works on a local lake and on an S3 lake (each partition's catalog files are fetched into a throwaway work
lake; assets are checked with one HEAD per distinct path, expected sizes come from the validated hash-index
cache). ``hashes=True`` also re-hashes every asset (streamed from S3), which reads every byte.
"""

from __future__ import annotations

import os
from typing import Any

from ..ingest.hash_index import HashIndex
from ..ingest.verify import CheckOutcome, _local_sha256, check_asset_files, check_index_assets
from ..lake.layout import LakeLayout, PartitionRef
from ..storage.backends import LocalStorage, is_s3_uri
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
    column and both types). Raises ``InvalidNameError`` for a malformed ``partition`` and ``ValueError`` when
    that partition does not exist.
    """
    refs = [PartitionRef.parse(partition)] if partition else None
    docs: list[dict[str, Any]] = []
    index_doc: dict[str, Any] | None = None
    if is_s3_uri(str(base)):
        from ..lake.s3 import S3Lake
        from .s3 import S3Catalog

        s3_lake = S3Lake(str(base))
        known = S3Catalog(s3_lake.base, s3_lake.storage).select()
        if refs is not None and refs[0] not in known:
            raise ValueError(f"no partition {partition} in {s3_lake.base}")
        for ref in refs if refs is not None else known:
            with s3_lake.work_lake([f"verify-{ref.provider}"]) as work:
                s3_lake.fetch_partition(work, ref)
                outcome = check_asset_files(
                    work,
                    ref,
                    sha256_of=s3_lake.asset_sha256,
                    storage=s3_lake.storage,
                    sizes_of=s3_lake.asset_sizes,
                    hashes=hashes,
                )
                disagreements = contract_disagreements(work, ref)
            docs.append(_doc(ref, outcome, disagreements))
        if index or (index is None and partition is None):
            outcome = check_index_assets(s3_lake.index_cache().index, s3_lake.storage, s3_lake.asset_sha256, hashes)
            index_doc = _doc(INDEX, outcome)
        shown = s3_lake.base
    else:
        layout = LakeLayout(base, create=False)
        known = layout.list_partitions()
        if refs is not None and refs[0] not in known:
            raise ValueError(f"no partition {partition} in {layout.base}")
        docs = [
            _doc(ref, check_asset_files(layout, ref, hashes=hashes), contract_disagreements(layout, ref))
            for ref in refs or known
        ]
        if (index or (index is None and partition is None)) and layout.hash_index.exists():
            hash_index = HashIndex(layout.hash_index)
            try:
                sha = (lambda path: _local_sha256(layout, path)) if hashes else None
                index_doc = _doc(INDEX, check_index_assets(hash_index, LocalStorage(layout.base), sha, hashes))
            finally:
                hash_index.close()
        shown = str(layout.base)
    return {
        "base": shown,
        "ok": all(d["ok"] for d in docs) and (index_doc is None or index_doc["ok"]),
        "hashes": hashes,
        "partitions": docs,
        "references": sum(d["references"] for d in docs),
        "missing_count": sum(len(d["missing"]) for d in docs),
        "index": index_doc,
    }

"""``datalake catalog verify``: every asset a partition (or the whole lake) references exists, at its size.

Works on a local lake and on an S3 lake (each partition's catalog files are fetched into a throwaway work
lake; assets are checked with one HEAD per distinct path, expected sizes come from the validated hash-index
cache). ``hashes=True`` also re-hashes every asset (streamed from S3), which reads every byte.
"""

from __future__ import annotations

import os
from typing import Any

from .catalog import contract_disagreements
from .layout import LakeLayout, PartitionRef
from .storage import is_s3_uri
from .verify import CheckOutcome, check_asset_files


def _doc(ref: PartitionRef, outcome: CheckOutcome, contract_problems: list[str]) -> dict[str, Any]:
    return {
        "partition": ref.key,
        "ok": outcome.passed and not contract_problems,
        "references": outcome.checked,
        "missing": outcome.missing,
        "problems": [*outcome.problems, *contract_problems],
    }


def verify_lake(base: str | os.PathLike, partition: str | None = None, hashes: bool = False) -> dict[str, Any]:
    """Check one partition (``provider/dataset/task/variant``) or every partition of the lake at ``base``.

    Returns ``{"base", "ok", "hashes", "partitions": [{"partition", "ok", "references", "missing",
    "problems"}], "references", "missing_count"}``; ``ok`` is False when any reference is missing, outside
    the lake, of the wrong size or (with ``hashes``) of the wrong content, or when a part file holds a column in
    another type than the partition's schema contract (``problems`` names the file, column and both types).
    Raises ``InvalidNameError`` for a malformed ``partition`` and ``ValueError`` when that partition does not exist.
    """
    refs = [PartitionRef.parse(partition)] if partition else None
    docs: list[dict[str, Any]] = []
    if is_s3_uri(str(base)):
        from .catalog_s3 import S3Catalog
        from .s3_lake import S3Lake

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
        shown = str(layout.base)
    return {
        "base": shown,
        "ok": all(d["ok"] for d in docs),
        "hashes": hashes,
        "partitions": docs,
        "references": sum(d["references"] for d in docs),
        "missing_count": sum(len(d["missing"]) for d in docs),
    }

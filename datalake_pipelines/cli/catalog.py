"""``datalake catalog compact|rebuild|verify|versions``: catalog maintenance and its version history.

``verify`` checks that every asset the catalog references exists, at its size (``--hashes``: its content too);
it exits 0 when the lake is consistent, 1 when anything is missing or wrong (listed; ``--json``: the report).
"""

from __future__ import annotations

import argparse
from typing import Any

from .common import CliError, emit, lake_base, lake_of


def cmd_catalog_rebuild(args: argparse.Namespace) -> int:
    """Build catalog.duckdb again from scratch, as a Dagster run of the warehouse asset (recorded in
    $DAGSTER_HOME; its ``rebuild`` config): part files copied in or removed by hand are seen, a damaged file is
    replaced.

    The output names the database in the lake, as the run's log does: ``<folder>/catalog.duckdb``, or
    ``s3://bucket/prefix/catalog.duckdb`` (built in the cache folder and uploaded there)."""
    from ..core.catalog.query import DuckDBClient
    from ..core.lake.keys import DUCKDB
    from ..lib.resources import LakeResource
    from ..services.runner import get_instance, refresh_catalog_db

    base = str(lake_base(args))
    ok = refresh_catalog_db(get_instance(), LakeResource(base_path=base), rebuild=True)
    if not ok:
        raise CliError("the catalog.duckdb refresh run failed; see its logs in the Dagster UI")
    with DuckDBClient(base_path=base) as duck:
        parts = duck.retrieve_partitions()
    rows = int(parts["rows"].sum()) if len(parts) else 0
    database = f"{base.rstrip('/')}/{DUCKDB}"  # base: the resolved folder or the s3:// URI
    emit(
        args,
        {"database": str(database), "partitions": len(parts), "rows": rows},
        lambda: f"rebuilt {database}: {len(parts)} partitions, {rows} rows",
    )
    return 0


def cmd_catalog_compact(args: argparse.Namespace) -> int:
    """Compact one partition or all of them, through the lake (a folder in place; S3 in a work lake, published
    back with the replaced parts deleted), then refresh catalog.duckdb."""
    from ..core.lake.layout import PartitionRef
    from ..core.lake.locks import exclusive_lock

    lake = lake_of(args)
    refs = [PartitionRef.parse(args.partition)] if args.partition else lake.partitions()
    if args.partition and refs[0] not in lake.partitions():  # as catalog verify says it: a typo is no success
        raise CliError(f"no partition {refs[0].key} in {lake.base}")
    results = [lake.rebuild_partition(ref, args.batch_size) for ref in refs]
    if results:  # as delete and gc do: catalog.duckdb says what the partitions now hold
        with exclusive_lock(lake.warehouse_lock):
            lake.refresh_warehouse()
    docs = [
        {
            "partition": r.partition,
            "files_before": r.files_before,
            "rows": r.rows,
            "duplicates_dropped": r.duplicates_dropped,
            "path": f"{lake.catalog_uri(PartitionRef.parse(r.partition))}/{r.path.name}" if r.path else None,
        }
        for r in results
    ]
    emit(
        args,
        docs,
        lambda: (
            "\n".join(
                f"{d['partition']}: {d['files_before']} file(s) -> {d['rows']} rows, "
                f"{d['duplicates_dropped']} duplicate(s) dropped"
                for d in docs
            )
            or "no partitions"
        ),
    )
    return 0


def _verify_text(report: dict[str, Any]) -> str:
    lines = []
    for doc in report["partitions"] + ([report["index"]] if report.get("index") else []):
        others = [p for p in doc["problems"] if not p.endswith(" is missing")]
        more = f" (only the first {len(doc['problems'])} problems are listed)" if doc.get("truncated") else ""
        state = "ok" if doc["ok"] else f"{len(doc['missing'])} missing asset(s), {len(others)} other problem(s){more}"
        lines.append(f"{doc['partition']}: {doc['references']} reference(s), {state}")
        lines += [f"  missing: {path}" for path in doc["missing"][:50]]
        lines += [f"  {problem}" for problem in doc["problems"] if not problem.endswith(" is missing")]
    what = "sizes and hashes" if report["hashes"] else "existence and sizes"
    verdict = "clean" if report["ok"] else "PROBLEMS FOUND"
    lines.append(
        f"{report['base']}: {len(report['partitions'])} partition(s), {report['references']} reference(s), "
        f"{what} checked: {verdict}"
    )
    return "\n".join(lines)


def cmd_catalog_verify(args: argparse.Namespace) -> int:
    from ..core.catalog.verify import verify_lake

    report = verify_lake(lake_base(args), args.partition, args.hashes, args.index)
    emit(args, report, lambda: _verify_text(report))
    return 0 if report["ok"] else 1


def cmd_catalog_versions(args: argparse.Namespace) -> int:
    """The catalog versions recorded at each materialization (oldest first); ``--partition`` narrows them."""
    from ..core.lake.layout import PartitionRef
    from ..core.lifecycle.versions import list_versions

    if args.partition:
        PartitionRef.parse(args.partition)  # a malformed key is refused, not answered with nothing
    found = list_versions(lake_of(args).storage, args.partition)

    def text() -> str:
        if not found:
            return "no catalog version recorded" + (f" for {args.partition}" if args.partition else "")
        return "\n".join(
            f"{v['version_id']}  {v['time']}  {v['action']:<7}  {v['partition']}  {v['rows']} rows, "
            f"{len(v['files'])} files"
            for v in found
        )

    emit(args, found, text)
    return 0


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """``catalog compact|rebuild|verify|versions``."""
    catalog = subparsers.add_parser("catalog", help="catalog maintenance").add_subparsers(dest="action", required=True)
    p = catalog.add_parser("compact", parents=parents, help="merge part files into data.parquet")
    p.add_argument("--partition", help="provider/dataset/task/variant (default: every partition)")
    p.add_argument("--batch-size", type=int, default=10_000, help="rows read and written at a time (memory bound)")
    p.set_defaults(func=cmd_catalog_compact)
    p = catalog.add_parser("rebuild", parents=parents, help="build catalog.duckdb again from scratch")
    p.set_defaults(func=cmd_catalog_rebuild)
    p = catalog.add_parser("verify", parents=parents, help="check that every referenced asset exists (and matches)")
    p.add_argument("--partition", help="provider/dataset/task/variant (default: every partition)")
    p.add_argument("--hashes", action="store_true", help="also re-hash every asset (reads every byte)")
    p.add_argument(
        "--index",
        action="store_true",
        default=None,
        help="also check every hash-index entry (data files no partition references); default without --partition",
    )
    p.set_defaults(func=cmd_catalog_verify)
    p = catalog.add_parser(
        "versions", parents=parents, help="catalog versions (one per ingest, rebuild, delete): ids for --as-of"
    )
    p.add_argument("--partition", help="provider/dataset/task/variant (default: every partition)")
    p.set_defaults(func=cmd_catalog_versions)

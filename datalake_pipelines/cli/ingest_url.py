"""``datalake ingest-url URL``: stream a URL into S3 (``--to``) or stage it as a batch (``--stage``)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import CliError, UsageError, ask, emit, parse_pairs

GiB = 1024**3


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """``ingest-url``."""
    p = subparsers.add_parser(
        "ingest-url", parents=parents, help="stream a URL into S3 (--to) or stage a Parquet/zip URL (--stage)"
    )
    p.add_argument("url")
    p.add_argument("--to", help="s3://bucket/key: copy the body there, multipart from memory")
    p.add_argument("--stage", action="store_true", help="stage a .parquet or .zip URL as a batch of the lake")
    p.add_argument("--provider")
    p.add_argument("--dataset")
    p.add_argument("--task", default="raw")
    p.add_argument("--variant")
    p.add_argument("--meta", action="append", help="field=value (repeatable)")
    p.add_argument("--description", default="")
    p.add_argument("--job-id")
    p.add_argument("--kind", choices=["parquet", "zip"], help="default: from the URL's suffix")
    p.add_argument("--max-unzipped-gb", type=float, default=50.0, help="refuse zips that unpack to more")
    p.add_argument("--part-mb", type=int, default=16)
    p.add_argument("--concurrency", type=int, default=4)
    p.set_defaults(func=cmd_ingest_url)


def cmd_ingest_url(args: argparse.Namespace) -> int:
    """``--to``: stream the URL into one S3 object (multipart from memory). ``--stage``: make it a batch."""
    from ..core.storage.transfer import TransferError, TransferSettings
    from ..core.storage.url_stream import stream_url_to_s3

    if bool(args.to) == bool(args.stage):
        raise UsageError("pass either --to s3://bucket/key or --stage (into the lake at --base-path)")
    if args.to and not args.to.startswith("s3://"):
        raise UsageError("--to must be an s3://bucket/key URL")
    settings = TransferSettings(part_size=args.part_mb * 1024 * 1024, max_concurrency=args.concurrency)
    try:
        if args.stage:
            return _stage(args, settings)
        result = stream_url_to_s3(args.url, args.to, settings, progress=not args.json)
    except TransferError as exc:
        raise CliError(str(exc)) from None
    emit(
        args,
        result,
        lambda: (
            f"uploaded {result['bytes']} bytes to {result['s3_url']} in {result['parts']} parts, "
            f"sha256 {result['sha256']}, {result['mb_per_s']:.1f} MB/s"
        ),
    )
    return 0


def _stage(args: argparse.Namespace, settings) -> int:
    from ..core.ingest.remote_batch import detect_kind, stage_remote

    kind = detect_kind(args.url, args.kind, option="--kind")  # here, so a refusal names the flag
    batch = stage_remote(
        args.url,
        args.base_path,
        ask(args.provider, "--provider", "Provider"),
        ask(args.dataset, "--dataset", "Dataset"),
        task=args.task,
        variant=args.variant,
        meta=parse_pairs(args.meta or [], "--meta"),
        description=args.description,
        job_id=args.job_id,
        settings=settings,
        progress=not args.json,
        kind=kind,
        max_unzipped_bytes=int(args.max_unzipped_gb * GiB),
        workers=args.concurrency,
    )
    doc = {"job_id": batch.job_id, "staging_dir": batch.staging_uri, "kind": batch.kind, "rows": batch.rows}
    doc["source"] = batch.source

    def text() -> str:
        lines = [
            f"staged batch {batch.job_id} ({batch.rows} rows from a {batch.kind})",
            f"staging dir: {doc['staging_dir']}",
        ]
        lines.append(f"sha256 {batch.source['sha256']}, {batch.source['bytes']} bytes")
        lines += [f"refused zip member {r['name']!r}: {r['reason']}" for r in batch.refused]
        if batch.source.get("skipped"):
            lines.append(f"skipped {batch.source['skipped']} member(s) that are not images")
        return "\n".join(lines)

    emit(args, doc, text)
    return 0

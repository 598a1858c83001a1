"""Every ``datalake`` command, run as one user session on a local lake and on an S3 lake (moto's HTTP server),
with the same arguments: each must succeed on both and print the same answer once the backend's own words
(paths, ids, times) are masked. The command list comes from the parser itself, so a new command without a step
here fails :func:`test_the_session_runs_every_command`.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datalake_pipelines.cli.main import build_parser, main

RAW = "acme/shop/raw/image"
OCR = "acme/shop/caption/v1"


def leaf_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> set[str]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {" ".join(path)}
    return {leaf for name, sub in subs[0].choices.items() for leaf in leaf_commands(sub, (*path, name))}


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def web(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    sink = io.BytesIO()
    pq.write_table(pa.table({"text": ["a", "b"], "n": [1, 2]}), sink)
    (root / "t.parquet").write_bytes(sink.getvalue())
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def inputs(tmp_path, make_jpeg) -> dict[str, Path]:
    """The user's files: a folder of JPEGs, a Parquet file of OCR rows naming them, a folder of data units."""
    raw = tmp_path / "in" / "raw"
    for i in range(3):
        make_jpeg(raw / f"r{i}.jpg", size=(40 + i, 30), color=(60 * i, 90, 30))
    ocr = tmp_path / "in" / "ocr"
    paths = [make_jpeg(ocr / f"o{i}.jpg", size=(32, 24 + i), color=(10, 40 * i, 200)) for i in range(3)]
    frame = pd.DataFrame({"image": [p.name for p in paths], "text": ["invoice 1", "receipt", "invoice 2"]})
    frame.to_parquet(ocr / "data.parquet")
    units = tmp_path / "in" / "units"
    for i in range(2):
        make_jpeg(units / f"u{i}.jpg", color=(200, 10 * i, 10))
        (units / f"u{i}.json").write_text(json.dumps({"n": i}))
    return {"raw": raw, "ocr": ocr / "data.parquet", "units": units}


def session(base: str, inputs: dict[str, Path], out: Path, web: str, capsys) -> dict[str, Any]:
    """Run every command once against ``base``; return ``{command: [parsed --json output, ...]}``."""
    seen: dict[str, list[Any]] = {}

    def run(command: str, *args: str, ok: int = 0) -> Any:
        code = main(["--base-path", base, "--json", *command.split(), *args])
        captured = capsys.readouterr()
        assert code == ok, (base, command, args, captured.err)
        doc = json.loads(captured.out) if captured.out.strip() else None
        seen.setdefault(command, []).append(doc)
        return doc

    run("config provider create", "--name", "acme")
    run("config provider list")
    run("config task create", "--name", "caption", "--required-fields", "lang", "--allowed-values", "lang=en,ko")
    run("config task list")
    run("upload", "--type", "raw", "--data", str(inputs["raw"]), "--provider", "acme", "--dataset", "shop",
        "--job-id", "job-raw")  # fmt: skip
    run("upload", "--type", "task", "--data", str(inputs["ocr"]), "--provider", "acme", "--dataset", "shop",
        "--task", "caption", "--variant", "v1", "--meta", "lang=en", "--job-id", "job-ocr")  # fmt: skip
    run("process list")
    run("process start", "--num-proc", "1")
    run("process status", "job-raw")
    run("process status", "job-ocr")
    run("process list")
    run("catalog verify", "--hashes", "--index")
    run("catalog compact", "--partition", OCR)
    run("catalog rebuild")
    run("download", "--task", "caption", "--where", "text=receipt", "--format", "parquet", "--out", str(out / "dl"))
    task = run("export create", "--filter", "task=caption", "--file-type", "jsonl", "--destination", str(out / "ex"),
               "--now")  # fmt: skip
    run("export info", task["task_id"] if isinstance(task, dict) and "task_id" in task else task["id"])
    run("collection create", "--name", "units", "--provider", "acme", "--dataset", "shop",
        "--spec", "image:required:.jpg", "--spec", "annotation:required:.json")  # fmt: skip
    run("collection list")
    run("collection show", "units")
    run("collection upload", "--collection", "units", "--num-proc", "1", str(inputs["units"]))
    run("ingest-url", f"{web}/t.parquet", "--stage", "--provider", "acme", "--dataset", "remote", "--job-id", "job-url")
    run("process start", "--num-proc", "1")
    run("lineage", "job-raw")
    run("lineage", hashlib.sha256((inputs["raw"] / "r0.jpg").read_bytes()).hexdigest())
    run("lineage", "no-such-batch", ok=1)
    run("profile", "--partition", OCR)
    run("preview", "--partition", OCR, "--out", str(out / "gallery"))
    run("near-dups", "--out", str(out / "near"))
    run("delete", "--dataset", "acme/remote", "--dry-run")
    run("delete", "--dataset", "acme/remote")
    run("catalog versions")
    (first, *_) = run("catalog versions", "--partition", "acme/remote/raw/mixed")  # its ingest, then its deletion
    run("download", "--all", "--as-of", first["version_id"], "--out", str(out / "then"))
    assert "remote" in pq.read_table(out / "then" / "data.parquet").column("dataset").to_pylist()  # deleted, back
    run("delete", "--partition", RAW, "--dry-run")
    run("gc", "--grace", "0", "--retention", "0", "--dry-run")
    run("gc", "--grace", "0", "--retention", "0")
    run("catalog verify")
    return seen


ISO_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d[0-9.:+Z-]*")  # also DuckDB's "2026-01-02 03:04:05+00"
COMPACT_TIME = re.compile(r"\d{8}T\d{6,}")  # generated job ids and report names: 20260102T030405-<hex>
# uuids, hashes, and the 8-hex ids of collections and generated job ids
HEX_ID = re.compile(r"\b[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}\b|\b[0-9a-f]{12,}\b|\b[0-9a-f]{8}\b")
# values that differ by nature between two runs or two stores: durations, times as numbers, sizes of files
# holding times or ids, and where a local copy of a lake file is (the lake folder itself, or the S3 lake's cache)
VOLATILE_KEYS = {"seconds", "duration", "elapsed", "rate", "bytes_written", "size", "snapshot_id", "run_id",
                 "sampled_timestamp", "local_report_path", "deleted_at_ts", "retained_bytes", "time_ts",
                 "warehouse"}  # fmt: skip  # warehouse: the refresh summary (an S3 lake's names its local copy too)


def masked(doc: Any, words: dict[str, str]) -> Any:
    if isinstance(doc, dict):
        return {k: "<volatile>" if k in VOLATILE_KEYS else masked(v, words) for k, v in doc.items()}
    if isinstance(doc, list):
        return [masked(v, words) for v in doc]
    if isinstance(doc, str):
        for word, mask in words.items():
            doc = doc.replace(word, mask)
        return HEX_ID.sub("<id>", COMPACT_TIME.sub("<time>", ISO_TIME.sub("<time>", doc)))
    return doc


def test_the_session_runs_every_command():
    ran = {
        "config provider create", "config provider list", "config task create", "config task list", "upload",
        "process list", "process start", "process status", "catalog verify", "catalog compact", "catalog rebuild",
        "download", "export create", "export info", "collection create", "collection list", "collection show",
        "collection upload", "ingest-url", "profile", "preview", "near-dups", "delete", "gc", "lineage",
        "catalog versions",
    }  # fmt: skip
    assert leaf_commands(build_parser()) == ran


def test_every_command_answers_the_same_on_a_folder_and_on_s3(s3_lake, tmp_path, inputs, web, capsys):
    local = str(tmp_path / "lake")
    answers = {}
    for name, base in (("local", local), ("s3", s3_lake)):
        out = tmp_path / f"out-{name}"
        words = {base: "<lake>", str(out): "<out>", str(tmp_path): "<tmp>"}
        answers[name] = masked(session(base, inputs, out, web, capsys), words)
    assert set(answers["local"]) == set(answers["s3"])
    for command in answers["local"]:
        assert answers["local"][command] == answers["s3"][command], command

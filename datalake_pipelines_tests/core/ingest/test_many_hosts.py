"""Several hosts, one lake on a shared folder, the hash index in PostgreSQL (``DATALAKE_INDEX_URL``).

The hosts are separate processes, each with its own ``DATALAKE_CACHE_DIR``, lined up by a file both wait on so that
they store the same new images at the same moment.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.dataset as ds

from datalake_pipelines.client import DatalakeClient
from datalake_pipelines.core.catalog.verify import verify_lake
from datalake_pipelines.core.ingest.index_store import open_hash_index
from datalake_pipelines.core.ingest.pg_index import PgHashIndex
from datalake_pipelines.core.lake.layout import LakeLayout

PROJECT_ROOT = Path(__file__).resolve().parents[3]

# One host: claim its batch, open the index (connections up before the start line), wait for the line, process.
HOST = r"""
import json, sys, time
from pathlib import Path
from datalake_pipelines.core.ingest.processing import BatchProcessor, ProcessOptions, claim_batch
from datalake_pipelines.core.lake.layout import LakeLayout

base, job_id, ready, go = sys.argv[1:5]
layout = LakeLayout(base)
assert claim_batch(layout, job_id)
processor = BatchProcessor(layout, ProcessOptions(num_proc=2, batch_size=64))
processor.index.get_many(["0" * 64])
inserts = []
add_many = processor.index.add_many
def counted(entries):
    entries = list(entries)
    added = add_many(entries)
    inserts.append((len({e.sha256 for e in entries}), added))
    return added
processor.index.add_many = counted
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.0005)
result = processor.process(job_id)
lost = sum(sent - added for sent, added in inserts)
print(json.dumps({"status": result.status, "error": result.error, "new": result.images_new, "lost": lost}))
"""


def images(folder: Path, n: int, seed: str) -> list[Path]:
    """``n`` distinct small JPEGs (content from ``seed``: the same seed gives the same bytes)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        noise = hashlib.shake_256(f"{seed}-{i}".encode()).digest(32 * 24 * 3)
        path = folder / f"{seed}-{i}.jpg"
        Image.frombytes("RGB", (32, 24), noise).save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def catalog(base: Path) -> list[dict]:
    return ds.dataset(base / "catalog", partitioning="hive").to_table().to_pylist()


def asset_files(base: Path) -> list[Path]:
    return sorted(p for p in (base / "assets").rglob("*") if p.is_file())


def test_ingest_with_the_index_in_postgres(tmp_path, monkeypatch, pg_url):
    monkeypatch.setenv("DATALAKE_INDEX_URL", pg_url)
    base = tmp_path / "lake"
    client = DatalakeClient(base, num_proc=2, batch_size=4, progress=False)
    pics = images(tmp_path / "in", 6, "e2e")
    client.upload_raw_data(pd.DataFrame({"image": [str(p) for p in [*pics, pics[0]]]}), "inhouse", "scans")
    [first] = client.process_pending()
    assert (first.status, first.images_new, first.images_deduplicated) == ("done", 6, 1)
    client.upload_raw_data(pd.DataFrame({"image": [str(p) for p in pics[:3]]}), "inhouse", "again")
    [second] = client.process_pending()
    assert (second.status, second.images_new, second.images_deduplicated) == ("done", 0, 3)

    rows = catalog(base)
    assert len(rows) == 10 and len(asset_files(base)) == 6
    sha_of = {hashlib.sha256(p.read_bytes()).hexdigest(): p for p in pics}
    assert {r["image_sha256"] for r in rows} == set(sha_of)
    assert all((base / r["image"]).is_file() and "dataset=scans/" in r["image"] for r in rows)
    layout = LakeLayout(base)
    assert not layout.hash_index.exists()  # no SQLite file in the lake
    index = open_hash_index(layout)
    assert isinstance(index, PgHashIndex) and index.count() == 6
    index.close()
    report = verify_lake(base, hashes=True)
    assert report["ok"], report
    assert report["index"]["references"] == 6
    assert client.lake.refresh_warehouse()  # catalog.duckdb's hash_index table copied from PostgreSQL
    with duckdb.connect(str(client.lake.duckdb_file), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM hash_index").fetchone() == (6,)


def test_switching_a_sqlite_lake_to_postgres_keeps_dedup(tmp_path, monkeypatch, pg_url):
    """The PostgreSQL schema created for a lake with a SQLite index starts with its rows: the same images
    ingested into another dataset after the switch are found, not stored again."""
    monkeypatch.delenv("DATALAKE_INDEX_URL", raising=False)
    base = tmp_path / "lake"
    client = DatalakeClient(base, num_proc=2, batch_size=4, progress=False)
    pics = images(tmp_path / "in", 5, "switch")
    client.upload_raw_data(pd.DataFrame({"image": [str(p) for p in pics]}), "inhouse", "before")
    assert client.process_pending()[0].images_new == 5
    assert LakeLayout(base).hash_index.is_file() and len(asset_files(base)) == 5

    monkeypatch.setenv("DATALAKE_INDEX_URL", pg_url)
    client.upload_raw_data(pd.DataFrame({"image": [str(p) for p in pics]}), "inhouse", "after")
    [after] = client.process_pending()
    assert (after.status, after.images_new, after.images_deduplicated) == ("done", 0, 5)
    assert len(asset_files(base)) == 5  # no second copies
    index = open_hash_index(LakeLayout(base))
    assert isinstance(index, PgHashIndex) and index.count() == 5
    index.close()
    assert verify_lake(base, hashes=True)["ok"]


def run_hosts(base: Path, jobs: list[str], tmp: Path, pg_url: str) -> list[dict]:
    """Each job processed by its own process (its own cache folder), all released at one moment."""
    tmp.mkdir(parents=True)
    go = tmp / "go"
    procs, ready = [], []
    for k, job in enumerate(jobs):
        ready.append(tmp / f"ready-{k}")
        env = {
            **os.environ,
            "DATALAKE_INDEX_URL": pg_url,
            "DATALAKE_CACHE_DIR": str(tmp / f"cache-host{k}"),
            "PYTHONPATH": str(PROJECT_ROOT),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", HOST, str(base), job, str(ready[-1]), str(go)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in ready):
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    go.touch()
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def test_concurrent_first_stores_make_one_asset(tmp_path, pg_url):
    base = tmp_path / "lake"
    client = DatalakeClient(base, num_proc=1, batch_size=64, progress=False)
    lost = 0
    expected: dict[str, set[str]] = defaultdict(set)  # sha256 -> the batches that hold it
    for round_, datasets in enumerate([("cam_a", "cam_b"), ("cam", "cam"), ("cam_a", "cam_b")]):
        pics = images(tmp_path / f"in{round_}", 12, f"round{round_}")
        frame = pd.DataFrame({"image": [str(p) for p in pics]})
        # two partitions (two datasets, or one dataset in two variants): no partition lock lines the hosts up
        jobs = [
            client.upload_raw_data(frame, "inhouse", ds_, variant=f"v{k}", job_id=f"r{round_}-host{k}")[1]
            for k, ds_ in enumerate(datasets)
        ]
        hosts = run_hosts(base, jobs, tmp_path / f"hosts{round_}", pg_url)
        assert [h["status"] for h in hosts] == ["done", "done"], hosts
        assert sum(h["new"] for h in hosts) == 12, hosts  # each image stored new once, by whichever host won
        lost += sum(h["lost"] for h in hosts)
        for p in pics:
            expected[hashlib.sha256(p.read_bytes()).hexdigest()].update(jobs)
    assert lost > 0  # the hosts really raced: some inserts lost to the other host's

    rows = catalog(base)
    paths: dict[str, set[str]] = defaultdict(set)
    batches: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        paths[r["image_sha256"]].add(r["image"])
        batches[r["image_sha256"]].add(r["_batch_id"] if "_batch_id" in r else r["batch_id"])
    assert len(rows) == 72 and batches == expected  # two rows per image, one per host's batch
    assert all(len(p) == 1 for p in paths.values()), paths  # both rows point at one asset
    files = asset_files(base)
    assert len(files) == 36  # exactly one asset file per image: a loser's own copy is gone
    assert {str(f.relative_to(base)) for f in files} == {next(iter(p)) for p in paths.values()}
    index = open_hash_index_for(base, pg_url)
    assert index.count() == 36
    assert {e.path for e in index.get_many(sorted(paths)).values()} == {next(iter(p)) for p in paths.values()}
    index.close()
    os.environ["DATALAKE_INDEX_URL"] = pg_url
    try:
        report = verify_lake(base)
    finally:
        del os.environ["DATALAKE_INDEX_URL"]
    assert report["ok"], report


def open_hash_index_for(base: Path, pg_url: str) -> PgHashIndex:
    from datalake_pipelines.core.ingest.pg_index import read_schema

    return PgHashIndex(pg_url, read_schema(LakeLayout(base).index_dir / "pg_schema"), create=False)

"""Lineage on both backends: a row uploaded by each method (client DataFrame and folder, CLI, hand drop, ingest-url
of a Parquet file and a zip, collection) names its source, SHA-256, method and Dagster run; an asset shared by two
datasets lists the rows of both; an unknown id is a clear error (exit 1)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
import zipfile
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from datalake_pipelines.cli.main import main
from datalake_pipelines.core.lifecycle.lineage import LineageNotFound
from datalake_pipelines.services.runner import start_pending

RED = (200, 10, 10)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing_digest(folder: Path, skip: frozenset[str] = frozenset()) -> str:
    """The documented folder digest, computed independently: sorted ``path<TAB>size`` lines."""
    lines = sorted(
        f"{p.relative_to(folder).as_posix()}\t{p.stat().st_size}\n"
        for p in folder.rglob("*")
        if p.is_file() and p.name not in skip
    )
    return hashlib.sha256("".join(lines).encode()).hexdigest()


@pytest.fixture
def http_dir(tmp_path):
    """A folder served by ``http.server`` on 127.0.0.1; yields (folder, base URL)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def batch_in(doc: dict, dataset: str) -> dict:
    """The batch of the one row of ``doc`` in ``dataset`` (a row_hash names content: equal rows of two datasets
    share it, and lineage lists both)."""
    [row] = [r for r in doc["rows"] if r["dataset"] == dataset]
    return row["batch"]


def test_lineage_names_source_sha256_method_and_run_for_every_upload_method(
    client, base, make_jpeg, tmp_path, http_dir, capsys
):
    lake = client.lake
    # client: a DataFrame and a folder
    _, df_job = client.upload_raw_data(pd.DataFrame({"text": ["from a dataframe"]}), "inhouse", "frame")
    images = tmp_path / "images"
    make_jpeg(images / "red.jpg", color=RED)
    make_jpeg(images / "sub" / "green.jpg", color=(10, 200, 10))
    _, folder_job = client.upload_raw_data(images, "inhouse", "folder")
    # CLI: a Parquet file
    pq_file = tmp_path / "cli.parquet"
    pd.DataFrame({"text": ["from the cli", "again"]}).to_parquet(pq_file)
    assert main(["--base-path", base, "upload", "--type", "raw", "--data", str(pq_file), "--provider", "inhouse",
                 "--dataset", "cli", "--job-id", "cli-job"]) == 0  # fmt: skip
    # hand drop: the same red image as the folder upload, written straight into staging/pending
    drop = tmp_path / "drop"
    make_jpeg(drop / "red.jpg", color=RED)
    (drop / "_metadata.json").write_text(json.dumps({"provider": "inhouse", "dataset": "dropped"}))
    for f in drop.iterdir():
        lake.storage.write_bytes(f"staging/pending/drop-job/{f.name}", f.read_bytes())
    # ingest-url: a Parquet file and a zip from a local HTTP server
    served, url = http_dir
    pd.DataFrame({"text": ["from a url"]}).to_parquet(served / "remote.parquet")
    with zipfile.ZipFile(served / "images.zip", "w") as zf:
        zf.write(make_jpeg(tmp_path / "blue.jpg", color=(10, 10, 200)), "blue.jpg")
    for name, dataset in (("remote.parquet", "urlpq"), ("images.zip", "urlzip")):
        args = ["--base-path", base, "ingest-url", f"{url}/{name}", "--stage", "--provider", "inhouse"]
        assert main([*args, "--dataset", dataset, "--job-id", f"{dataset}-job"]) == 0
    # collection: a unit of an image and its annotation
    client.create_data_collection("docs", "inhouse", "docs", [
        {"name": "image", "is_required": True, "extensions": [".jpg"]},
        {"name": "annotation", "is_required": True, "extensions": [".json"]},
    ])  # fmt: skip
    units = tmp_path / "units"
    make_jpeg(units / "u1.jpg", color=(90, 90, 90))
    (units / "u1.json").write_text('{"label": "cat"}')
    report = client.upload_collection(units, "docs")
    coll_job = report["upload"]["batches"][0]["job_id"]

    outcomes = start_pending(base, dg.DagsterInstance.ephemeral(), quiet_seconds=0.2, echo=lambda _: None)
    runs = {o["job_id"]: o["run_id"] for o in outcomes}
    assert {o["state"] for o in outcomes} == {"done"} and len(runs) == 7, outcomes
    capsys.readouterr()

    def batch_of_row(dataset: str) -> tuple[str, dict]:
        client.download({"datasets": [dataset]}, "parquet", tmp_path / f"dl-{dataset}")
        table = pd.read_parquet(tmp_path / f"dl-{dataset}" / "data.parquet")
        row_hash = table["row_hash"].iloc[0]
        doc = client.lineage(row_hash)
        assert doc["kind"] == "row" and doc["rows"][0]["row_hash"] == row_hash
        return row_hash, batch_in(doc, dataset)

    expected = {
        "frame": (df_job, "client", "table", None),
        "folder": (folder_job, "client", "folder", str(images.resolve())),
        "cli": ("cli-job", "cli", "file", str(pq_file.resolve())),
        "dropped": ("drop-job", "hand_drop", "folder", "staging/pending/drop-job"),
        "urlpq": ("urlpq-job", "ingest_url", "url", None),
        "urlzip": ("urlzip-job", "ingest_url", "url", None),
        "docs": (coll_job, "collection", "collection", str(units.resolve())),
    }
    digests = {
        "folder": listing_digest(images),
        "cli": sha(pq_file),
        "dropped": listing_digest(drop),
        "urlpq": sha(served / "remote.parquet"),
        "urlzip": sha(served / "images.zip"),
    }
    for dataset, (job, method, kind, path) in expected.items():
        row_hash, batch = batch_of_row(dataset)
        src = batch["source"]
        assert (batch["batch_id"], src["method"], src["kind"]) == (job, method, kind), dataset
        assert batch["run_id"] == runs[job] and batch["status"] == "done", dataset
        assert batch["partition"] == f"inhouse/{dataset}/raw/" + batch["partition"].rsplit("/", 1)[1]
        assert batch["part_file"] and f"part-{job}" in batch["part_file"]
        if path is not None:
            assert src["path"] == path, dataset
        if dataset.startswith("url"):
            assert src["url"].endswith("remote.parquet" if dataset == "urlpq" else "images.zip")
        if dataset in digests:
            assert src["sha256"] == digests[dataset], dataset
        else:
            assert len(src["sha256"]) == 64
        if method != "hand_drop":
            assert src["host"] and src["user"] and src["staged_at"], dataset
        # the CLI prints the same chain
        assert main(["--base-path", base, "lineage", row_hash]) == 0
        out = capsys.readouterr().out
        assert f"batch {job} (done)" in out and f"method: {method}" in out and runs[job] in out

    # a batch id: its source and run, and its rows
    batch_doc = client.lineage("cli-job")
    assert batch_doc["kind"] == "batch" and batch_doc["rows_in_catalog"] == 2
    assert batch_doc["batch"]["source"]["sha256"] == sha(pq_file)
    assert main(["--base-path", base, "lineage", "--json", "cli-job"]) == 0
    assert json.loads(capsys.readouterr().out)["batch"]["run_id"] == runs["cli-job"]

    # an asset: the red image is in the folder upload and the hand drop
    red_sha = sha(images / "red.jpg")
    assert red_sha == sha(drop / "red.jpg")
    asset = client.lineage(red_sha)
    assert asset["kind"] == "asset" and asset["datasets"] == ["inhouse/dropped", "inhouse/folder"]
    assert {r["batch"]["source"]["method"] for r in asset["rows"]} == {"client", "hand_drop"}
    assert {r["column"] for r in asset["rows"]} == {"image"}
    assert {r["path"] for r in asset["rows"]} == {asset["asset"]["path"]} and asset["asset"]["method"] is None
    assert main(["--base-path", base, "lineage", red_sha]) == 0
    assert "2 row(s) in 2 dataset(s): inhouse/dropped, inhouse/folder" in capsys.readouterr().out

    # unknown ids
    with pytest.raises(LineageNotFound):
        client.lineage("0" * 64)
    assert main(["--base-path", base, "lineage", "no-such-batch"]) == 1
    assert "'no-such-batch' is no row_hash, asset sha256 or batch id" in capsys.readouterr().err


def test_catalog_partition_metadata_links_batches_to_the_run(client, base):
    instance = dg.DagsterInstance.ephemeral()
    _, job = client.upload_raw_data(pd.DataFrame({"text": ["a"]}), "inhouse", "frame")
    [outcome] = start_pending(base, instance, echo=lambda _: None)
    event = instance.get_latest_materialization_event(dg.AssetKey("catalog_partition"))
    assert event is not None and event.run_id == outcome["run_id"]
    table = event.asset_materialization.metadata["batch_lineage"]
    [record] = [r.data for r in table.records]
    assert record["batch_id"] == job and record["run_id"] == outcome["run_id"]
    assert record["method"] == "client" and len(record["sha256"]) == 64 and record["status"] == "done"


def test_an_asset_only_create_data_file_stored_has_no_row_but_its_entry(client, base, make_jpeg, tmp_path, capsys):
    stored = client.create_data_file(make_jpeg(tmp_path / "x.jpg", color=(1, 2, 3)))
    doc = client.lineage(stored["sha256"])
    assert doc["kind"] == "asset" and doc["rows"] == [] and doc["datasets"] == []
    assert doc["asset"]["method"] == "create_data_file" and doc["asset"]["path"] == stored["path"]
    assert main(["--base-path", base, "lineage", stored["sha256"]]) == 0
    out = capsys.readouterr().out
    assert "0 row(s) in 0 dataset(s)" in out and "first by create_data_file" in out


def test_an_asset_is_found_whatever_its_column_is_called(client, make_jpeg, tmp_path):
    image = make_jpeg(tmp_path / "q.jpg", color=(7, 8, 9))
    client.upload_raw_data(pd.DataFrame({"it's": [str(image)]}), "inhouse", "quoted", image_columns=["it's"])
    assert [r.status for r in client.process_pending()] == ["done"]
    doc = client.lineage(sha(image))
    assert [(r["column"], r["dataset"]) for r in doc["rows"]] == [("it's", "quoted")]
    assert doc["rows"][0]["batch"]["run_id"] is None  # processed outside Dagster: no run

"""One contract for the output side, run against a local lake and an S3 lake (moto's real HTTP server):
downloads in every format, exports in every file type (also to an ``s3://`` destination), collections
(create, list, upload, process), ``ingest-url`` staging and the client API round trip. Rows and image bytes
must come back exactly, whichever backend holds the lake.
"""

from __future__ import annotations

import functools
import io
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datalake_pipelines import DatalakeClient, DuckDBClient
from datalake_pipelines.cli.main import main
from datalake_pipelines.core.export.reader import iter_export_batches
from datalake_pipelines.core.export.tasks import FILE_TYPES, ExportError, run_export
from datalake_pipelines.core.ingest.remote_batch import stage_url
from datalake_pipelines.core.storage.backends import S3Storage, download_tree, split_s3_uri

BACKENDS = ["local", "s3"]


@pytest.fixture(params=BACKENDS)
def base(request, tmp_path) -> str:
    """The lake base: a folder, or ``s3://<fresh bucket>/lake`` on the moto server."""
    if request.param == "s3":
        return request.getfixturevalue("s3_lake")
    return str(tmp_path / "lake")


@pytest.fixture
def filled(base, tmp_path, make_jpeg):
    """A lake holding 4 OCR rows with real JPEGs; returns (client, {row id: row}, {row id: image bytes})."""
    client = DatalakeClient(base, num_proc=1, batch_size=2, progress=False)
    paths = [make_jpeg(tmp_path / "src" / f"{i}.jpg", size=(30 + i, 20)) for i in range(4)]
    frame = pd.DataFrame(
        {
            "image": [str(p) for p in paths],
            "uid": [f"u{i}" for i in range(4)],
            "score": [3, -1, 2**40, 0],
            "note": ["a,b", "Seoul, Korea", None, "é 한"],
        }
    )
    client.upload_task_data(frame, "aihub", "docs", "ocr", "w", meta={"lang": "ko", "src": "real"})
    assert [r.status for r in client.process_pending()] == ["done"]
    rows = {r["uid"]: {k: r[k] for k in ("uid", "score", "note")} for r in frame.to_dict("records")}
    rows["u2"]["note"] = None
    images = {f"u{i}": p.read_bytes() for i, p in enumerate(paths)}
    return client, rows, images


def plain(batches) -> list[dict]:
    return sorted(
        ({k: r[k] for k in ("uid", "score", "note")} for b in batches for r in b.to_pylist()), key=lambda r: r["uid"]
    )


def image_bytes(batches, column: str = "image") -> dict[str, bytes]:
    out = {}
    for batch in batches:
        for row in batch.to_pylist():
            value = row[column]
            out[row["uid"]] = value["bytes"] if isinstance(value, dict) else value
    return out


# downloads -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["parquet", "arrow", "hf"])
def test_download_each_format(filled, tmp_path, fmt):
    client, rows, images = filled
    manifest = client.download({"tasks": ["ocr"], "where": {"lang": "ko"}}, fmt, tmp_path / "out")
    assert manifest["rows"] == 4 and [p["key"] for p in manifest["partitions"]] == ["aihub/docs/ocr/w"]
    assert manifest["partitions"][0]["rows"] == 4
    data = {"parquet": "data.parquet", "arrow": "data.arrow"}.get(fmt, "")
    batches = list(iter_export_batches(tmp_path / "out" / data))
    assert plain(batches) == sorted(rows.values(), key=lambda r: r["uid"])
    if fmt == "hf":  # the stored asset's bytes, read from the lake (S3: GET per object)
        assert image_bytes(batches) == images


def test_cli_download_and_search(filled, tmp_path, capsys):
    client, rows, _ = filled
    out = tmp_path / "cli"
    args = ["--base-path", str(client.base_path), "download", "--task", "ocr", "--format", "parquet", "--json"]
    assert main([*args, "--where", "note=Seoul, Korea", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 1
    assert pq.read_table(out / "data.parquet").column("uid").to_pylist() == ["u1"]


# exports ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("file_type", FILE_TYPES)
def test_export_each_file_type_through_the_job(filled, tmp_path, file_type):
    client, rows, images = filled
    task = client.create_export(tmp_path / "exports", filter={"lang": ["ko"], "score": [3, 0]}, file_type=file_type,
                                wait=True)  # fmt: skip
    info = client.export_info(task)
    assert info["task_status"] == "done", info
    assert info["process_info"]["total_data_count"] == 4 and info["process_info"]["total_filter_count"] == 2
    batches = list(iter_export_batches(info["export_path"], batch_size=1))
    assert plain(batches) == [rows["u0"], rows["u3"]]
    if file_type in ("hf", "hdf5"):
        assert image_bytes(batches) == {k: images[k] for k in ("u0", "u3")}


def _bucket_keys(uri: str) -> list[str]:
    bucket, prefix = split_s3_uri(uri)
    found = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted(o["Key"] for o in found)


@pytest.mark.parametrize("file_type", ["parquet", "hf", "hdf5"])
def test_export_to_an_s3_destination(filled, s3_lake, tmp_path, file_type):
    client, rows, images = filled
    destination = f"{s3_lake.rsplit('/', 1)[0]}/exports/run"
    result = run_export(client.lake_ref, {"destination": destination, "export_all": True, "file_type": file_type},
                        name="e1")  # fmt: skip
    assert result["path"] == f"{destination}/e1"
    storage = S3Storage(destination)
    manifest = json.loads(storage.read_bytes("e1/export.json"))
    assert manifest["rows"] == 4 and sorted(manifest["files"]) == sorted(
        o.key.removeprefix("e1/") for o in storage.list("e1") if o.key != "e1/export.json"
    )
    local = tmp_path / "fetched"
    download_tree(storage, "e1", local)
    batches = list(iter_export_batches(local))
    assert plain(batches) == sorted(rows.values(), key=lambda r: r["uid"])
    if file_type != "parquet":
        assert image_bytes(batches) == images
    scratch = Path(tmp_path / "lake-cache")  # the S3 scratch is cleaned up
    assert not [p for p in scratch.rglob("*") if p.is_file() and "exports" in p.parts]

    with pytest.raises(ExportError) as err:  # an existing export is never overwritten
        run_export(client.lake_ref, {"destination": destination, "export_all": True}, name="e1")
    assert err.value.code == "UNWRITABLE_DESTINATION"


def test_cli_export_now_to_an_s3_destination(filled, s3_lake, capsys):
    client, rows, _ = filled
    destination = f"{s3_lake.rsplit('/', 1)[0]}/exports/cli/"
    args = ["--base-path", str(client.base_path), "export", "create", "--filter", "note=Seoul, Korea"]
    assert main([*args, "--file-type", "jsonl", "--destination", destination, "--now", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["task_status"] == "done" and info["export_path"].startswith(destination.rstrip("/") + "/export-")
    name = info["export_path"].rsplit("/", 1)[1]
    storage = S3Storage(destination)
    assert json.loads(storage.read_bytes(f"{name}/export.json"))["rows"] == 1
    assert json.loads(storage.read_bytes(f"{name}/data.jsonl"))["uid"] == "u1"


def test_failed_s3_export_leaves_nothing(filled, s3_lake):
    client, _, _ = filled
    destination = f"{s3_lake.rsplit('/', 1)[0]}/exports/failed"

    def explode(info):
        if info["scan_data_count"] >= 2:
            raise RuntimeError("disk on fire")

    with pytest.raises(ExportError) as err:
        run_export(client.lake_ref, {"destination": destination, "export_all": True, "options": {"batch_size": 2}},
                   explode, name="e2")  # fmt: skip
    assert err.value.code == "EXPORT_FAILED"
    assert _bucket_keys(destination) == []


def test_export_to_a_missing_bucket_is_refused(filled, s3_lake):
    client, _, _ = filled
    with pytest.raises(ExportError) as err:
        run_export(client.lake_ref, {"destination": "s3://no-such-bucket-here/x", "export_all": True})
    assert err.value.code == "UNWRITABLE_DESTINATION"


# collections -----------------------------------------------------------------------------------------------
def test_collections_create_upload_process(base, tmp_path, make_jpeg, capsys):
    client = DatalakeClient(base, num_proc=1, batch_size=2, progress=False)
    specs = [
        {"name": "image", "is_required": True, "extensions": [".jpg"]},
        {"name": "annotation", "is_required": True, "extensions": [".json"]},
    ]
    created = client.create_data_collection("receipts", "inhouse", "docs", specs)
    assert [c["name"] for c in client.list_data_collection()] == ["receipts"]
    assert client.get_data_collection(created["id"])["project"]["variant"] == "receipts"
    assert main(["--base-path", base, "collection", "show", "receipts", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == created["id"]

    folder = tmp_path / "units"
    images = {}
    for i in range(3):
        images[f"r{i}"] = make_jpeg(folder / f"r{i}.jpg").read_bytes()
        (folder / f"r{i}.json").write_text(json.dumps({"n": i}))
    report = client.upload_collection(folder, "receipts")
    assert report["upload"]["status"] == "done" and report["upload"]["uploaded"] == 3
    assert all(b["staging_dir"].startswith(base) for b in report["upload"]["batches"])
    assert Path(report.get("local_report_path") or report["report_path"]).is_file()
    assert {r.status for r in client.process_pending()} == {"done"}
    with DuckDBClient(base_path=base) as duck:
        table = duck.retrieve_with_existing_cols(variants="receipts", as_arrow=True)
    assert sorted(table.column("origin_file_stem").to_pylist()) == ["r0", "r1", "r2"]
    assert sorted(json.loads(a)["n"] for a in table.column("annotation").to_pylist()) == [0, 1, 2]
    got = client.download({"variants": "receipts"}, "hf", tmp_path / "units-hf")
    assert got["rows"] == 3
    stems = {r["origin_file_stem"]: r["image"]["bytes"] for b in iter_export_batches(tmp_path / "units-hf")
             for r in b.to_pylist()}  # fmt: skip
    assert stems == images

    again = client.upload_collection(folder, "receipts")  # the units are in the catalog: skipped, nothing staged
    assert again["upload"]["skipped"] == 3 and again["upload"]["batches"] == []
    fresh = DatalakeClient(base, progress=False)  # another client (another machine) sees the collection
    assert fresh.get_data_collection("receipts")["id"] == created["id"]


# ingest-url ------------------------------------------------------------------------------------------------
class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    sink = io.BytesIO()
    pq.write_table(pa.table({"text": list("abc"), "n": [1, 2, 3]}), sink)
    (root / "t.parquet").write_bytes(sink.getvalue())
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_ingest_url_staging(base, web):
    uri, job = stage_url(f"{web}/t.parquet", base, "aihub", "remote")
    assert uri.endswith(f"staging/pending/{job}") and uri.startswith(base)
    client = DatalakeClient(base, num_proc=1, progress=False)
    assert [r.status for r in client.process_pending()] == ["done"]
    with DuckDBClient(base_path=base) as duck:
        table = duck.retrieve_with_existing_cols(datasets="remote", as_arrow=True)
    assert sorted(zip(table.column("text").to_pylist(), table.column("n").to_pylist())) == [
        ("a", 1), ("b", 2), ("c", 3)
    ]  # fmt: skip


def test_catalog_dataset_reads_an_s3_lake_like_a_folder(s3_lake, tmp_path):
    """``catalog_dataset("s3://bucket/lake")`` reads the catalog in place (it once made the URI a Path): the same
    files, rows, selection, text partition keys and exact schema as the same lake in a folder."""
    from datalake_pipelines import catalog_dataset
    from datalake_pipelines.core.arrow.restore import TypeConflictError

    tables = {
        ("2017", "007"): pa.table({"q": pa.array([5, 2**53 + 2], pa.int64()), "k": pa.array([1, 2], pa.int8())}),
        ("2017", "7"): pa.table({"q": pa.array([1], pa.int64()), "note": ["only here"]}),
        ("b", "v"): pa.table({"k": ["text"]}),  # k: int8 in 2017/007, string here
    }
    got = {}
    for name, base in (("local", str(tmp_path / "lake")), ("s3", s3_lake)):
        client = DatalakeClient(base, num_proc=1, progress=False)
        for n, ((dataset, variant), table) in enumerate(tables.items()):
            path = tmp_path / f"{name}-{n}.parquet"
            pq.write_table(table, path)
            client.upload_raw_data(str(path), "aihub", dataset, variant=variant, job_id=f"job-{n}")
        assert [r.status for r in client.process_pending()] == ["done"] * len(tables)
        ds = catalog_dataset(base, datasets="2017")
        assert ds.schema.field("dataset").type == pa.string() and ds.schema.field("k").type == pa.int8()
        table = ds.to_table().drop_columns(["ingested_at"]).sort_by([("variant", "ascending"), ("q", "ascending")])
        assert table["variant"].to_pylist() == ["007", "007", "7"]  # text keys: 007 is not 7
        assert table["q"].to_pylist() == [5, 2**53 + 2, 1]
        got[name] = (ds.schema, table, catalog_dataset(base, variants=["7"]).to_table().num_rows)
        with pytest.raises(TypeConflictError, match="'k'"):
            catalog_dataset(base)
        with pytest.raises(ValueError, match="no partition"):
            catalog_dataset(base, datasets="zzz")
    assert got["s3"][0] == got["local"][0] and got["s3"][0].metadata == got["local"][0].metadata
    assert got["s3"][1].equals(got["local"][1]) and got["s3"][2] == got["local"][2] == 1


def test_catalog_dataset_names_a_missing_s3_lake(s3_lake):
    from datalake_pipelines import catalog_dataset

    with pytest.raises(FileNotFoundError, match="no lake at s3://"):
        catalog_dataset(s3_lake)  # the bucket exists, nothing is under the prefix

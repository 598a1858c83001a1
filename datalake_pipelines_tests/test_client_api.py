"""The Python API end to end: upload, process, download, export through DatalakeClient."""

import json

import pandas as pd
from datasets import load_from_disk
from PIL import Image

from datalake_pipelines import DatalakeClient, DuckDBClient
from datalake_pipelines.core.export.reader import iter_export_batches


def test_upload_process_download_and_export(tmp_path, make_jpeg):
    client = DatalakeClient(tmp_path / "lake", progress=False)
    paths = [str(make_jpeg(tmp_path / f"{i}.jpg", size=(40 + i, 30))) for i in range(4)]
    ocr = [json.dumps({"words": [{"text": t}]}) for t in ("invoice", "total", "invoice", "cash")]
    client.upload_task_data(
        pd.DataFrame({"image": paths, "ocr_result": ocr}),
        "aihub",
        "docs",
        "ocr",
        "w",
        meta={"lang": "ko", "src": "real"},
    )
    assert [r.status for r in client.process_pending()] == ["done"]

    with DuckDBClient(base_path=client.base_path) as duck:
        hits = duck.search_text("ocr_result", "invoice", json_path="$.words[*].text")
    assert len(hits) == 2

    manifest = client.download({"tasks": ["ocr"]}, "hf", tmp_path / "hf")
    assert manifest["rows"] == 4
    first = load_from_disk(str(tmp_path / "hf"))[0]
    assert isinstance(first["image"], Image.Image) and first["lang"] == "ko"

    task_id = client.create_export(tmp_path / "exports", filter={"lang": ["ko"]}, file_type="hdf5", wait=True)
    info = client.export_info(task_id)
    assert info["task_status"] == "done", info
    assert info["process_info"]["total_filter_count"] == 4 and info["process_info"]["task_progress"] == "100%"
    rows = sum(b.num_rows for b in iter_export_batches(info["export_path"], batch_size=3))
    assert rows == 4

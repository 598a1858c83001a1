"""Concurrent S3 requests (``s3_map``) and throttling: an S3 lake's ingest behind a proxy answering 503 SlowDown."""

from __future__ import annotations

import threading
import time

import pytest

from datalake_pipelines.client import DatalakeClient
from datalake_pipelines.core.storage.pool import s3_map
from datalake_pipelines.demo import make_samples
from datalake_pipelines_tests.support.latency_proxy import LatencyProxy


def test_s3_map_runs_calls_at_once_in_order_and_raises_after_all_finished(monkeypatch):
    monkeypatch.setenv("DATALAKE_S3_CONCURRENCY", "8")
    running, peak, lock = [0], [0], threading.Lock()

    def call(n: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return n * n

    started = time.monotonic()
    assert s3_map(call, range(32)) == [n * n for n in range(32)]
    assert peak[0] == 8 and time.monotonic() - started < 32 * 0.02 / 2
    finished = []

    def failing(n: int) -> None:
        time.sleep(0.01 * n)
        finished.append(n)
        if n == 0:
            raise ValueError("first")

    with pytest.raises(ValueError, match="first"):
        s3_map(failing, range(6))
    assert sorted(finished) == list(range(6))  # a step's other requests completed before the error surfaced


def test_throttled_s3_ingest_is_retried_and_succeeds(s3_lake, moto_s3, monkeypatch, tmp_path):
    samples = make_samples(tmp_path / "samples", 12)
    # the staged files' PUTs run at once (s3_map): 8 of the 12 are refused first, and botocore retries them
    with LatencyProxy(moto_s3.port, delay=0.02, slowdown_first=8, slowdown_match="/files/") as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint_url)
        client = DatalakeClient(s3_lake, num_proc=1, progress=False)
        client.upload_raw_data(samples[["image"]], "inhouse", "receipts", image_columns=["image"])
        results = client.process_pending()
    assert proxy.slowdowns == 8 and proxy.requests > 12 * 3
    assert [(r.status, r.rows_added, r.images_new) for r in results] == [("done", 12, 12)]


def test_a_later_batch_of_one_run_needs_no_head_for_the_assets_an_earlier_batch_put(
    s3_lake, moto_s3, monkeypatch, tmp_path
):
    samples = make_samples(tmp_path / "samples", 6)
    with LatencyProxy(moto_s3.port, delay=0) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint_url)
        client = DatalakeClient(s3_lake, num_proc=1, progress=False)
        client.upload_raw_data(samples[["image"]], "inhouse", "receipts", image_columns=["image"])
        meta = {"lang": "en", "src": "synthetic"}
        client.upload_task_data(samples, "inhouse", "receipts", "ocr", "receipt_words", meta, image_columns=["image"])
        results = client.process_pending()
        assert [(r.status, r.images_new) for r in results] == [("done", 6), ("done", 0)]
        assert [p for p in proxy.heads if "/assets/" in p] == []  # the task batch's 6 hits were PUT by this run
        meta = {"lang": "ja", "src": "synthetic"}
        client.upload_task_data(samples, "inhouse", "receipts", "ocr", "receipt_words", meta, image_columns=["image"])
        assert [r.status for r in client.process_pending()] == ["done"]
        # a later upload confirms each hit before not staging it, and its run confirms it again
        assert len([p for p in proxy.heads if "/assets/" in p]) == 12


def test_an_s3_re_ingest_puts_and_gets_no_byte_of_content_the_lake_holds(s3_lake, moto_s3, monkeypatch, tmp_path):
    samples = make_samples(tmp_path / "samples", 6)
    with LatencyProxy(moto_s3.port, delay=0) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint_url)
        client = DatalakeClient(s3_lake, num_proc=1, progress=False)
        client.upload_raw_data(samples[["image"]], "inhouse", "receipts", image_columns=["image"])
        assert [(r.status, r.images_new) for r in client.process_pending()] == [("done", 6)]
        before = len(proxy.calls)
        meta = {"lang": "en", "src": "synthetic"}
        client.upload_task_data(samples, "inhouse", "receipts", "ocr", "receipt_words", meta, image_columns=["image"])
        results = client.process_pending()
        calls = proxy.calls[before:]
    assert [(r.status, r.rows_added, r.images_new, r.images_deduplicated) for r in results] == [("done", 6, 0, 6)]
    # the upload found the 6 images in the lake: no staged file, no asset PUT, no GET of either
    assert [c for c in calls if c[0] in ("PUT", "GET") and ("/files/" in c[1] or "/assets/" in c[1])] == []
    # each hit confirmed when the upload decides not to stage it and again when the run uses it, at once each time
    assert len([c for c in calls if c[0] == "HEAD" and "/assets/" in c[1]]) == 12


def test_an_s3_upload_stages_again_content_whose_object_went_behind_the_index(s3_lake, moto_s3, monkeypatch, tmp_path):
    import boto3

    samples = make_samples(tmp_path / "samples", 3)
    client = DatalakeClient(s3_lake, num_proc=1, progress=False)
    client.upload_raw_data(samples[["image"]], "inhouse", "receipts", image_columns=["image"])
    assert [(r.status, r.images_new) for r in client.process_pending()] == [("done", 3)]
    bucket, prefix = s3_lake.removeprefix("s3://").split("/", 1)
    s3 = boto3.client("s3")
    assets = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/assets/")["Contents"]]
    s3.delete_object(Bucket=bucket, Key=assets[0])  # deleted by hand: the index still names it
    meta = {"lang": "en", "src": "synthetic"}
    client.upload_task_data(samples, "inhouse", "receipts", "ocr", "receipt_words", meta, image_columns=["image"])
    [result] = client.process_pending()
    assert (result.status, result.rows_added, result.images_new, result.images_deduplicated) == ("done", 3, 1, 2)
    assert len(s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/assets/")["Contents"]) == 3


def test_an_s3_run_does_not_fetch_a_staged_file_an_earlier_batch_of_the_run_published(
    s3_lake, moto_s3, monkeypatch, tmp_path
):
    samples = make_samples(tmp_path / "samples", 6)
    with LatencyProxy(moto_s3.port, delay=0) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint_url)
        client = DatalakeClient(s3_lake, num_proc=1, progress=False)
        _, raw = client.upload_raw_data(samples[["image"]], "inhouse", "receipts", image_columns=["image"])
        meta = {"lang": "en", "src": "synthetic"}
        _, task = client.upload_task_data(
            samples, "inhouse", "receipts", "ocr", "receipt_words", meta, image_columns=["image"]
        )
        before = len(proxy.calls)
        results = client.process_pending()
        calls = proxy.calls[before:]
    assert [(r.status, r.images_new, r.images_deduplicated) for r in results] == [("done", 6, 0), ("done", 0, 6)]
    fetched = [c[1] for c in calls if c[0] == "GET" and "/files/" in c[1]]
    assert len(fetched) == 6 and all(raw in p for p in fetched)  # only the raw batch's files came down

"""Transfers against moto's real HTTP S3 server, a local body server and a fault-injecting proxy."""

from __future__ import annotations

import hashlib
import http.client
import itertools
import json
import os
import tempfile
import threading
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from datalake_pipelines.core.storage.transfer import (
    MiB,
    TransferError,
    TransferSettings,
    parse_s3_url,
    s3_client,
    upload_file_to_s3,
)
from datalake_pipelines.core.storage.url_stream import stream_url_to_s3
from datalake_pipelines_tests.support.latency_proxy import send_reply
from datalake_pipelines_tests.support.s3_server import BodyServer, MotoS3, body_sha256

FAST = TransferSettings(
    multipart_threshold=5 * MiB,
    part_size=5 * MiB,
    max_concurrency=3,
    max_attempts=4,
    backoff_base=0.01,
    backoff_max=0.05,
)
_bucket_ids = itertools.count()


@pytest.fixture(scope="module")
def s3_endpoint():
    with MotoS3() as moto, moto.environment():
        yield moto


@pytest.fixture(scope="module")
def body_server():
    with BodyServer() as server:
        yield server


@pytest.fixture
def bucket(s3_endpoint):
    name = f"transfer-{next(_bucket_ids)}"
    s3_client().create_bucket(Bucket=name)
    return name


def _object_sha256(bucket: str, key: str) -> str:
    digest = hashlib.sha256()
    for chunk in s3_client().get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(MiB):
        digest.update(chunk)
    return digest.hexdigest()


def _open_uploads(bucket: str) -> list:
    return s3_client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])


class FaultProxy:
    """Forwards requests to moto; answers 503 SlowDown to UploadPart requests that ``fail(n, part)`` picks."""

    def __init__(self, target_port: int, fail):
        self.fail, self.failed, self.parts = fail, 0, 0
        lock, proxy = threading.Lock(), self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                query = parse_qs(urlparse(self.path).query)
                if self.command == "PUT" and "uploadId" in query and "partNumber" in query:
                    with lock:
                        proxy.parts += 1
                        refuse = proxy.fail(proxy.parts, int(query["partNumber"][0]))
                        proxy.failed += refuse
                    if refuse:
                        return self._reply(
                            503,
                            [],
                            b"<?xml version='1.0' encoding='UTF-8'?><Error>"
                            b"<Code>SlowDown</Code><Message>Reduce your request rate.</Message>"
                            b"</Error>",
                        )
                conn = http.client.HTTPConnection("127.0.0.1", target_port, timeout=60)
                try:
                    conn.request(
                        self.command,
                        self.path,
                        body=body,
                        headers={k: v for k, v in self.headers.items() if k.lower() != "expect"},
                    )
                    resp = conn.getresponse()
                    self._reply(resp.status, resp.getheaders(), resp.read())
                finally:
                    conn.close()

            def _reply(self, status, headers, payload):
                send_reply(self, status, headers, payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.endpoint_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self):
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def proxy(s3_endpoint):
    proxies = []

    def make(fail):
        proxies.append(FaultProxy(s3_endpoint.port, fail))
        return proxies[-1]

    yield make
    for item in proxies:
        item.close()


def test_parse_s3_url():
    assert parse_s3_url("s3://bucket/a/b.bin") == ("bucket", "a/b.bin")
    for bad in ("bucket/key", "s3://bucket", "s3://bucket/", "s3:///key", "https://x/y"):
        with pytest.raises(ValueError, match="S3 URL"):
            parse_s3_url(bad)


def test_part_size_for_respects_s3_limits():
    settings = TransferSettings(part_size=16 * MiB)
    for total in (5 * 10**12, 5 * 1024**4, 10**9, 1):
        part = settings.part_size_for(total)
        assert part >= 5 * MiB and -(-total // part) <= 10_000
    assert TransferSettings(part_size=MiB).part_size_for(None) == 5 * MiB
    assert settings.part_size_for(100 * MiB) == 16 * MiB
    with pytest.raises(ValueError, match="5 TiB"):
        settings.part_size_for(5 * 1024**4 + 1)


def test_upload_file_multipart_is_byte_exact(bucket, tmp_path):
    path = tmp_path / "big.bin"
    data = os.urandom(13 * MiB + 123)
    path.write_bytes(data)
    result = upload_file_to_s3(path, f"s3://{bucket}/big.bin", FAST, progress=False)
    sha = hashlib.sha256(data).hexdigest()
    assert result["bytes"] == len(data) and result["sha256"] == sha
    assert result["etag"].endswith("-3") and result["parts"] == 3
    assert _object_sha256(bucket, "big.bin") == sha


def test_upload_file_retries_through_botocore(bucket, tmp_path, proxy):
    faults = proxy(lambda n, part: n <= 2)
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(11 * MiB))
    client = s3_client(faults.endpoint_url, max_attempts=4)
    result = upload_file_to_s3(path, f"s3://{bucket}/f.bin", FAST, progress=False, client=client)
    assert faults.failed == 2 and result["parts"] == 3
    assert _object_sha256(bucket, "f.bin") == hashlib.sha256(path.read_bytes()).hexdigest()


def test_stream_url_is_byte_exact_and_writes_no_file(bucket, body_server, tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.chdir(scratch)
    size = 64 * MiB + 4321
    result = stream_url_to_s3(body_server.url(size, seed=7), f"s3://{bucket}/body", FAST, progress=False)
    assert result["sha256"] == body_sha256(size, seed=7) == _object_sha256(bucket, "body")
    assert result["bytes"] == size and result["parts"] == 13 and result["etag"].endswith("-13")
    assert result["mb_per_s"] > 0
    assert list(scratch.iterdir()) == []


def test_stream_small_body_is_a_single_put(bucket, body_server):
    result = stream_url_to_s3(body_server.url(1000, seed=1), f"s3://{bucket}/small", FAST, progress=False)
    assert result["parts"] == 1 and "-" not in result["etag"]
    assert _object_sha256(bucket, "small") == body_sha256(1000, seed=1)


def test_stream_memory_is_bounded(body_server):
    settings = TransferSettings(part_size=5 * MiB, max_concurrency=2)
    size = 110 * MiB
    with MotoS3(process=True) as moto, moto.environment():  # moto keeps parts in memory: not here
        client = s3_client(moto.endpoint_url, max_attempts=1)
        client.create_bucket(Bucket="memory")
        tracemalloc.start()
        try:
            result = stream_url_to_s3(
                body_server.url(size, seed=3), "s3://memory/big", settings, progress=False, client=client
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result["sha256"] == body_sha256(size, seed=3)
    bound = settings.part_size * (settings.max_concurrency + 2) + 8 * MiB
    assert peak < bound, f"peak {peak / MiB:.1f} MiB above {bound / MiB:.1f} MiB"


def test_stream_retries_slowdown_parts(bucket, body_server, proxy):
    faults = proxy(lambda n, part: n <= 4)
    client = s3_client(faults.endpoint_url, max_attempts=1)
    size = 22 * MiB
    result = stream_url_to_s3(
        body_server.url(size, seed=5), f"s3://{bucket}/retried", FAST, progress=False, client=client
    )
    assert faults.failed == 4 and faults.parts == 5 + 4
    assert result["sha256"] == body_sha256(size, seed=5) == _object_sha256(bucket, "retried")


@pytest.mark.parametrize("first_bad_part, uploaded", [(1, "0 bytes in 0 parts"), (3, "10485760 bytes in 2 parts")])
def test_stream_gives_up_and_aborts(bucket, body_server, proxy, first_bad_part, uploaded):
    faults = proxy(lambda n, part: part >= first_bad_part)
    settings = TransferSettings(part_size=5 * MiB, max_concurrency=1, max_attempts=3, backoff_base=0.01)
    client = s3_client(faults.endpoint_url, max_attempts=1)
    with pytest.raises(TransferError, match=f"{uploaded} had been uploaded.*SlowDown"):
        stream_url_to_s3(body_server.url(40 * MiB), f"s3://{bucket}/doomed", settings, progress=False, client=client)
    assert faults.failed == 3
    assert _open_uploads(bucket) == []


@pytest.mark.parametrize("kind", ["missing", "dies", "dies-chunked", "too-short"])
def test_stream_bad_source_leaves_nothing(bucket, body_server, kind):
    url, pattern, expected = {
        "missing": (f"{body_server.base_url}/missing", "HTTP 404", None),
        "dies": (body_server.url(20 * MiB, die_after=12 * MiB), "ended after 12582912 of 20971520", None),
        "dies-chunked": (body_server.url(20 * MiB, die_after=12 * MiB, chunked=1), "IncompleteRead", None),
        "too-short": (body_server.url(20 * MiB, chunked=1), "ended after 20971520 of 31457280", 30 * MiB),
    }[kind]
    with pytest.raises(TransferError, match=pattern):
        stream_url_to_s3(url, f"s3://{bucket}/partial", FAST, progress=False, expected_size=expected)
    assert _open_uploads(bucket) == []
    assert "Contents" not in s3_client().list_objects_v2(Bucket=bucket)


def test_cli_ingest_url_streams_into_s3(bucket, body_server, capsys):
    from datalake_pipelines.cli.main import main

    size = 12 * MiB + 123
    url = body_server.url(size, seed=5)
    assert main(["ingest-url", url, "--to", f"s3://{bucket}/cli.bin", "--part-mb", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bytes"] == size and result["parts"] == 3
    assert result["sha256"] == body_sha256(size, seed=5) == _object_sha256(bucket, "cli.bin")
    assert main(["ingest-url", body_server.base_url + "/missing", "--to", f"s3://{bucket}/x.bin"]) == 1
    assert "404" in capsys.readouterr().err
    assert main(["ingest-url", url, "--to", "/tmp/not-s3"]) == 2

"""Local endpoints for transfer tests and benchmarks: moto as a real S3 server and a body server.

``MotoS3`` runs moto's HTTP server (in a thread, or as a separate process when memory is measured).
``BodyServer`` serves a deterministic body of any size, generated chunk by chunk, so neither side
ever holds it in memory: ``GET /body/<size>?seed=S`` (``&die_after=N`` closes the connection after
N bytes, ``&chunked=1`` uses chunked encoding); any other path is a 404.
Run ``python -m datalake_pipelines_tests.support.s3_server PORT`` to serve bodies from a separate process.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import random
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

CHUNK = 1024 * 1024
TEST_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoS3:
    """moto's S3 on 127.0.0.1:<free port>; ``env`` is what boto3 needs to talk to it."""

    def __init__(self, process: bool = False):
        self.process, self.port = process, free_port()
        self._server = self._proc = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {**TEST_ENV, "AWS_ENDPOINT_URL": self.endpoint_url}

    def start(self) -> MotoS3:
        if self.process:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, **TEST_ENV},
            )
            wait_for_port(self.port, self._proc)
        else:
            from moto.server import ThreadedMotoServer

            logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
            self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
            self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    @contextlib.contextmanager
    def environment(self):
        """Set ``env`` in ``os.environ`` for the duration of the block."""
        saved = {name: os.environ.get(name) for name in self.env}
        os.environ.update(self.env)
        try:
            yield self.env
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def __enter__(self) -> MotoS3:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"moto server did not listen on port {port} within {timeout} s")


@functools.lru_cache(maxsize=8)
def _block(seed: int) -> bytes:
    return random.Random(seed).randbytes(CHUNK)


def body_chunks(size: int, seed: int = 0):
    """Yield the deterministic body: 1 MiB chunks, each a seeded block stamped with its index."""
    block, index, left = _block(seed), 0, size
    while left > 0:
        chunk = index.to_bytes(8, "little") + block[8:]
        yield chunk[:left] if left < CHUNK else chunk
        left -= CHUNK
        index += 1


def body_sha256(size: int, seed: int = 0) -> str:
    digest = hashlib.sha256()
    for chunk in body_chunks(size, seed):
        digest.update(chunk)
    return digest.hexdigest()


class _BodyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server naming
        url = urlparse(self.path)
        parts, query = url.path.strip("/").split("/"), parse_qs(url.query)
        if len(parts) != 2 or parts[0] != "body" or not parts[1].isdigit():
            self.send_error(404, "no such body")
            return
        size, seed = int(parts[1]), int(query.get("seed", ["0"])[0])
        die_after = int(query["die_after"][0]) if "die_after" in query else None
        chunked = query.get("chunked") == ["1"]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding" if chunked else "Content-Length", "chunked" if chunked else str(size))
        self.end_headers()
        try:
            self._send_body(size, seed, die_after, chunked)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up; nothing to report
            self.close_connection = True

    def _send_body(self, size, seed, die_after, chunked):
        sent = 0
        for chunk in body_chunks(size, seed):
            if die_after is not None and sent + len(chunk) > die_after:
                self.wfile.write(_frame(chunk[: die_after - sent], chunked))
                self.close_connection = True
                return
            self.wfile.write(_frame(chunk, chunked))
            sent += len(chunk)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args):
        pass


def _frame(data: bytes, chunked: bool) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data) if chunked and data else data


class BodyServer:
    """The body server on 127.0.0.1:<free port> in a daemon thread."""

    def __init__(self, port: int = 0):
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _BodyHandler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, size: int, seed: int = 0, **params) -> str:
        extra = "".join(f"&{name}={value}" for name, value in params.items())
        return f"{self.base_url}/body/{size}?seed={seed}{extra}"

    def start(self) -> BodyServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> BodyServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    httpd = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), _BodyHandler)
    httpd.daemon_threads = True
    httpd.serve_forever()

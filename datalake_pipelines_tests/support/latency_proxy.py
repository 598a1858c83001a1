"""A threaded HTTP forwarding proxy in front of an S3 endpoint, adding latency and throttling.

``LatencyProxy(upstream_port, delay=0.02)`` waits ``delay`` seconds before forwarding each request, like real
S3's 20-50 ms per request (``GET /__proxy_requests__`` answers how many it forwarded; ``calls`` lists them);
``slowdown_first=N`` answers the first N requests (whose path contains ``slowdown_match``) with 503 SlowDown.
Bodies are read whole (small objects; the streaming benchmarks talk to moto directly). Run
``python -m datalake_pipelines_tests.support.latency_proxy PORT UPSTREAM_PORT DELAY`` to serve from its own
process, so the proxy's threads do not share the measured process's GIL.
"""

from __future__ import annotations

import http.client
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOWDOWN = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
    b"<Message>Please reduce your request rate.</Message></Error>"
)
STATS_PATH = "/__proxy_requests__"
HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive", "date", "server"}


def send_reply(handler: BaseHTTPRequestHandler, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
    """Answer a proxied request with the upstream's status, end-to-end headers and body (the whole body was
    read: its length is sent, except for HEAD, which keeps the upstream's Content-Length and sends no body)."""
    handler.send_response(status)
    for name, value in headers:
        if name.lower() not in HOP_HEADERS:
            handler.send_header(name, value)
    length = dict((k.lower(), v) for k, v in headers).get("content-length")
    handler.send_header("Content-Length", length if handler.command == "HEAD" and length else str(len(payload)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(payload)


class LatencyProxy:
    def __init__(
        self, upstream_port: int, delay: float = 0.02, slowdown_first: int = 0, slowdown_match: str = "", port: int = 0
    ):
        self.upstream_port, self.delay, self.slowdown_left = upstream_port, delay, slowdown_first
        self.slowdown_match = slowdown_match
        self.requests = self.slowdowns = 0
        self.heads: list[str] = []  # paths of the HEAD requests, for tests counting them
        self.calls: list[tuple[str, str]] = []  # (method, path) of every forwarded request, for tests
        self._lock, self._local, proxy = threading.Lock(), threading.local(), self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self):
                body = self._body()
                if self.path == STATS_PATH:  # the benchmark asks how many requests went through
                    return self._reply(200, [], str(proxy.requests).encode())
                with proxy._lock:
                    proxy.requests += 1
                    proxy.calls.append((self.command, self.path))
                    if self.command == "HEAD":
                        proxy.heads.append(self.path)
                    throttle = proxy.slowdown_left > 0 and proxy.slowdown_match in self.path
                    proxy.slowdown_left -= throttle
                    proxy.slowdowns += throttle
                time.sleep(proxy.delay)
                if throttle:
                    return self._reply(503, [], SLOWDOWN)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("expect", "transfer-encoding")}
                headers["Content-Length"] = str(len(body))
                status, reply, payload = proxy._upstream(self.command, self.path, body, headers)
                self._reply(status, reply, payload)

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    pieces = []
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        pieces.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(pieces)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reply(self, status, headers, payload):
                send_reply(self, status, headers, payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.endpoint_url = f"http://127.0.0.1:{self.port}"

    def _upstream(self, method, path, body, headers):
        """One keep-alive connection to the upstream per proxy thread; reconnect once if it was dropped."""
        for attempt in (1, 2):
            conn = getattr(self._local, "conn", None) or http.client.HTTPConnection(
                "127.0.0.1", self.upstream_port, timeout=120
            )
            self._local.conn = conn
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.getheaders(), resp.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def start(self) -> LatencyProxy:
        threading.Thread(target=self._httpd.serve_forever, daemon=True, name="latency-proxy").start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    port, upstream, delay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    LatencyProxy(upstream, delay, port=port)._httpd.serve_forever()

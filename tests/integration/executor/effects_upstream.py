"""A local HTTP upstream with side effects, for durability tests: it counts ``Idempotency-Key``s.

``POST /effect`` applies a side effect: it records the request's ``Idempotency-Key`` header and
answers ``{"v": body.v + 1, "count": <times this key was seen>}`` after ``?ms=N`` milliseconds.
A re-run node (after a worker crash) sends the same key again, so ``counts`` shows how often each
side effect was requested. Served by a thread pool on 127.0.0.1 (port 0), usable from any process.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

__all__ = ["EffectsUpstream"]


class EffectsUpstream:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.missing_key = 0
        self._lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                key = self.headers.get("Idempotency-Key")
                with upstream._lock:
                    if key:
                        upstream.counts[key] += 1
                        count = upstream.counts[key]
                    else:
                        upstream.missing_key += 1
                        count = 0
                ms = int(parse_qs(url.query).get("ms", ["0"])[0])
                if ms:
                    time.sleep(ms / 1000)
                data = json.dumps({"v": int(body.get("v", 0)) + 1, "count": count}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client killed mid-request (the point of the crash tests)

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> EffectsUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)

"""A real, local HTTP/1.1 server for tests and benchmarks of anything that calls upstreams.

It binds 127.0.0.1 on a free port and serves from daemon threads, so sync code, any event loop
and several processes' worth of concurrency can use it. Routes (the first four match the
acceptance runner's fake upstream):

- ``/echo`` (any method): ``{method, path, query, headers, body, idempotencyKey}``; the body is
  parsed when it is JSON, else text. ``query`` maps each name to its first value (``queryAll``: all).
- ``/delay?ms=N``: answers ``{"ok": true, "ms": N}`` after N ms (default 100).
- ``/flaky/<key>?fail=N&code=C``: the first N requests per key answer C (default 503), later
  ones ``200 {"ok": true, "attempts": n}``.
- ``/status?code=N``: answers status N with ``{"code": N}``.
- ``/large?bytes=N&chunked=1``: N bytes of ``a`` (``application/octet-stream``); with
  ``chunked=1`` without a Content-Length (chunked transfer encoding, sent in 64 KiB pieces).
- ``/drip?chunks=N&delay_ms=M``: a chunked ``text/plain`` body of N one-byte chunks, M ms apart.
- ``/json-large?items=N``: a JSON array of N small objects.
- ``/text``: ``text/plain`` ``hello``.
- ``/redirect?to=URL&code=302``: a redirect to URL.
- ``/headers?name=value...``: 200 with each query pair set as a response header.

With ``tls=`` (a server ``ssl.SSLContext``) it serves HTTPS; ``make_certificates`` mints a CA
and a server certificate for given host names with the ``openssl`` command.

Every request is recorded (``server.requests``), and every ``Idempotency-Key`` header
(``server.idempotency_keys``), in arrival order.

    with HttpTestServer() as server:
        httpx.get(server.url("/echo?a=1"))
        assert server.requests[-1].query == {"a": ["1"]}
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["CertificateSet", "HttpTestServer", "RecordedRequest", "make_certificates"]


@dataclass(slots=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # fan-out tests open many connections at once
    owner: HttpTestServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- plumbing --------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(
        self,
        status: int,
        body: Any,
        ctype: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout or cancellation test)

    def _handle(self) -> None:
        body = self._read_body()
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        owner = self.server.owner
        rec = RecordedRequest(
            method=self.command,
            path=parts.path,
            query=query,
            headers={k: v for k, v in self.headers.items()},
            body=body,
        )
        key = self.headers.get("Idempotency-Key")
        with owner.lock:
            owner.requests.append(rec)
            if key is not None:
                owner.idempotency_keys.append(key)
        q = {k: v[0] for k, v in query.items()}
        path = parts.path
        if path == "/echo":
            parsed: Any
            try:
                parsed = json.loads(body) if body else None
            except ValueError:
                parsed = body.decode(errors="replace")
            return self._send(
                200,
                {
                    "method": self.command,
                    "path": path,
                    "query": q,
                    "queryAll": query,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": parsed,
                    "idempotencyKey": key,
                },
            )
        if path == "/delay":
            ms = int(q.get("ms", "100"))
            time.sleep(ms / 1000)
            return self._send(200, {"ok": True, "ms": ms})
        if path.startswith("/flaky/"):
            name = path.split("/", 2)[2]
            with owner.lock:
                n = owner.flaky_counts[name] = owner.flaky_counts.get(name, 0) + 1
            if n <= int(q.get("fail", "2")):
                return self._send(int(q.get("code", "503")), {"error": "try again", "attempt": n})
            return self._send(200, {"ok": True, "attempts": n})
        if path == "/status":
            code = int(q.get("code", "500"))
            return self._send(code, {"code": code})
        if path == "/large":
            return self._large(int(q.get("bytes", "1048576")), q.get("chunked") == "1")
        if path == "/drip":
            return self._drip(int(q.get("chunks", "10")), int(q.get("delay_ms", "100")))
        if path == "/json-large":
            items = [{"i": i, "pad": "x" * 16} for i in range(int(q.get("items", "1000")))]
            return self._send(200, items)
        if path == "/text":
            return self._send(200, b"hello", ctype="text/plain; charset=utf-8")
        if path == "/redirect":
            code = int(q.get("code", "302"))
            return self._send(code, b"", ctype="text/plain", headers={"Location": q["to"]})
        if path == "/headers":
            return self._send(200, {"ok": True}, headers=q)
        return self._send(404, {"error": "no such test route", "path": path})

    def _large(self, size: int, chunked: bool) -> None:
        piece = b"a" * 65536
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(size))
            self.end_headers()
            left = size
            while left > 0:
                data = piece[: min(left, len(piece))]
                left -= len(data)
                if chunked:
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                else:
                    self.wfile.write(data)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _drip(self, chunks: int, delay_ms: int) -> None:
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(chunks):
                self.wfile.write(b"1\r\nx\r\n")
                self.wfile.flush()
                time.sleep(delay_ms / 1000)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class HttpTestServer:
    """Start on construction; ``close()`` (or leave the ``with`` block) to stop."""

    def __init__(self, host: str = "127.0.0.1", *, tls: ssl.SSLContext | None = None) -> None:
        self.lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self.idempotency_keys: list[str] = []
        self.flaky_counts: dict[str, int] = {}
        self._server = _Server((host, 0), _Handler)
        self._server.owner = self
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.host = host
        self.port: int = self._server.server_address[1]
        self.base_url = f"{'https' if tls else 'http'}://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return self.base_url + path

    def hits(self, path: str) -> int:
        with self.lock:
            return sum(1 for r in self.requests if r.path == path)

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.idempotency_keys.clear()
            self.flaky_counts.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HttpTestServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class CertificateSet:
    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """Trusts only this CA, verifies host names."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def make_certificates(directory: Path, *names: str) -> CertificateSet:
    """A throwaway CA and a server certificate for ``names`` (DNS names), via ``openssl``."""
    d = Path(directory)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    ca_key, ca_crt = d / "ca.key", d / "ca.crt"
    key, csr, crt, ext = d / "server.key", d / "server.csr", d / "server.crt", d / "server.ext"
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")  # fast to generate
    openssl(
        "req",
        "-x509",
        *ec,
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=weft test CA",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca_crt),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=keyCertSign",
    )
    openssl("req", *ec, "-nodes", "-subj", f"/CN={names[0]}", "-keyout", str(key), "-out", str(csr))
    ext.write_text("subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n")
    openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca_crt),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        str(crt),
        "-extfile",
        str(ext),
    )
    return CertificateSet(ca_file=ca_crt, cert_file=crt, key_file=key)

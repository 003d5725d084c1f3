"""Pieces of the browser end-to-end test: headless Chromium, the page it opens (served by the
test), and a loopback TCP proxy that drops the page's first SSE connection after a few events so
the browser's own ``EventSource`` must reconnect with ``Last-Event-ID``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

EVENT_TYPES = [
    "execution:started", "execution:paused", "execution:resumed", "execution:completed",
    "execution:failed", "execution:cancelled", "node:started", "node:completed", "node:error",
    "node:cancelled", "node:retrying", "node:skipped", "stream:chunk", "stream:done",
]

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>weft sse</title></head>
<body><pre id="log"></pre>
<script>
const params = new URLSearchParams(location.search);
const seen = [];
let opens = 0, errors = 0, idsBeforeReconnect = [];
const es = new EventSource(params.get("stream"));
es.onopen = () => {
  opens += 1;
  if (opens > 1) idsBeforeReconnect.push(seen.length ? seen[seen.length - 1].id : null);
  fetch("/progress", {method: "POST", body: JSON.stringify({opens, count: seen.length})});
};
es.onerror = () => { errors += 1; };
const TERMINAL = ["execution:completed", "execution:failed", "execution:cancelled"];
for (const type of TYPES) {
  es.addEventListener(type, (e) => {
    const data = JSON.parse(e.data);
    seen.push({id: e.lastEventId, type: e.type, seq: data.seq, dataType: data.type});
    document.getElementById("log").textContent += e.lastEventId + " " + e.type + "\\n";
    fetch("/progress", {method: "POST", body: JSON.stringify({opens, count: seen.length, type: e.type})});
    if (TERMINAL.includes(type)) {
      es.close();
      fetch("/result", {method: "POST",
        body: JSON.stringify({seen, opens, errors, idsBeforeReconnect})});
    }
  });
}
</script></body></html>
"""


class PageServer:
    """Serves the page on 127.0.0.1 and collects what it reports (``/progress``, ``/result``)."""

    def __init__(self) -> None:
        self.result: dict[str, Any] | None = None
        self.progress: list[dict[str, Any]] = []
        self.got_result = threading.Event()
        owner = self
        page = PAGE.replace("TYPES", json.dumps(EVENT_TYPES)).encode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                if self.path == "/result":
                    owner.result = body
                    owner.got_result.set()
                else:
                    owner.progress.append(body)
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> PageServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class DroppingProxy:
    """Forwards TCP to the gateway; the first connection is cut after ``cut_after`` SSE events."""

    def __init__(self, upstream_port: int, cut_after: int) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.requests: list[bytes] = []  # the request head of each connection
        self.connections = 0
        self.server: asyncio.base_events.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> DroppingProxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        index = self.connections
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        head = bytearray()

        async def upstream() -> None:
            while chunk := await client_r.read(65536):
                if len(head) < 8192:
                    head.extend(chunk)
                    if b"\r\n\r\n" in head and len(self.requests) < index:
                        self.requests.append(bytes(head))
                up_w.write(chunk)
                await up_w.drain()

        async def downstream() -> None:
            events = 0
            while chunk := await up_r.read(65536):
                client_w.write(chunk)
                await client_w.drain()
                events += chunk.count(b"\nevent: ")
                if index == 1 and events >= self.cut_after:
                    return  # drop the browser's first stream mid-run

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        for w in (client_w, up_w):
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()


def chromium_binary() -> str:
    """Debian's chromium; installed by scripts/install-browser.sh when missing."""
    found = shutil.which("chromium")
    if found is None:
        subprocess.run(["bash", str(REPO / "scripts" / "install-browser.sh")], check=True, timeout=900)
        found = shutil.which("chromium")
    assert found, "chromium is not installed and scripts/install-browser.sh could not install it"
    return found


@contextlib.asynccontextmanager
async def headless_chromium(url: str, profile_dir: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile_dir}", url,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()

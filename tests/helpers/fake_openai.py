"""A real, local OpenAI-compatible Chat Completions server for tests and benchmarks.

It speaks HTTP/1.1 on 127.0.0.1 (port 0: a free port), with keep-alive and chunked transfer
encoding, at ``POST /v1/chat/completions`` (and ``/chat/completions``). Each request is answered
by the next scripted ``Reply`` (``fake.script(...)``), or by ``fake.responder(body)`` when the
script is empty, or by the default reply ("Hello", " world", usage 7/2, like the acceptance
runner's fake). A reply can stream any chunks, stall until the client goes away, drop the
connection mid-stream, answer 401/429 (with ``Retry-After``)/500, or leave out usage.

The server runs its own event loop in a daemon thread, so it can serve sync code, another event
loop, or a benchmark in the same process. Every request is recorded (``fake.requests``) with its
body, headers and whether the client disconnected before the reply was complete.

    with FakeOpenAI() as fake:
        fake.script(Reply(status=429, retry_after="2"), Reply(chunks=["a", "b"]))
        ... post to f"{fake.base_url}/chat/completions" ...
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FakeOpenAI", "RecordedRequest", "Reply"]

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable"}


@dataclass(slots=True)
class Reply:
    """How to answer one chat completion request."""

    status: int = 200
    chunks: list[str] = field(default_factory=lambda: ["Hello", " world"])
    # (prompt_tokens, completion_tokens); None: the provider reports no usage at all.
    usage: tuple[int, int] | None = (7, 2)
    finish_reason: str = "stop"
    model: str | None = None  # None: echo the requested model
    retry_after: str | None = None  # Retry-After header on error replies
    error_message: str = "fake error"
    # Stream: after this many content chunks, stop sending and wait until the client hangs up.
    stall_after: int | None = None
    # Stream: after this many content chunks, close the socket without finishing the body.
    drop_after: int | None = None
    chunk_delay_s: float = 0.0
    send_done: bool = True  # the final "data: [DONE]"
    # Stream: flush to the socket every N chunks (1: each chunk is its own write).
    flush_every: int = 1
    # Non-stream: send this exact body (e.g. malformed JSON) instead of a completion.
    raw_body: bytes | None = None
    # Stream: append "@<time.time_ns() at send>;" to each chunk (latency benchmarks).
    stamp: bool = False
    # Stream: send no content before this is set (a test's client is listening by then); 10 s cap.
    start_after: threading.Event | None = None


@dataclass(slots=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: Any
    started_at: float
    finished: bool = False  # the whole reply was written
    disconnected: bool = False  # the client closed the connection before the reply was complete
    disconnected_at: float | None = None


class FakeOpenAI:
    """Start with ``start()`` or ``with FakeOpenAI() as fake``; ``base_url`` ends in ``/v1``."""

    def __init__(self, *, responder: Callable[[dict[str, Any]], Reply] | None = None) -> None:
        self.responder = responder
        self.requests: list[RecordedRequest] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAI:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def boot() -> None:
                self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
                self.port = self._server.sockets[0].getsockname()[1]
                ready.set()

            loop.run_until_complete(boot())
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake OpenAI server did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for w in list(self._writers):
                w.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join(5)
        self._loop = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ scripting
    def script(self, *replies: Reply) -> None:
        """Queue replies: the next requests get them in order."""
        with self._lock:
            self._script.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()
        self.responder = None

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            if self._script:
                return self._script.popleft()
        if self.responder is not None:
            return self.responder(body)
        return Reply()

    def wait_for_disconnect(self, index: int = -1, timeout: float = 5.0) -> bool:
        """Block until request ``index`` saw its client hang up; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.requests and self.requests[index].disconnected:
                    return True
            time.sleep(0.005)
        return False

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.requests) >= count:
                return True
            time.sleep(0.005)
        return False

    # ------------------------------------------------------------------ HTTP
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                raw = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                keep = await self._handle(method, path, headers, raw, reader, writer)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, method: str, path: str, headers: dict[str, str], raw: bytes,
                      reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must be closed afterwards."""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"_unparsed": raw.decode(errors="replace")}
        rec = RecordedRequest(path=path, headers=headers, body=body, started_at=time.monotonic())
        with self._lock:
            self.requests.append(rec)
        if method != "POST" or path.split("?")[0] not in ("/v1/chat/completions",
                                                          "/chat/completions"):
            await self._send_json(writer, 404, {"error": {"message": f"no route {path}"}})
            rec.finished = True
            return True
        reply = self._next_reply(body)
        model = reply.model or str(body.get("model", "fake-model"))
        if reply.status != 200:
            extra = {"Retry-After": reply.retry_after} if reply.retry_after is not None else {}
            await self._send_json(writer, reply.status, {"error": {
                "message": reply.error_message, "type": "fake", "code": reply.status}}, extra)
            rec.finished = True
            return True
        if not body.get("stream"):
            await self._send_completion(writer, reply, model)
            rec.finished = True
            return True
        return await self._stream(rec, reply, body, model, reader, writer)

    async def _send_json(self, writer: asyncio.StreamWriter, status: int, obj: Any,
                         extra: dict[str, str] | None = None, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(obj).encode()
        hdrs = {"Content-Type": "application/json", "Content-Length": str(len(data))}
        hdrs.update(extra or {})
        writer.write(self._head(status, hdrs) + data)
        await writer.drain()

    @staticmethod
    def _head(status: int, headers: dict[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _send_completion(self, writer: asyncio.StreamWriter, reply: Reply,
                               model: str) -> None:
        if reply.raw_body is not None:
            await self._send_json(writer, 200, None, raw=reply.raw_body)
            return
        obj: dict[str, Any] = {
            "id": "fake-1", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "finish_reason": reply.finish_reason,
                         "message": {"role": "assistant", "content": "".join(reply.chunks)}}],
        }
        if reply.usage is not None:
            obj["usage"] = _usage(reply.usage)
        await self._send_json(writer, 200, obj)

    async def _stream(self, rec: RecordedRequest, reply: Reply, body: dict[str, Any], model: str,
                      reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(self._head(200, {"Content-Type": "text/event-stream",
                                      "Cache-Control": "no-cache",
                                      "Transfer-Encoding": "chunked"}))

        def event(obj: Any) -> bytes:
            data = b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode())
            data += b"\n\n"
            return f"{len(data):x}\r\n".encode() + data + b"\r\n"

        base = {"id": "fake-1", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model}
        try:
            writer.write(event({**base, "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""},
                 "finish_reason": None}]}))
            for _ in range(2000):
                if reply.start_after is None or reply.start_after.is_set():
                    break
                await asyncio.sleep(0.005)
            for i, text in enumerate(reply.chunks):
                if reply.stall_after is not None and i == reply.stall_after:
                    return await self._stall(rec, reader, writer)
                if reply.drop_after is not None and i == reply.drop_after:
                    return await self._drop(writer)
                if reply.stamp:
                    text = f"{text}@{time.time_ns()};"
                writer.write(event({**base, "choices": [
                    {"index": 0, "delta": {"content": text}, "finish_reason": None}]}))
                if (i + 1) % reply.flush_every == 0:
                    await writer.drain()
                if reply.chunk_delay_s:
                    await asyncio.sleep(reply.chunk_delay_s)
            n = len(reply.chunks)
            if reply.stall_after is not None and reply.stall_after >= n:
                return await self._stall(rec, reader, writer)
            if reply.drop_after is not None and reply.drop_after >= n:
                return await self._drop(writer)
            writer.write(event({**base, "choices": [
                {"index": 0, "delta": {}, "finish_reason": reply.finish_reason}]}))
            wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            if reply.usage is not None and wants_usage:
                writer.write(event({**base, "choices": [], "usage": _usage(reply.usage)}))
            if reply.send_done:
                writer.write(event(b"[DONE]"))
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            self._mark_disconnected(rec)
            return False
        rec.finished = True
        return True

    async def _stall(self, rec: RecordedRequest, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> bool:
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            # A client that hangs up makes this read return b"" (EOF) at once.
            while await reader.read(65536):
                pass
        self._mark_disconnected(rec)
        return False

    async def _drop(self, writer: asyncio.StreamWriter) -> bool:
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        transport = writer.transport
        transport.abort()  # RST/close without the terminating zero-length chunk
        return False

    def _mark_disconnected(self, rec: RecordedRequest) -> None:
        with self._lock:
            rec.disconnected = True
            rec.disconnected_at = time.monotonic()


def _usage(u: tuple[int, int]) -> dict[str, int]:
    return {"prompt_tokens": u[0], "completion_tokens": u[1], "total_tokens": u[0] + u[1]}

"""Server-Sent Events: an execution's event log as ``id:``/``event:``/``data:`` frames.

One upstream ``StreamEvents`` call per client. The client's pace drives the reads: a frame is
written (and the transport drained) before the next event is read, so a slow client holds at
most the transport buffer plus the gRPC flow-control window, and a vanished one is noticed at
once (a disconnect listener cancels the stream and with it the upstream call).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from weft.workflow.v1 import workflow_pb2
from weft_common._telemetry_state import flags
from weft_common.errors import Unavailable
from weft_common.telemetry_metrics import metrics, record_event_lag

__all__ = ["TERMINAL_EVENTS", "SseResponse", "event_frames", "frame_event"]

log = logging.getLogger("weft.gateway.sse")

TERMINAL_EVENTS = frozenset({"execution:completed", "execution:failed", "execution:cancelled"})
HEARTBEAT = b": keep-alive\n\n"
# Reconnects to the state service after it went away mid-stream (e.g. a restart).
_UPSTREAM_RETRIES = 20
_UPSTREAM_BACKOFF_S = 0.25

EventSource = Callable[[int], AsyncGenerator[workflow_pb2.Event, None]]


def frame_event(event: workflow_pb2.Event) -> bytes:
    """``id: <seq>``, ``event: <type>``, ``data: <event JSON verbatim>``, blank line."""
    payload = event.payload_json
    if "\n" in payload:  # valid JSON may be pretty-printed: one data line per line
        data = "".join(f"data: {line}\n" for line in payload.split("\n"))
    else:
        data = f"data: {payload}\n"
    return f"id: {event.seq}\nevent: {event.type}\n{data}\n".encode()


async def event_frames(
    source: EventSource, *, after_seq: int, heartbeat_s: float, retry_ms: int
) -> AsyncGenerator[bytes, None]:
    """Frames from ``after_seq`` on, heartbeats while idle; ends right after a terminal event."""
    yield f"retry: {retry_ms}\n\n".encode()
    last = after_seq
    failures = 0
    while True:
        events = source(last)
        pending: asyncio.Future[workflow_pb2.Event] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(events))
                done, _ = await asyncio.wait((pending,), timeout=heartbeat_s)
                if not done:
                    yield HEARTBEAT
                    continue
                try:
                    event = pending.result()
                except StopAsyncIteration:
                    return  # the state service ended the log (terminal, or nothing more)
                finally:
                    pending = None
                failures = 0
                last = event.seq
                record_event_lag(event.payload_json)
                yield frame_event(event)
                if event.type in TERMINAL_EVENTS:
                    return
        except Unavailable as exc:
            failures += 1
            if failures > _UPSTREAM_RETRIES:
                log.warning("event stream gave up after %d reconnects: %s", failures - 1, exc)
                return
            await asyncio.sleep(_UPSTREAM_BACKOFF_S)
        finally:
            if pending is not None:
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)
            await events.aclose()


class SseResponse(Response):
    """An ASGI response that streams frames until they end or the client goes away."""

    def __init__(self, frames: AsyncGenerator[bytes, None], *, headers: dict[str, str] | None = None,
                 registry: set[asyncio.Task[Any]] | None = None) -> None:
        self.status_code = 200
        self.background = None
        self.frames = frames
        self.sse_headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "x-accel-buffering": "no",
            **(headers or {}),
        }
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [(k.encode(), v.encode()) for k, v in self.sse_headers.items()],
        })
        if flags.metrics:
            metrics.sse_active_streams.add(1)
        pump = asyncio.ensure_future(self._pump(send))
        gone = asyncio.ensure_future(_wait_disconnect(receive))
        if self.registry is not None:
            self.registry.add(pump)
        try:
            await asyncio.wait((pump, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            client_left = gone.done()
            gone.cancel()
            pump.cancel()
            if self.registry is not None:
                self.registry.discard(pump)
            await asyncio.gather(pump, gone, return_exceptions=True)
            if flags.metrics:
                metrics.sse_active_streams.add(-1)
        if pump.cancelled() and not client_left:
            # Stopped by the server (shutdown): end the response properly; the client reconnects
            # with Last-Event-ID.
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _pump(self, send: Send) -> None:
        try:
            async for chunk in self.frames:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away while we wrote
        except Exception:
            log.exception("event stream failed")
        finally:
            await self.frames.aclose()


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass

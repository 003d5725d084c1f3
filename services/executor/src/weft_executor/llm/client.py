"""One Chat Completions call over httpx: streamed through an SSE parser, or not.

Connections go through ``netguard`` (the same rules as ``http`` nodes): a refused destination
is ``URL_BLOCKED``. The stream is teed: each content delta goes to ``on_delta`` the moment its
event is parsed, and the same deltas accumulate into the ``ChatResult``. Failures before the first delta are
the retryable/non-retryable codes of ``errors``; any failure after it is ``LLM_STREAM_BROKEN``
with the partial content. Cancelling the calling task leaves ``client.stream(...)`` early, which
closes the response; httpx closes (does not pool) a connection whose body was not fully read,
so the provider sees the disconnect at once and stops generating (``chat`` makes sure that
cleanup runs to the end however often the caller is cancelled).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import EventSource, SSEError

from weft_common.jsonutil import loads

from .. import netguard
from ..handlers._config import settings_of
from ..handlers.base import NodeContext, NodeFailure
from ..handlers.http import shared_client
from . import errors
from .config import ChatRequest
from .usage import Usage, usage_from_provider

__all__ = ["DEFAULT_READ_TIMEOUT_S", "ChatResult", "chat", "http_client_for"]

# Longest silence accepted between two reads. Reasoning models can think for minutes before
# their first token; the node's timeoutMs (applied by the engine) bounds the whole attempt.
DEFAULT_READ_TIMEOUT_S = 300.0
_ERROR_BODY_LIMIT = 64 * 1024
_DEFAULT_MAX_BODY = 10 * 1024 * 1024

def http_client_for(ctx: NodeContext) -> httpx.AsyncClient:
    """The guarded client (``netguard``: metadata always refused, private/loopback only when
    ``WEFT_HTTP_ALLOW_PRIVATE``) that ``http`` nodes use too: the engine's when it passes one,
    else this event loop's shared one."""
    for name in ("http", "http_client"):
        provided = getattr(ctx.services, name, None)
        if isinstance(provided, httpx.AsyncClient) and netguard.is_guarded(provided):
            return provided
    return shared_client(settings_of(ctx))


@dataclass(slots=True)
class ChatResult:
    content: str
    finish_reason: str | None
    model: str
    usage: Usage | None  # None: the provider sent none (estimate it)


@dataclass(slots=True)
class _Accumulator:
    parts: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    model: str = ""
    usage: Usage | None = None
    done: bool = False  # saw "data: [DONE]"

    @property
    def started(self) -> bool:
        return bool(self.parts)

    def content(self) -> str:
        return "".join(self.parts)


class _BadPayload(Exception):
    """The provider sent something that is not a chat completion (chunk)."""


# Calls whose caller was cancelled, kept alive until their connection is closed.
_closing: set[asyncio.Task[ChatResult]] = set()


async def chat(
    http: httpx.AsyncClient,
    req: ChatRequest,
    *,
    node_id: str,
    on_delta: Callable[[str], None] | None = None,
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    max_body_bytes: int = _DEFAULT_MAX_BODY,
) -> ChatResult:
    """Send ``req``; raise ``NodeFailure`` with an ``LLM_*`` code on any failure.

    The call runs in its own task. A cancelled caller (the engine may cancel a node task more
    than once: the node, then the execution's cleanup) cancels that task exactly once, so
    httpx's cleanup, which closes the connection, is never itself interrupted.
    """
    call = asyncio.ensure_future(_chat(http, req, node_id, on_delta, read_timeout_s,
                                       max_body_bytes))
    try:
        return await asyncio.shield(call)
    except asyncio.CancelledError:
        if not call.done():
            call.cancel()
            _closing.add(call)
            call.add_done_callback(_discard)
        raise


def _discard(call: asyncio.Task[ChatResult]) -> None:
    _closing.discard(call)
    if not call.cancelled():
        call.exception()  # retrieved: a failure after cancellation is nobody's to report


async def _chat(
    http: httpx.AsyncClient,
    req: ChatRequest,
    node_id: str,
    on_delta: Callable[[str], None] | None,
    read_timeout_s: float,
    max_body_bytes: int,
) -> ChatResult:
    try:
        return await _call(http, req, node_id, on_delta, read_timeout_s, max_body_bytes,
                           include_usage=True)
    except NodeFailure as exc:
        # Older OpenAI-compatible servers reject `stream_options`: ask once more without it
        # (nothing was streamed yet; the usage is then estimated).
        if not (req.stream and exc.status == 400 and "stream_options" in exc.message):
            raise
    return await _call(http, req, node_id, on_delta, read_timeout_s, max_body_bytes,
                       include_usage=False)


async def _call(
    http: httpx.AsyncClient,
    req: ChatRequest,
    node_id: str,
    on_delta: Callable[[str], None] | None,
    read_timeout_s: float,
    max_body_bytes: int,
    *,
    include_usage: bool,
) -> ChatResult:
    timeout = httpx.Timeout(connect=10.0, read=read_timeout_s, write=30.0, pool=30.0)
    acc = _Accumulator(model=req.model)
    secret = req.api_key
    try:
        async with http.stream("POST", req.url, json=req.payload(include_usage=include_usage),
                               headers=req.headers(), timeout=timeout) as resp:
            if not 200 <= resp.status_code < 300:
                body = await _read_limited(resp, _ERROR_BODY_LIMIT, truncate=True)
                raise errors.status_failure(node_id, resp.status_code, resp.headers, body,
                                            secret)
            ctype = resp.headers.get("content-type", "")
            if "text/event-stream" in ctype:
                await _read_stream(EventSource(resp), acc, on_delta)
            else:
                # Not streamed (stream=false, or a server that ignores it): one JSON body.
                _read_completion(await _read_limited(resp, max_body_bytes), acc)
                if req.stream and on_delta is not None and acc.started:
                    on_delta(acc.content())
    except NodeFailure:
        raise
    except netguard.BlockedAddressError as exc:
        raise NodeFailure(f"llm node {node_id!r}: {exc}", "URL_BLOCKED",
                          retryable=False) from None
    except _BadPayload as exc:
        if acc.started:
            raise errors.stream_broken(node_id, str(exc), acc.content(), secret) from None
        raise NodeFailure(f"llm node {node_id!r}: {errors.redact(str(exc), secret)}",
                          errors.UPSTREAM, retryable=True) from None
    except (httpx.HTTPError, SSEError, OSError) as exc:
        if acc.started:
            raise errors.stream_broken(node_id, f"{type(exc).__name__}: {exc}", acc.content(),
                                       secret) from None
        raise errors.connection_failure(node_id, exc, secret) from None
    return ChatResult(acc.content(), acc.finish_reason, acc.model or req.model, acc.usage)


async def _read_limited(resp: httpx.Response, limit: int, *, truncate: bool = False) -> bytes:
    buf = bytearray()
    async for part in resp.aiter_bytes():
        buf += part
        if len(buf) > limit:
            if truncate:
                return bytes(buf[:limit])
            raise _BadPayload(f"the provider's reply is larger than {limit} bytes")
    return bytes(buf)


async def _read_stream(source: EventSource, acc: _Accumulator,
                       on_delta: Callable[[str], None] | None) -> None:
    async for sse in source.aiter_sse():
        data = sse.data
        if not data:
            continue
        if data == "[DONE]":
            acc.done = True
            continue  # keep reading to the end of the body so the connection can be reused
        if acc.done:
            continue
        try:
            obj = loads(data)
        except ValueError:
            raise _BadPayload(f"unreadable stream event: {data[:120]!r}") from None
        if not isinstance(obj, dict):
            raise _BadPayload(f"unexpected stream event: {data[:120]!r}")
        if obj.get("error"):
            raise _BadPayload(f"the provider sent an error in the stream: {_error_text(obj)}")
        model = obj.get("model")
        if isinstance(model, str) and model:
            acc.model = model
        usage = usage_from_provider(obj.get("usage"))
        if usage is not None:
            acc.usage = usage
        choices = obj.get("choices")
        if not choices or not isinstance(choices, list):
            continue
        choice = choices[0]
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        if isinstance(delta, dict):
            text = delta.get("content")
            if isinstance(text, str) and text:
                acc.parts.append(text)
                if on_delta is not None:
                    on_delta(text)
        reason = choice.get("finish_reason")
        if isinstance(reason, str) and reason:
            acc.finish_reason = reason
    if not acc.done and acc.finish_reason is None:
        raise _BadPayload("the provider closed the stream before it finished")


def _read_completion(body: bytes, acc: _Accumulator) -> None:
    try:
        obj = loads(body)
    except ValueError:
        raise _BadPayload(f"unreadable completion: {body[:120]!r}") from None
    if not isinstance(obj, dict):
        raise _BadPayload(f"unexpected completion: {body[:120]!r}")
    if obj.get("error"):
        raise _BadPayload(f"the provider sent an error: {_error_text(obj)}")
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _BadPayload("the completion has no choices")
    choice = choices[0]
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str) and content:
        acc.parts.append(content)
    reason = choice.get("finish_reason")
    acc.finish_reason = reason if isinstance(reason, str) else None
    model = obj.get("model")
    if isinstance(model, str) and model:
        acc.model = model
    acc.usage = usage_from_provider(obj.get("usage"))
    acc.done = True


def _error_text(obj: dict[str, Any]) -> str:
    err = obj.get("error")
    if isinstance(err, dict):
        return str(err.get("message") or err)[:300]
    return str(err)[:300]

"""Provider failures → routable error codes.

| code | when | retryable |
| --- | --- | --- |
| ``LLM_AUTH`` | 401 / 403 | no |
| ``LLM_RATE_LIMITED`` | 429; ``details.retryAfterMs`` from ``Retry-After`` / ``retry-after-ms`` | yes |
| ``LLM_UPSTREAM`` | 408, 409, 5xx, an error object or unreadable body in a 200 reply | yes |
| ``LLM_BAD_REQUEST`` | other 4xx (unknown model, bad parameters) | no |
| ``LLM_CONNECTION`` | connect/read/write errors and timeouts before the first chunk | yes |
| ``LLM_STREAM_BROKEN`` | any failure after the first chunk; ``details.partialContent`` | no |

Messages quote the provider's own error message (trimmed) and never the API key.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx

from weft_common.jsonutil import loads

from ..handlers.base import NodeFailure

__all__ = [
    "AUTH",
    "BAD_REQUEST",
    "CONNECTION",
    "RATE_LIMITED",
    "STREAM_BROKEN",
    "UPSTREAM",
    "connection_failure",
    "provider_message",
    "redact",
    "retry_after_ms",
    "status_failure",
    "stream_broken",
]

AUTH = "LLM_AUTH"
RATE_LIMITED = "LLM_RATE_LIMITED"
UPSTREAM = "LLM_UPSTREAM"
BAD_REQUEST = "LLM_BAD_REQUEST"
CONNECTION = "LLM_CONNECTION"
STREAM_BROKEN = "LLM_STREAM_BROKEN"

_MAX_QUOTED = 300


def redact(text: str, secret: str) -> str:
    """Remove the API key from text a provider may have echoed back."""
    if secret and len(secret) >= 4:
        return text.replace(secret, "***")
    return text


def provider_message(body: bytes, secret: str) -> str:
    """The provider's ``error.message`` (OpenAI shape), else the start of the body."""
    text = ""
    try:
        obj = loads(body)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        err = obj.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            text = err["message"]
        elif isinstance(err, str):
            text = err
        elif isinstance(obj.get("message"), str):
            text = obj["message"]
    if not text:
        text = body[: 4 * _MAX_QUOTED].decode("utf-8", errors="replace").strip()
    text = redact(text, secret)
    return text if len(text) <= _MAX_QUOTED else text[:_MAX_QUOTED] + "…"


def retry_after_ms(headers: httpx.Headers, *, now: float | None = None) -> int | None:
    """``retry-after-ms`` (OpenAI) or ``Retry-After`` (seconds or an HTTP date), in ms."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0, round(float(ms)))
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0, round(float(value) * 1000))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0, round((when.timestamp() - (time.time() if now is None else now)) * 1000))


def status_failure(node_id: str, status: int, headers: httpx.Headers, body: bytes,
                   secret: str) -> NodeFailure:
    """A non-2xx provider reply, before any chunk was emitted."""
    quoted = provider_message(body, secret)
    what = f"llm node {node_id!r}: provider answered HTTP {status}"
    if quoted:
        what += f": {quoted}"
    if status in (401, 403):
        return NodeFailure(what, AUTH, status=status, retryable=False)
    if status == 429:
        after = retry_after_ms(headers)
        details: dict[str, Any] | None = {"retryAfterMs": after} if after is not None else None
        return NodeFailure(what, RATE_LIMITED, status=status, details=details, retryable=True)
    if status >= 500 or status in (408, 409):
        return NodeFailure(what, UPSTREAM, status=status, retryable=True)
    return NodeFailure(what, BAD_REQUEST, status=status, retryable=False)


def connection_failure(node_id: str, exc: Exception, secret: str) -> NodeFailure:
    kind = type(exc).__name__
    detail = redact(str(exc), secret) or kind
    return NodeFailure(f"llm node {node_id!r}: connection to the provider failed ({kind}: "
                       f"{detail})", CONNECTION, retryable=True)


def stream_broken(node_id: str, why: str, partial: str, secret: str) -> NodeFailure:
    """A failure after chunks went out: never retried (the UI already showed them)."""
    return NodeFailure(f"llm node {node_id!r}: the stream broke after it started: "
                       f"{redact(why, secret)}", STREAM_BROKEN,
                       details={"partialContent": partial}, retryable=False)

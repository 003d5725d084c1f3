"""Trace context over HTTP: outbound httpx requests and the gateway's inbound ASGI requests.

``setup_telemetry`` instruments every httpx client created after it (so the ``http`` and ``llm``
nodes' requests carry ``traceparent`` without code changes); ``trace_httpx_client`` does it for
one client explicitly. ``trace_asgi_app`` wraps the gateway's ASGI app in a SERVER span per
request, continuing the caller's ``traceparent``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

import httpx

from ._telemetry_state import flags

__all__ = ["instrument_httpx_globally", "trace_asgi_app", "trace_httpx_client"]

ClientT = TypeVar("ClientT", httpx.Client, httpx.AsyncClient)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Probes and scrapes: not worth a trace each (OTEL_PYTHON_ASGI_EXCLUDED_URLS overrides).
_DEFAULT_EXCLUDED_URLS = "/healthz,/readyz,/metrics"


def instrument_httpx_globally() -> None:
    """Every httpx client created from now on gets a CLIENT span and ``traceparent`` per request."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    instrumentor = HTTPXClientInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(skip_dep_check=True)


def trace_httpx_client(client: ClientT) -> ClientT:
    """This client's requests get a CLIENT span and carry ``traceparent`` (no-op with tracing off
    or when the client is traced already); returns the client."""
    if not flags.tracing or getattr(client, "_is_instrumented_by_opentelemetry", False):
        return client
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    if HTTPXClientInstrumentor().is_instrumented_by_opentelemetry:
        return client  # every transport is traced already (setup_telemetry did it)
    HTTPXClientInstrumentor.instrument_client(client)
    return client


def trace_asgi_app(app: ASGIApp) -> ASGIApp:
    """The ASGI app behind a SERVER span per HTTP request (checked per request, so it costs one
    flag check while tracing is off). SSE responses stay one span: per-message spans are off."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    excluded = os.environ.get("OTEL_PYTHON_ASGI_EXCLUDED_URLS", _DEFAULT_EXCLUDED_URLS)
    traced = OpenTelemetryMiddleware(app, excluded_urls=excluded, exclude_spans=["receive", "send"])

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if flags.tracing and scope.get("type") == "http":
            await traced(scope, receive, send)
        else:
            await app(scope, receive, send)

    return asgi

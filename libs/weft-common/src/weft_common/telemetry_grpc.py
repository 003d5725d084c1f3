"""W3C trace context across gRPC (grpc.aio), hand-written to stay small and cheap.

- ``TracingServerInterceptor`` (installed by ``GrpcServer`` for every service): extracts
  ``traceparent`` from the call metadata and runs the handler inside a SERVER span; for
  server-streaming RPCs the span covers the whole stream and every step of the handler's
  generator runs in that context. Also records ``rpc.server.duration`` when metrics are on.
- ``instrumented_channel(target, settings)``: a grpc.aio channel whose unary-unary and
  unary-stream calls open a CLIENT span and inject ``traceparent`` into the metadata.
- Bidirectional streams whose messages are calls of their own (``CommitStream``): the sender
  puts each message's trace context in the message (``message_span``), the handler continues it
  (``MessageCall``): a CLIENT and a SERVER span per message, as a unary call would have.

(``opentelemetry-instrumentation-grpc`` has aio interceptors too; these exist because they cost
nothing when tracing is off, map Weft's abort-based errors to span statuses, and keep the
context right across the yields of a streaming handler.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ._telemetry_state import flags
from .grpc_server import channel_options
from .settings import CommonSettings

__all__ = [
    "MessageCall",
    "TracingClientInterceptor",
    "TracingServerInterceptor",
    "TracingStreamClientInterceptor",
    "client_interceptors",
    "end_message_span",
    "instrumented_channel",
    "message_span",
]

_tracer = trace.get_tracer("weft.grpc")

# Probes and tooling: not worth a trace each.
_UNTRACED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# Background polling (every worker, all the time): no spans, not even for the SQL they run (a
# trace each would bury the executions' traces); still counted in ``rpc.server.duration``.
QUIET_METHODS = frozenset(
    {
        "/weft.state.v1.StateService/ClaimExecutions",
        "/weft.state.v1.StateService/RenewLeases",
    }
)

# Server span statuses per the RPC semantic conventions: these codes are the server's fault.
_SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


# Ends of a call that are not the handler's failure (an abort carries its own status).
_NOT_FAILURES = (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit)


def _split_method(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return service, name


def _rpc_attributes(method: str) -> dict[str, Any]:
    service, name = _split_method(method)
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


# --------------------------------------------------------------------------- server side


def _metadata_carrier(metadata: Sequence[Any] | None) -> dict[str, str]:
    carrier: dict[str, str] = {}
    for key, value in metadata or ():
        if isinstance(value, str):
            carrier[key] = value
    return carrier


class _ServerCall:
    """One server RPC: its span, its context and its end."""

    __slots__ = ("attrs", "ctx", "method", "span", "start")

    def __init__(self, method: str, metadata: Sequence[Any] | None) -> None:
        self.method = method
        self.attrs = _rpc_attributes(method)
        self.start = time.perf_counter()
        self.span: Span | None = None
        self.ctx: otel_context.Context | None = None
        if method in QUIET_METHODS:
            self.ctx = otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True)
        elif flags.tracing:
            parent = propagate.extract(_metadata_carrier(metadata))
            self.span = _tracer.start_span(
                method.lstrip("/"), context=parent, kind=SpanKind.SERVER, attributes=self.attrs
            )
            self.ctx = trace.set_span_in_context(self.span, parent)

    def finish(self, context: grpc.aio.ServicerContext, exc: BaseException | None) -> None:
        code = _server_code(context, exc)
        self.end(code, exc, lambda: _details(context, exc))

    def end(
        self,
        code: grpc.StatusCode,
        exc: BaseException | None = None,
        details: Callable[[], str | None] = lambda: None,
    ) -> None:
        if self.span is not None:
            self.span.set_attribute("rpc.grpc.status_code", code.value[0])
            if exc is not None and not isinstance(exc, _NOT_FAILURES):
                self.span.record_exception(exc)
            if code in _SERVER_ERROR_CODES:
                self.span.set_status(Status(StatusCode.ERROR, details()))
            self.span.end()
        if flags.metrics:
            from .telemetry_metrics import metrics

            metrics.rpc_server_duration.record(
                time.perf_counter() - self.start,
                {**self.attrs, "rpc.grpc.status_code": code.value[0]},
            )


def _server_code(context: grpc.aio.ServicerContext, exc: BaseException | None) -> grpc.StatusCode:
    try:
        code = context.code()
    except Exception:  # older grpc: no code() on the aio context
        code = None
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        for member in grpc.StatusCode:
            if member.value[0] == code:
                return member
    if exc is None:
        return grpc.StatusCode.OK
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _details(context: grpc.aio.ServicerContext, exc: BaseException | None) -> str | None:
    try:
        details = context.details()
    except Exception:
        details = None
    if details:
        return details if isinstance(details, str) else bytes(details).decode(errors="replace")
    return f"{type(exc).__name__}: {exc}" if exc is not None else None


def _wrap_unary(fn: Callable[..., Awaitable[Any]], method: str, metadata: Any) -> Any:
    async def traced(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = _ServerCall(method, metadata)
        token = otel_context.attach(call.ctx) if call.ctx is not None else None
        try:
            response = await fn(request, context)
        except BaseException as exc:
            call.finish(context, exc)
            raise
        else:
            call.finish(context, None)
            return response
        finally:
            if token is not None:
                otel_context.detach(token)

    return traced


def _wrap_unary_stream(fn: Callable[..., AsyncIterator[Any]], method: str, metadata: Any) -> Any:
    async def traced(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        call = _ServerCall(method, metadata)
        # Attach around each step, not around the whole generator: the generator may be resumed
        # (or closed) from another context, where a token from here cannot be reset.
        ctx = call.ctx
        token = otel_context.attach(ctx) if ctx is not None else None
        try:
            stream = fn(request, context)
        finally:
            if token is not None:
                otel_context.detach(token)
        exc_seen: BaseException | None = None
        try:
            while True:
                token = otel_context.attach(ctx) if ctx is not None else None
                try:
                    item = await stream.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    if token is not None:
                        otel_context.detach(token)
                yield item
        except BaseException as exc:
            exc_seen = exc
            raise
        finally:
            aclose = getattr(stream, "aclose", None)
            if exc_seen is not None and aclose is not None:
                # Best-effort cleanup of a stream that already failed: its own error must win.
                with contextlib.suppress(Exception):
                    await aclose()
            call.finish(context, exc_seen)

    return traced


class MessageCall:
    """One message of a bidirectional stream handled as a call of its own (``CommitStream``):
    a SERVER span continuing the trace context the message carries, current while the message
    is handled, and ``rpc.server.duration``; set ``code`` (and ``error``) for how it ended.
    Nothing at all with tracing and metrics off.

        with MessageCall(method, request.traceparent, request.tracestate) as call:
            ...
            call.code = grpc.StatusCode.UNAVAILABLE
    """

    __slots__ = ("_call", "_method", "_token", "code", "error")

    def __init__(self, method: str, traceparent: str, tracestate: str = "") -> None:
        self.code = grpc.StatusCode.OK
        self.error: str | None = None
        self._call: _ServerCall | None = None
        self._token: object = None
        if flags.tracing or flags.metrics:
            carrier = [("traceparent", traceparent)] if traceparent else []
            if tracestate:
                carrier.append(("tracestate", tracestate))
            self._call = _ServerCall(method, carrier)

    def __enter__(self) -> MessageCall:
        call = self._call
        if call is not None and call.ctx is not None:
            self._token = otel_context.attach(call.ctx)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        call = self._call
        if call is None:
            return
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
        if exc is not None:
            self.code = (
                grpc.StatusCode.CANCELLED
                if isinstance(exc, asyncio.CancelledError)
                else grpc.StatusCode.UNKNOWN
            )
        call.end(self.code, exc, lambda: self.error)


class TracingServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """A SERVER span per RPC (child of the caller's ``traceparent``) and ``rpc.server.duration``."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or not (flags.tracing or flags.metrics):
            return handler
        method = handler_call_details.method
        if isinstance(method, bytes):
            method = method.decode()
        if method.startswith(_UNTRACED_PREFIXES):
            return handler
        metadata = handler_call_details.invocation_metadata
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method, metadata),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_unary_stream(handler.unary_stream, method, metadata),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


# --------------------------------------------------------------------------- client side


def _client_start(details: grpc.aio.ClientCallDetails) -> tuple[Span, grpc.aio.ClientCallDetails]:
    method = details.method.decode() if isinstance(details.method, bytes) else details.method
    span = _tracer.start_span(
        method.lstrip("/"), kind=SpanKind.CLIENT, attributes=_rpc_attributes(method)
    )
    metadata = grpc.aio.Metadata(*tuple(details.metadata or ()))
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    for key, value in carrier.items():
        metadata[key] = value
    return span, details._replace(metadata=metadata)


def _quiet(details: grpc.aio.ClientCallDetails) -> bool:
    method = details.method.decode() if isinstance(details.method, bytes) else details.method
    return method in QUIET_METHODS


def _client_end(span: Span, code: grpc.StatusCode, details: str | None = None) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, details))
    span.end()


def message_span(method: str) -> tuple[Span, str, str]:
    """A CLIENT span for one message of a bidirectional stream sent as a call of its own (see
    ``MessageCall``), with the ``traceparent`` and ``tracestate`` to put in the message. End it
    with ``end_message_span``."""
    span = _tracer.start_span(
        method.lstrip("/"), kind=SpanKind.CLIENT, attributes=_rpc_attributes(method)
    )
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return span, carrier.get("traceparent", ""), carrier.get("tracestate", "")


def end_message_span(span: Span, code: grpc.StatusCode, details: str | None = None) -> None:
    """Ends a ``message_span`` with the message's outcome."""
    _client_end(span, code, details)


class TracingClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Unary calls: a CLIENT span around the whole call, ``traceparent`` in the metadata."""

    async def intercept_unary_unary(
        self,
        continuation: Callable[..., Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        if not flags.tracing or _quiet(client_call_details):
            return await continuation(client_call_details, request)
        span, details = _client_start(client_call_details)
        try:
            call = await continuation(details, request)
            await call  # so the span covers the response; the caller's await gets the same result
        except grpc.aio.AioRpcError as exc:
            _client_end(span, exc.code(), exc.details())
            raise
        except BaseException as exc:
            cancelled = isinstance(exc, asyncio.CancelledError)
            _client_end(span, grpc.StatusCode.CANCELLED if cancelled else grpc.StatusCode.UNKNOWN)
            raise
        _client_end(span, grpc.StatusCode.OK)
        return call


_pending: set[asyncio.Task[None]] = set()


async def _end_stream_span(span: Span, call: Any) -> None:
    try:
        code = await call.code()
        details = await call.details() if code is not grpc.StatusCode.OK else None
    except BaseException:
        code, details = grpc.StatusCode.CANCELLED, None
    _client_end(span, code, details)


class TracingStreamClientInterceptor(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Server-streaming calls: ``traceparent`` in the metadata; the CLIENT span ends with the
    stream (its status is the stream's final status)."""

    async def intercept_unary_stream(
        self,
        continuation: Callable[..., Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        if not flags.tracing:
            return await continuation(client_call_details, request)
        span, details = _client_start(client_call_details)
        try:
            call = await continuation(details, request)
        except BaseException:
            _client_end(span, grpc.StatusCode.UNKNOWN)
            raise

        def done(finished: Any) -> None:
            task = asyncio.get_running_loop().create_task(_end_stream_span(span, finished))
            _pending.add(task)
            task.add_done_callback(_pending.discard)

        call.add_done_callback(done)
        return call


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """The tracing interceptors for a grpc.aio channel ([] while tracing is off: no cost)."""
    if not flags.tracing:
        return []
    return [TracingClientInterceptor(), TracingStreamClientInterceptor()]


def instrumented_channel(
    target: str,
    settings: CommonSettings,
    *,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """An insecure grpc.aio channel with Weft's options and trace propagation.

    Create channels after ``setup_telemetry`` (the interceptors are chosen here, and left out
    entirely while tracing is off).
    """
    return grpc.aio.insecure_channel(
        target,
        options=[*channel_options(settings), *options],
        interceptors=[*client_interceptors(), *interceptors] or None,
    )

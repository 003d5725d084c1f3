"""One gRPC server bootstrap for every service: grpc.aio, health checking, reflection, error
mapping, large message limits, and graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .errors import WeftError, trailing_metadata
from .settings import CommonSettings

__all__ = [
    "ErrorMappingInterceptor",
    "GrpcServer",
    "RunningService",
    "channel_options",
    "run_until_signal",
]

log = logging.getLogger("weft.grpc")


def channel_options(settings: CommonSettings) -> list[tuple[str, Any]]:
    size = settings.grpc_max_message_bytes
    return [
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", size),
        ("grpc.keepalive_time_ms", settings.grpc_keepalive_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


async def _abort(context: grpc.aio.ServicerContext, exc: WeftError) -> None:
    md = trailing_metadata(exc)
    if md:
        context.set_trailing_metadata(md)
    await context.abort(exc.status, exc.message)


def _wrap_unary(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(request, context)
        except WeftError as exc:
            await _abort(context, exc)

    return wrapper


def _wrap_stream(fn: Callable[..., Any]) -> Callable[..., Any]:
    if not inspect.isasyncgenfunction(fn):
        # A streaming handler that writes with ``context.write`` and returns (grpc's own aio
        # health Watch is one): a plain coroutine, wrapped like a unary handler.
        return _wrap_unary(fn)

    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            async for item in fn(request, context):
                yield item
        except WeftError as exc:
            await _abort(context, exc)

    return wrapper


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Turns domain errors (WeftError) into gRPC statuses with details in trailing metadata.

    The innermost interceptor: its continuation is the registered handler of the method, the
    same for every call, so the wrapped handler is made once per method (not once per call)."""

    def __init__(self) -> None:
        self._wrapped: dict[tuple[str, int], grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        key = (handler_call_details.method, id(handler))
        wrapped = self._wrapped.get(key)
        if wrapped is None:
            wrapped = self._wrapped[key] = _wrap_handler(handler)
        return wrapped


def _wrap_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary(handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_stream(handler.unary_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


class GrpcServer:
    """A grpc.aio server with health and reflection for the given service names.

    ``register(server)`` adds the servicers (``add_XServicer_to_server``).
    """

    def __init__(
        self,
        *,
        settings: CommonSettings,
        service_names: Sequence[str],
        register: Callable[[grpc.aio.Server], None],
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    ) -> None:
        self.settings = settings
        self.service_names = list(service_names)
        from .telemetry_grpc import TracingServerInterceptor  # here: it imports this module

        # Tracing outermost, so its span sees the status the error mapping produced.
        self.server = grpc.aio.server(
            interceptors=[TracingServerInterceptor(), *interceptors, ErrorMappingInterceptor()],
            options=[
                *channel_options(settings),
                # Accept the clients' keepalive pings (also between calls). gRPC's default
                # minimum interval is 5 minutes: more frequent pings earn strikes and a GOAWAY
                # "too_many_pings", which drops every call on that connection.
                ("grpc.http2.min_ping_interval_without_data_ms", settings.grpc_keepalive_ms // 2),
            ],
        )
        register(self.server)
        self.health = (
            health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self.port = 0

    async def start(self, address: str) -> int:
        """Bind (port 0 picks a free one) and start; returns the bound port."""
        self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"could not bind gRPC server to {address}")
        await self.server.start()
        for name in ["", *self.service_names]:
            await _maybe_await(self.health.set(name, health_pb2.HealthCheckResponse.SERVING))
        log.info("gRPC %s listening on port %d", ",".join(self.service_names), self.port)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        for name in ["", *self.service_names]:
            await _maybe_await(self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING))
        await self.server.stop(self.settings.grpc_shutdown_grace_s if grace is None else grace)


async def _maybe_await(value: Any) -> None:
    if asyncio.iscoroutine(value):
        await value


async def run_until_signal(
    start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
) -> None:
    """Start, wait for SIGTERM/SIGINT, then stop gracefully."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await start()
    try:
        await done.wait()
    finally:
        log.info("shutting down")
        await stop()


class RunningService(Protocol):
    """What every service's ``server.serve(settings)`` returns: started, bound, stoppable.

    ``weft up`` starts all four in one process through this, and each ``__main__`` does the same
    for one service.
    """

    port: int

    async def stop(self) -> None: ...

"""Run the gateway: uvicorn on the asyncio loop it is called from, bound before ``serve`` returns."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections.abc import Iterator

import uvicorn

from weft_common.telemetry_http import trace_asgi_app

from .app import Gateway, create_app
from .auth import TokenAuth
from .settings import GatewaySettings
from .upstream import Upstreams

__all__ = ["RunningGateway", "serve"]

log = logging.getLogger("weft.gateway")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the process owner (``__main__``, ``weft up``)
    decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class RunningGateway:
    """A started gateway: ``port`` is bound; ``stop()`` ends open streams and the server."""

    def __init__(self, server: _Server, task: asyncio.Task[None], gateway: Gateway, port: int) -> None:
        self._server = server
        self._task = task
        self.gateway = gateway
        self.port = port

    async def stop(self) -> None:
        await self.gateway.close_streams()
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.gateway.upstreams.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto is
    # TCP, and with Nagle on, a response written in two pieces waits for the client's delayed ACK
    # (~40 ms per response and per SSE frame).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def serve(settings: GatewaySettings) -> RunningGateway:
    """Start the HTTP API (port 0 picks a free one); refuses an open API beyond loopback."""
    host = settings.listen_host()
    auth = TokenAuth.from_config(settings.api_tokens, host=host, embedded=settings.embedded)
    gateway = Gateway(settings, Upstreams(settings), auth)
    sock = _bind(host, settings.listen_port())
    config = uvicorn.Config(
        trace_asgi_app(create_app(gateway)),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=math.ceil(settings.http_shutdown_grace_s),
        timeout_keep_alive=30,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="weft-gateway-http")
    while not server.started:
        if task.done():
            task.result()  # raises the startup error
            raise RuntimeError("gateway stopped during startup")
        await asyncio.sleep(0.01)
    port = sock.getsockname()[1]
    log.info("HTTP API on http://%s:%d (auth: %s)", host, port,
             "open (loopback, embedded)" if auth.open else f"{len(auth.owners)} token(s)")
    return RunningGateway(server, task, gateway, port)

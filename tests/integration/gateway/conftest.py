"""Fixtures: the gateway served over real HTTP, backed by in-test fakes of the gRPC services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from weft_stream_gateway.server import RunningGateway, serve
from weft_stream_gateway.settings import GatewaySettings

from .fakes import FakeStack, start_fakes


@pytest.fixture
async def fakes() -> AsyncIterator[FakeStack]:
    stack = await start_fakes()
    yield stack
    await stack.stop()


def gateway_settings(fakes: FakeStack, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "embedded": True, "http_host": "127.0.0.1", "http_port": 0, "api_tokens": "",
        "sse_heartbeat_s": 0.2, **fakes.addrs,
    }
    values.update(overrides)
    return GatewaySettings(**values)


@pytest.fixture
async def gateway(fakes: FakeStack) -> AsyncIterator[RunningGateway]:
    running = await serve(gateway_settings(fakes))
    yield running
    await running.stop()


@pytest.fixture
async def client(gateway: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.port}", timeout=10) as c:
        yield c

"""Bearer tokens: required when configured, and each token sees only what it created."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from weft_stream_gateway.auth import ExposureError
from weft_stream_gateway.server import serve

from .conftest import gateway_settings
from .fakes import FakeStack
from .sse_client import read_events
from .workflows import linear


@pytest.fixture
async def secured(fakes: FakeStack) -> AsyncIterator[str]:
    running = await serve(gateway_settings(fakes, api_tokens="alice:tok-a,tok-b", embedded=False))
    yield f"http://127.0.0.1:{running.port}"
    await running.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_requests_without_a_valid_token_are_401(secured: str) -> None:
    async with httpx.AsyncClient(base_url=secured) as c:
        for resp in (await c.get("/v1/workflows"), await c.post("/v1/executions", json={}),
                     await c.get("/v1/executions/x", headers=bearer("wrong"))):
            assert resp.status_code == 401
            assert resp.headers["content-type"].startswith("application/problem+json")
            assert resp.headers["www-authenticate"].startswith("Bearer")
        # Liveness and readiness stay open for probes.
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/readyz")).status_code == 200


async def test_each_token_sees_only_its_own(secured: str, fakes: FakeStack) -> None:
    async with httpx.AsyncClient(base_url=secured) as c:
        r = await c.post("/v1/workflows", json=linear("mine"), headers=bearer("tok-a"))
        assert r.status_code == 201
        started = await c.post("/v1/executions", json={"workflow": linear(), "input": {}}, headers=bearer("tok-a"))
        eid = started.json()["executionId"]
        assert fakes.world.executions[eid].execution.owner == "alice"
        assert (await c.get(f"/v1/executions/{eid}", headers=bearer("tok-a"))).status_code == 200
        for path in (f"/v1/executions/{eid}", f"/v1/executions/{eid}/nodes",
                     f"/v1/executions/{eid}/stream", "/v1/workflows/mine"):
            assert (await c.get(path, headers=bearer("tok-b"))).status_code == 404, path
        assert (await c.post(f"/v1/executions/{eid}/cancel", headers=bearer("tok-b"))).status_code == 404
        assert (await c.post(f"/v1/executions/{eid}/resume", json={"nodeId": "x", "input": {}},
                             headers=bearer("tok-b"))).status_code == 404
        assert (await c.get("/v1/workflows", headers=bearer("tok-b"))).json() == []
        assert [w["id"] for w in (await c.get("/v1/workflows", headers=bearer("tok-a"))).json()] == ["mine"]
        # A bare token gets a derived identity, never the secret itself.
        other = await c.post("/v1/executions", json={"workflow": linear(), "input": {}}, headers=bearer("tok-b"))
        owner_b = fakes.world.executions[other.json()["executionId"]].execution.owner
        assert owner_b.startswith("token-") and "tok-b" not in owner_b
        # EventSource cannot send headers: ?access_token= works for streams.
        async with c.stream("GET", f"/v1/executions/{eid}/stream", params={"access_token": "tok-a"}) as resp:
            assert resp.status_code == 200
            events = await read_events(resp)
        assert events[-1]["event"] == "execution:completed"


async def test_open_api_only_on_loopback_in_embedded_mode(fakes: FakeStack) -> None:
    with pytest.raises(ExposureError, match="WEFT_API_TOKENS"):
        await serve(gateway_settings(fakes, embedded=False))
    with pytest.raises(ExposureError, match="WEFT_API_TOKENS"):
        await serve(gateway_settings(fakes, embedded=True, http_host="0.0.0.0"))
    running = await serve(gateway_settings(fakes, embedded=True, http_host="127.0.0.1"))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.port}") as c:
            assert (await c.get("/v1/workflows")).status_code == 200
    finally:
        await running.stop()

"""Traces and metrics through the gateway: one trace from the HTTP request to the gRPC calls it
makes, and the open-SSE-streams gauge."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.trace import SpanKind

from weft_common.telemetry import TestTelemetry, telemetry_for_tests
from weft_stream_gateway.server import serve

from .conftest import gateway_settings
from .fakes import FakeStack, wait_until
from .sse_client import frames
from .workflows import APPROVAL, linear


@pytest.fixture
def telemetry() -> Iterator[TestTelemetry]:
    t = telemetry_for_tests()
    yield t
    t.stop()


async def test_http_request_and_its_grpc_calls_share_one_trace(
    telemetry: TestTelemetry, fakes: FakeStack
) -> None:
    running = await serve(gateway_settings(fakes))  # channels made after tracing is on
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.port}") as c:
            resp = await c.post("/v1/executions", json={"workflow": linear(), "input": {}})
            assert resp.status_code == 202
    finally:
        await running.stop()
    spans = telemetry.spans()
    (http,) = [s for s in spans if s.kind == SpanKind.SERVER and s.name == "POST /v1/executions"]
    grpc_calls = [s for s in spans if s.kind == SpanKind.CLIENT
                  and s.name == "weft.executor.v1.ExecutorService/StartExecution"]
    assert grpc_calls, [s.name for s in spans]
    # The executor call is part of the HTTP request's trace (and so is the executor's side).
    assert all(s.context.trace_id == http.context.trace_id for s in grpc_calls)
    executor_side = [s for s in spans if s.kind == SpanKind.SERVER
                     and s.name == "weft.executor.v1.ExecutorService/StartExecution"]
    assert executor_side and executor_side[0].context.trace_id == http.context.trace_id


async def test_active_sse_streams_gauge(telemetry: TestTelemetry, client: httpx.AsyncClient,
                                        fakes: FakeStack) -> None:
    before = telemetry.metric_value("weft.sse.active_streams")
    eid = (await client.post("/v1/executions", json={"workflow": APPROVAL, "input": {}})).json()["executionId"]
    async with client.stream("GET", f"/v1/executions/{eid}/stream") as resp:
        async for frame in frames(resp):
            if frame.get("event") == "execution:paused":
                break
        assert telemetry.metric_value("weft.sse.active_streams") == before + 1
    await wait_until(lambda: telemetry.metric_value("weft.sse.active_streams") == before)
    assert telemetry.metric_value("weft.events.fanout_lag") > 0  # a histogram: its count

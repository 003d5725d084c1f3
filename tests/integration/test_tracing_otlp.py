"""``weft up`` as users run it, exporting over OTLP to a receiver in this test: one execution is one
trace (gateway HTTP span, executor, dag-builder and state gRPC spans, SQL, execution and node
spans) and the ``http`` node's upstream receives that trace's ``traceparent``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from e2e.weft_up import WeftUp
from helpers.http_server import HttpTestServer
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

SERVER = 2  # opentelemetry.proto.trace.v1.Span.SpanKind SPAN_KIND_SERVER
CLIENT = 3


class Receiver(
    trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer
):
    """An OTLP/gRPC endpoint that keeps what it receives."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.service_names: set[str] = set()
        self.metric_names: set[str] = set()

    async def Export(self, request: Any, context: Any) -> Any:
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            for rs in request.resource_spans:
                for kv in rs.resource.attributes:
                    if kv.key == "service.name":
                        self.service_names.add(kv.value.string_value)
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        self.spans.append(
                            {
                                "name": span.name,
                                "kind": span.kind,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent": span.parent_span_id.hex(),
                                "attrs": {kv.key: _value(kv.value) for kv in span.attributes},
                            }
                        )
            return trace_service_pb2.ExportTraceServiceResponse()
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                self.metric_names.update(m.name for m in sm.metrics)
        return metrics_service_pb2.ExportMetricsServiceResponse()


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[int, Receiver]]:
    recv = Receiver()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(recv, server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(recv, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port, recv
    await server.stop(0)


@pytest.fixture
def upstream() -> Iterator[HttpTestServer]:
    with HttpTestServer() as server:
        yield server


async def test_weft_up_exports_one_trace_per_execution_over_otlp(
    receiver: tuple[int, Receiver], upstream: HttpTestServer, tmp_path: Path
) -> None:
    port, recv = receiver
    weft = WeftUp(
        tmp_path,
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
            "WEFT_HTTP_ALLOW_PRIVATE": "true",
        },
    )
    await weft.start()
    try:
        workflow = {
            "id": "otlp_traced",
            "nodes": [
                {"id": "start", "type": "start"},
                {
                    "id": "fetch",
                    "type": "http",
                    "config": {"method": "GET", "url": upstream.url("/echo")},
                },
                {"id": "done", "type": "output", "config": {"value": "{{fetch.status}}"}},
            ],
            "edges": [
                {"source": "start", "target": "fetch"},
                {"source": "fetch", "target": "done"},
            ],
        }
        async with httpx.AsyncClient(base_url=weft.url, timeout=30) as client:
            started = await client.post(
                "/v1/executions", json={"workflow": workflow, "input": {}},
                headers={"Accept": "application/json"},
            )  # fmt: skip
            assert started.status_code == 202, started.text
            execution_id = started.json()["executionId"]
            body: dict[str, Any] = {}
            for _ in range(200):
                body = (await client.get(f"/v1/executions/{execution_id}")).json()
                if body["status"] in ("SUCCEEDED", "FAILED"):
                    break
                await asyncio.sleep(0.05)
        assert body["status"] == "SUCCEEDED", body

        [request] = [r for r in upstream.requests if r.path == "/echo"]
        headers = {k.lower(): v for k, v in request.headers.items()}
        trace_id = headers["traceparent"].split("-")[1]

        def in_trace() -> list[dict[str, Any]]:
            return [s for s in recv.spans if s["trace_id"] == trace_id]

        wanted = {"execution", "StartExecution", "CompileWorkflow", "CommitStep", "POST"}
        for _ in range(100):  # spans arrive in batches every 100 ms
            names = " ".join(s["name"] for s in in_trace())
            if all(w in names for w in wanted) and any(
                s["attrs"].get("weft.execution.id") == execution_id for s in in_trace()
            ):
                break
            await asyncio.sleep(0.1)
        spans = in_trace()
    finally:
        assert await weft.stop() == 0

    assert recv.service_names == {"weft"}
    servers = {s["attrs"].get("rpc.service") for s in spans if s["kind"] == SERVER}
    assert {
        "weft.executor.v1.ExecutorService",
        "weft.dagbuilder.v1.DagBuilderService",
        "weft.state.v1.StateService",
    } <= servers, servers
    roots = [s for s in spans if not s["parent"]]
    assert len(roots) == 1 and roots[0]["kind"] == SERVER, roots  # the gateway's HTTP span
    by_id = {s["span_id"]: s for s in spans}
    assert all(s["parent"] in by_id for s in spans if s["parent"])  # one connected tree
    execution = next(s for s in spans if s["name"].startswith("execution "))
    assert execution["attrs"]["weft.execution.id"] == execution_id
    fetch = next(s for s in spans if s["attrs"].get("weft.node.id") == "fetch")
    assert fetch["parent"] == execution["span_id"]
    http_client = by_id[headers["traceparent"].split("-")[2]]
    assert http_client["kind"] == CLIENT and http_client["parent"] == fetch["span_id"]
    assert any(s["attrs"].get("db.system") == "sqlite" for s in spans)
    # Metrics went out over OTLP too (pushed every 500 ms, and flushed at shutdown).
    assert {
        "weft.executions.started",
        "weft.node.duration",
        "rpc.server.duration",
    } <= recv.metric_names

"""``setup_telemetry`` as a service runs it, in a fresh process (the OpenTelemetry globals are set
once per process): OTLP export to a receiver in the test (gRPC, and HTTP when the protocol
says so), the Prometheus scrape port, the standard ``OTEL_*`` variables, and
``OTEL_SDK_DISABLED``."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

CHILD = r"""
import json, sys
from weft_common.settings import CommonSettings
from weft_common.telemetry import execution_span, node_span, setup_telemetry
from weft_common.telemetry_metrics import metrics

telemetry = setup_telemetry("weft-executor", CommonSettings())
with execution_span("exec-1", "wf"):
    with node_span("fetch", "http"):
        pass
metrics.executions_finished.add(2, {"status": "SUCCEEDED"})
metrics.node_duration.record(0.003, {"node_type": "http", "status": "SUCCEEDED"})
print(json.dumps({"tracing": telemetry.tracing, "metrics": telemetry.metrics,
                  "port": telemetry.metrics_port}), flush=True)
sys.stdin.readline()  # the test scrapes, then lets us go
telemetry.shutdown()
"""


class _Receiver(
    trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer
):
    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], str]] = []  # (resource attributes, span name)
        self.metric_names: set[str] = set()

    async def Export(self, request: Any, context: Any) -> Any:
        return self.take(request)

    def take(self, request: Any) -> Any:
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            for rs in request.resource_spans:
                attrs = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    self.spans.extend((attrs, span.name) for span in ss.spans)
            return trace_service_pb2.ExportTraceServiceResponse()
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                self.metric_names.update(m.name for m in sm.metrics)
        return metrics_service_pb2.ExportMetricsServiceResponse()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[int, _Receiver]]:
    recv = _Receiver()
    server = grpc.aio.server()
    # One servicer object answers both services; each registration routes by its own method path.
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(recv, server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(recv, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port, recv
    await server.stop(0)


@pytest.fixture
def http_receiver() -> Iterator[tuple[int, _Receiver, list[str]]]:
    """An OTLP/HTTP receiver (``POST /v1/traces``, ``/v1/metrics``, protobuf bodies); also
    gives the paths it was sent to."""
    recv = _Receiver()
    paths: list[str] = []
    kinds = {
        "/v1/traces": trace_service_pb2.ExportTraceServiceRequest,
        "/v1/metrics": metrics_service_pb2.ExportMetricsServiceRequest,
    }

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            paths.append(self.path)
            kind = kinds.get(self.path)
            if kind is None or self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_response(404)
                self.end_headers()
                return
            payload = recv.take(kind.FromString(body)).SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], recv, paths
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _run_child(env: dict[str, str], during: Any = None) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "WEFT_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        env={**clean, **env},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    try:
        report = json.loads(line)
    except ValueError:
        proc.kill()
        raise AssertionError((line, await proc.stderr.read() if proc.stderr else b"")) from None
    if during is not None:
        report["during"] = await during(report)
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    report["stderr"] = err.decode()
    return report


async def test_otlp_export_with_service_name_and_resource_from_env(
    receiver: tuple[int, _Receiver],
) -> None:
    port, recv = receiver
    report = await _run_child(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test,service.version=9",
        }
    )
    assert report["tracing"] is True and report["metrics"] is True and report["port"] == 0
    names = {name for _attrs, name in recv.spans}
    assert names == {"execution wf", "http fetch"}
    attrs = recv.spans[0][0]
    assert attrs["service.name"] == "weft-executor"
    assert attrs["service.namespace"] == "weft"
    assert attrs["deployment.environment"] == "test"
    assert {"weft.executions.finished", "weft.node.duration"} <= recv.metric_names


async def test_otlp_over_http_when_the_protocol_says_so(
    http_receiver: tuple[int, _Receiver, list[str]], receiver: tuple[int, _Receiver]
) -> None:
    """``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``: both signals are POSTed to the endpoint's
    ``/v1/traces`` and ``/v1/metrics`` (Weft's encoding of the spans); a signal's own protocol
    variable wins over the general one."""
    port, recv, paths = http_receiver
    report = await _run_child(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        }
    )
    assert report["tracing"] is True and report["metrics"] is True
    assert {name for _attrs, name in recv.spans} == {"execution wf", "http fetch"}
    assert recv.spans[0][0]["service.name"] == "weft-executor"
    assert {"weft.executions.finished", "weft.node.duration"} <= recv.metric_names
    assert set(paths) == {"/v1/traces", "/v1/metrics"}
    assert "not supported" not in report["stderr"]

    grpc_port, grpc_recv = receiver
    recv.spans.clear()
    paths.clear()
    await _run_child(  # traces over gRPC, metrics over HTTP
        {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{grpc_port}",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"http://127.0.0.1:{port}/v1/metrics",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        }
    )
    assert {name for _attrs, name in grpc_recv.spans} == {"execution wf", "http fetch"}
    assert recv.spans == [] and paths == ["/v1/metrics"]


async def test_an_otlp_protocol_weft_does_not_speak_is_reported(
    receiver: tuple[int, _Receiver],
) -> None:
    port, recv = receiver
    report = await _run_child(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
            "OTEL_METRICS_EXPORTER": "none",
        }
    )
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=http/json is not supported" in report["stderr"]
    assert {name for _attrs, name in recv.spans} == {"execution wf", "http fetch"}  # over gRPC


async def test_otel_service_name_and_sampler_are_honoured(receiver: tuple[int, _Receiver]) -> None:
    port, recv = receiver
    await _run_child(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_SERVICE_NAME": "executor-eu-1",
            "OTEL_METRICS_EXPORTER": "none",
        }
    )
    assert {attrs["service.name"] for attrs, _ in recv.spans} == {"executor-eu-1"}
    assert recv.metric_names == set()
    recv.spans.clear()
    await _run_child(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_TRACES_SAMPLER": "always_off",
        }
    )
    assert recv.spans == []  # sampled out: nothing exported


async def test_sdk_disabled_installs_nothing(receiver: tuple[int, _Receiver]) -> None:
    port, recv = receiver
    report = await _run_child(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_SDK_DISABLED": "true",
            "WEFT_METRICS_PORT": str(_free_port()),
        }
    )
    assert report == {**report, "tracing": False, "metrics": False, "port": 0}
    assert recv.spans == [] and recv.metric_names == set()


async def test_nothing_configured_means_tracing_and_metrics_off() -> None:
    report = await _run_child({})
    assert (report["tracing"], report["metrics"], report["port"]) == (False, False, 0)


async def test_prometheus_scrape_endpoint_on_the_metrics_port() -> None:
    port = _free_port()

    async def scrape(report: dict[str, Any]) -> str:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{report['port']}/metrics")
        assert response.status_code == 200
        return response.text

    report = await _run_child({"WEFT_METRICS_PORT": str(port)}, during=scrape)
    assert report["port"] == port and report["metrics"] is True and report["tracing"] is False
    text = report["during"]
    assert 'weft_executions_finished_total{status="SUCCEEDED"} 2.0' in text
    assert 'weft_node_duration_seconds_count{node_type="http",status="SUCCEEDED"} 1.0' in text
    assert (
        'weft_node_duration_seconds_bucket{le="0.005",node_type="http",status="SUCCEEDED"} 1.0'
        in text
    )

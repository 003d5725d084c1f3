"""Execution and node spans, span links for resumed executions, metrics, log correlation, and
``traceparent`` on outbound httpx requests and inbound ASGI requests."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from weft_common.logging_setup import ContextFilter, JsonFormatter, log_context
from weft_common.telemetry import (
    TestTelemetry,
    execution_span,
    link_from_str,
    node_span,
    record_llm_usage,
    record_node_status,
    span_context_to_str,
    telemetry_for_tests,
)
from weft_common.telemetry_http import trace_asgi_app, trace_httpx_client
from weft_common.telemetry_metrics import metrics, record_event_lag, watch_ready_queue


@pytest.fixture
def tel() -> Iterator[TestTelemetry]:
    t = telemetry_for_tests()
    yield t
    t.stop()


def test_node_spans_are_children_of_the_execution_span(tel: TestTelemetry) -> None:
    with execution_span("exec-1", "order_triage") as ex:
        with node_span(
            "fetch", "http", [("each_line", 2), ("branches", 0)], 3, execution_id="exec-1"
        ):
            record_node_status("SUCCEEDED")
        with node_span("summarize", "llm", execution_id="exec-1"):
            record_llm_usage("gpt-test", 12, 5)
            record_node_status("FAILED", error_code="HTTP_STATUS", error_message="status 503")
    spans = {s.name: s for s in tel.spans()}
    assert set(spans) == {"execution order_triage", "http fetch", "llm summarize"}
    execution = spans["execution order_triage"]
    assert execution.context.span_id == ex.get_span_context().span_id
    assert execution.attributes == {
        "weft.execution.id": "exec-1",
        "weft.workflow.id": "order_triage",
    }
    fetch, summarize = spans["http fetch"], spans["llm summarize"]
    for node in (fetch, summarize):
        assert node.parent is not None and node.parent.span_id == execution.context.span_id
        assert node.context.trace_id == execution.context.trace_id
    assert fetch.attributes == {
        "weft.node.id": "fetch",
        "weft.node.type": "http",
        "weft.node.attempt": 3,
        "weft.node.scope": "each_line:2/branches:0",
        "weft.execution.id": "exec-1",
        "weft.node.status": "SUCCEEDED",
    }
    assert fetch.status.status_code is StatusCode.UNSET
    assert summarize.attributes is not None
    assert summarize.attributes["gen_ai.request.model"] == "gpt-test"
    assert summarize.attributes["gen_ai.usage.input_tokens"] == 12
    assert summarize.attributes["gen_ai.usage.output_tokens"] == 5
    assert summarize.attributes["weft.error.code"] == "HTTP_STATUS"
    assert summarize.status.status_code is StatusCode.ERROR
    assert summarize.status.description == "status 503"


async def test_exceptions_and_cancellation_end_node_spans(tel: TestTelemetry) -> None:
    with pytest.raises(ValueError, match="boom"):
        with node_span("bad", "transform"):
            raise ValueError("boom")

    async def cancelled_node() -> None:
        with node_span("slow", "wait"):
            await asyncio.sleep(10)

    task = asyncio.create_task(cancelled_node())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    spans = {s.name: s for s in tel.spans()}
    bad = spans["transform bad"]
    assert bad.status.status_code is StatusCode.ERROR
    assert [e.name for e in bad.events] == ["exception"]
    slow = spans["wait slow"]
    assert slow.attributes is not None and slow.attributes["weft.cancelled"] is True
    assert slow.status.status_code is StatusCode.UNSET
    assert slow.end_time is not None
    # Nothing leaked into the current context.
    assert not trace.get_current_span().get_span_context().is_valid


def test_resumed_execution_links_to_the_original_trace(tel: TestTelemetry) -> None:
    with execution_span("exec-2", "approval_flow"):
        stored = span_context_to_str()  # what the engine persists with the execution
    assert stored.startswith("00-") and len(stored) == 55

    # Days later, on another executor: a fresh context (no parent), the stored string only.
    token = otel_context.attach(otel_context.Context())
    try:
        with execution_span("exec-2", "approval_flow", links=[link_from_str(stored)], resumed=True):
            with node_span("approve", "approval", execution_id="exec-2"):
                pass
    finally:
        otel_context.detach(token)

    first, resumed = (s for s in tel.spans() if s.name == "execution approval_flow")
    if first.attributes and first.attributes.get("weft.execution.resumed"):
        first, resumed = resumed, first
    assert resumed.context.trace_id != first.context.trace_id  # a new trace ...
    assert resumed.parent is None
    assert len(resumed.links) == 1  # ... linked to the first run's execution span
    link = resumed.links[0]
    assert link.context.trace_id == first.context.trace_id
    assert link.context.span_id == first.context.span_id
    assert resumed.attributes is not None and resumed.attributes["weft.execution.resumed"] is True
    node = next(s for s in tel.spans() if s.name == "approval approve")
    assert node.context.trace_id == resumed.context.trace_id


def test_node_spans_are_skipped_under_a_trace_sampling_left_out(tel: TestTelemetry) -> None:
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    unsampled = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(0))
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(unsampled)))
    try:
        with node_span("n", "transform") as span:
            # Still the caller's context (propagated onwards with sampled=0), no new span.
            assert span.get_span_context().span_id == 0 or not span.is_recording()
            assert trace.get_current_span().get_span_context().trace_id == 0xABC
    finally:
        otel_context.detach(token)
    # No span for this node (spans of other traces are earlier tests' background work).
    assert [
        s.name for s in tel.spans() if s.name == "transform n" or s.context.trace_id == 0xABC
    ] == []


def test_link_from_str_rejects_missing_and_malformed_values() -> None:
    assert link_from_str("") is None
    assert link_from_str(None) is None
    assert link_from_str("garbage") is None
    assert link_from_str("00-" + "0" * 32 + "-" + "0" * 16 + "-01") is None  # invalid ids
    assert link_from_str("00-" + "z" * 32 + "-" + "1" * 16 + "-01") is None
    link = link_from_str("00-" + "a" * 32 + "-" + "b" * 16 + "-01")
    assert link is not None and link.context.trace_id == int("a" * 32, 16)
    assert span_context_to_str() == ""  # no current span


def test_metrics_count_what_happened(tel: TestTelemetry) -> None:
    before_ok = tel.metric_value("weft.executions.finished", status="SUCCEEDED")
    before_failed = tel.metric_value("weft.executions.finished", status="FAILED")
    before_tokens = tel.metric_value("weft.llm.tokens", model="m-count", direction="output")
    before_depth = tel.metric_value("weft.ready_queue.depth")
    before_nodes = tel.metric_value("weft.node.duration", node_type="http", status="SUCCEEDED")

    metrics.executions_finished.add(1, {"status": "SUCCEEDED"})
    metrics.executions_finished.add(1, {"status": "SUCCEEDED"})
    metrics.executions_finished.add(1, {"status": "FAILED"})
    depth = [3]
    watch_ready_queue(lambda: depth[0])
    for seconds in (0.01, 0.02, 0.5):
        metrics.node_duration.record(seconds, {"node_type": "http", "status": "SUCCEEDED"})
    record_llm_usage("m-count", 10, 7)
    record_llm_usage("m-count", 1, 3)

    assert tel.metric_value("weft.executions.finished", status="SUCCEEDED") - before_ok == 2
    assert tel.metric_value("weft.executions.finished", status="FAILED") - before_failed == 1
    assert (
        tel.metric_value("weft.llm.tokens", model="m-count", direction="output") - before_tokens
        == 10
    )
    assert tel.metric_value("weft.ready_queue.depth") - before_depth == 3
    depth[0] = 0
    assert tel.metric_value("weft.ready_queue.depth") == before_depth  # a gauge: the value now
    assert (
        tel.metric_value("weft.node.duration", node_type="http", status="SUCCEEDED") - before_nodes
        == 3
    )


def test_event_fanout_lag_is_measured_from_the_event_timestamp(tel: TestTelemetry) -> None:
    before = tel.metric_value("weft.events.fanout_lag")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 2)) + ".000Z"
    record_event_lag(
        '{"seq":3,"type":"node:completed","executionId":"e","timestamp":"' + stamp + '",'
        '"output":{"timestamp":"not this one"}}'
    )
    record_event_lag('{"seq":4,"type":"node:started"}')  # no timestamp: not recorded
    record_event_lag('{"timestamp":"garbage"}')
    assert tel.metric_value("weft.events.fanout_lag") - before == 1
    data = tel.reader.get_metrics_data()
    assert data is not None
    [lag] = [
        m
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "weft.events.fanout_lag"
    ]
    point = lag.data.data_points[0]
    assert 1.5 <= point.max <= 10  # ~2 s old (the max of all recordings so far)


def _json_logger() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter("weft-executor"))
    logger = logging.getLogger(f"test.telemetry.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_json_logs_carry_trace_span_execution_and_node_ids(tel: TestTelemetry) -> None:
    logger, stream = _json_logger()
    with execution_span("exec-3", "wf"):
        with node_span("fetch", "http") as span:
            logger.info("calling %s", "upstream")
    logger.info("outside")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    ctx = span.get_span_context()
    assert first["msg"] == "calling upstream"
    assert first["trace_id"] == format(ctx.trace_id, "032x")
    assert first["span_id"] == format(ctx.span_id, "016x")
    assert first["execution_id"] == "exec-3"
    assert first["node_id"] == "fetch"
    assert first["service"] == "weft-executor"
    assert first["level"] == "INFO" and first["ts"].endswith("Z")
    assert "trace_id" not in second and "execution_id" not in second and "node_id" not in second


def test_logs_carry_execution_ids_with_tracing_off(tel: TestTelemetry) -> None:
    tel.stop()
    logger, stream = _json_logger()
    with execution_span("exec-4", "wf"), node_span("n", "transform") as span:
        logger.warning("no tracing here")
    with log_context(execution_id="exec-5", node_id="m"):
        logger.warning("explicit context")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert not span.is_recording()
    assert first["execution_id"] == "exec-4" and first["node_id"] == "n"
    assert "trace_id" not in first
    assert second["execution_id"] == "exec-5" and second["node_id"] == "m"
    assert tel.spans() == []


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[tuple[str, list[dict[str, str]]]]:
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.seen
    server.shutdown()
    server.server_close()


async def test_outbound_httpx_requests_carry_traceparent(
    tel: TestTelemetry, upstream: tuple[str, list[dict[str, str]]]
) -> None:
    base, seen = upstream
    with execution_span("exec-6", "wf"), node_span("fetch", "http") as span:
        async with httpx.AsyncClient() as client:  # created after setup: traced automatically
            assert (await client.get(f"{base}/orders/1")).status_code == 200
        async with trace_httpx_client(httpx.AsyncClient()) as client:  # explicit, idempotent
            assert (await client.get(f"{base}/orders/2")).status_code == 200
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert len(seen) == 2
    for headers in seen:
        version, tid, _parent_id, _flags = headers["traceparent"].split("-")
        assert version == "00" and tid == trace_id
    # Only this trace: background work left by earlier tests in the process may add spans.
    http_spans = [
        s
        for s in tel.spans()
        if s.kind is SpanKind.CLIENT and s.context.trace_id == span.get_span_context().trace_id
    ]
    assert len(http_spans) == 2
    for s in http_spans:  # the HTTP client spans hang under the node span
        assert s.parent is not None and s.parent.span_id == span.get_span_context().span_id
    assert {h["traceparent"].split("-")[2] for h in seen} == {
        format(s.context.span_id, "016x") for s in http_spans
    }


async def test_asgi_requests_continue_the_callers_trace(tel: TestTelemetry) -> None:
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        assert scope["type"] == "http"
        inner = trace.get_current_span().get_span_context()
        body = format(inner.trace_id, "032x").encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    traced = trace_asgi_app(app)
    caller_trace, caller_span = "c" * 32, "d" * 16
    transport = httpx.ASGITransport(app=traced)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        token = otel_context.attach(otel_context.Context())  # no local parent: only the header
        try:
            response = await client.post(
                "/v1/executions", headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"}
            )
        finally:
            otel_context.detach(token)
    assert response.text == caller_trace
    server = next(s for s in tel.spans() if s.kind is SpanKind.SERVER)
    assert format(server.context.trace_id, "032x") == caller_trace
    assert server.parent is not None and format(server.parent.span_id, "016x") == caller_span


# --------------------------------------------------------------- lean node spans (the hot path)


async def test_node_spans_in_an_execution_record_errors_cancellation_and_nesting(
    tel: TestTelemetry,
) -> None:
    with execution_span("exec-7", "wf") as ex:
        with pytest.raises(ValueError, match="boom"):
            with node_span("bad", "transform", execution_id="exec-7"):
                raise ValueError("boom")

        async def cancelled_node() -> None:
            with node_span("slow", "wait", execution_id="exec-7"):
                await asyncio.sleep(10)

        task = asyncio.create_task(cancelled_node())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with node_span("outer", "subworkflow", execution_id="exec-7") as outer:
            assert trace.get_current_span() is outer  # what outbound calls are parented to
            with node_span("inner", "transform", execution_id="exec-7") as inner:
                assert trace.get_current_span() is inner
                # Code that copies the context (set_value) keeps the node span current.
                copied = otel_context.set_value("weft-test-key", 1)
                assert trace.get_current_span(copied) is inner
            assert trace.get_current_span() is outer
        assert trace.get_current_span() is ex  # the execution span again
        assert not outer.is_recording()
    spans = {s.name: s for s in tel.spans() if s.context.trace_id == ex.get_span_context().trace_id}
    execution = spans["execution wf"]
    bad = spans["transform bad"]
    assert bad.status.status_code is StatusCode.ERROR
    assert bad.status.description == "ValueError: boom"
    [event] = bad.events
    assert event.name == "exception"
    assert event.attributes is not None and event.attributes["exception.type"] == "ValueError"
    assert "boom" in str(event.attributes["exception.stacktrace"])
    slow = spans["wait slow"]
    assert slow.attributes is not None and slow.attributes["weft.cancelled"] is True
    assert slow.status.status_code is StatusCode.UNSET
    outer_span, inner_span = spans["subworkflow outer"], spans["transform inner"]
    assert inner_span.parent is not None
    assert inner_span.parent.span_id == outer_span.context.span_id
    for span in (bad, slow, outer_span):
        assert span.parent is not None and span.parent.span_id == execution.context.span_id
        assert span.context.trace_id == execution.context.trace_id
        assert span.context.trace_flags.sampled
        assert span.attributes is not None and span.attributes["weft.execution.id"] == "exec-7"
        assert span.start_time is not None and span.end_time is not None
        assert execution.start_time <= span.start_time <= span.end_time <= execution.end_time  # type: ignore[operator]
    assert len({s.context.span_id for s in spans.values()}) == len(spans)  # distinct ids
    assert json.loads(bad.to_json())["attributes"]["weft.node.id"] == "bad"


async def test_node_spans_reach_the_processors_within_a_second(tel: TestTelemetry) -> None:
    with execution_span("exec-8", "wf") as ex:
        with node_span("early", "transform"):
            pass

        def exported() -> list[str]:  # what the exporter holds, without flushing anything
            return [
                s.name
                for s in tel.exporter.get_finished_spans()
                if s.context.trace_id == ex.get_span_context().trace_id
            ]

        assert exported() == []  # batched: not handed over at the node's end ...
        for _ in range(60):
            if exported():
                break
            await asyncio.sleep(0.05)
        assert exported() == ["transform early"]  # ... but within a second, execution still open
        with node_span("late", "transform"):
            pass
    assert sorted(exported()) == ["execution wf", "transform early", "transform late"]


def test_node_spans_of_an_execution_sampling_left_out_cost_no_span(tel: TestTelemetry) -> None:
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    unsampled = SpanContext(0xABD, 0xDEE, is_remote=True, trace_flags=TraceFlags(0))
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(unsampled)))
    try:
        with execution_span("exec-9", "wf") as ex:
            assert not ex.is_recording()
            with node_span("n", "transform", execution_id="exec-9") as span:
                assert not span.is_recording()
                current = trace.get_current_span().get_span_context()
                assert current.trace_id == 0xABD and not current.trace_flags.sampled
    finally:
        otel_context.detach(token)
    assert [s.name for s in tel.spans() if s.context.trace_id == 0xABD] == []

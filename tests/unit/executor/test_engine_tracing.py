"""The engine's telemetry, in memory: a span per node attempt under the execution run's span (with
attempt, scope, status, error code, LLM usage), the first run's trace context kept as a step, the
resumed run linked to it, and the execution/node metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest
from helpers.engine import Script, W, flaky, sleep, start_json, value, wf
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from weft_common import telemetry_metrics
from weft_common.telemetry import TestTelemetry, telemetry_for_tests
from weft_common.telemetry_otlp import encode_spans_bytes
from weft_common.telemetry_spans import flush_node_spans, lean_spans
from weft_executor.engine import Resume
from weft_executor.handlers.base import NodeResult
from weft_executor.tracing import (
    TRACE_STEP_KEY,
    begin_execution_run,
    end_execution_run,
)


@pytest.fixture
def tel() -> Iterator[TestTelemetry]:
    t = telemetry_for_tests()
    yield t
    t.stop()


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def _node_spans(tel: TestTelemetry, node_id: str) -> list[ReadableSpan]:
    spans = [s for s in tel.spans() if _attrs(s).get("weft.node.id") == node_id]
    return sorted(spans, key=lambda s: _attrs(s)["weft.node.attempt"])


async def _run(
    workflow: dict[str, Any], *, first_run: bool = True, stored: str = "", **kw: Any
) -> Any:
    """What the worker does: the run's span around the engine run, in this task."""
    token = otel_context.attach(otel_context.Context())  # a fresh trace per run
    try:
        begin_execution_run("ex-1", workflow["id"], first_run=first_run, stored_traceparent=stored)
        try:
            run = start_json(workflow, **kw)
            await run.wait()
        finally:
            end_execution_run()
    finally:
        otel_context.detach(token)
    return run


async def test_each_attempt_is_a_span_under_the_execution_span(
    tel: TestTelemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = Script.install(monkeypatch)
    script.on("w", flaky(2, output="fine"))
    workflow = wf(
        W("w", retry={"maxAttempts": 3, "initialIntervalMs": 1}),
        {"id": "t", "type": "transform", "config": {"expression": "w.output"}},
        edges=[("start", "w"), ("w", "t")],
    )
    before = tel.metric_value("weft.node.duration", node_type="wait", status="FAILED")
    finished = tel.metric_value("weft.executions.finished", status="SUCCEEDED")
    run = await _run(workflow)
    assert run.outcome.status == "SUCCEEDED"
    assert telemetry_metrics._durations == []  # the run's node durations recorded by its end

    [execution] = [s for s in tel.spans() if s.name == "execution t"]
    attempts = _node_spans(tel, "w")
    assert [_attrs(s)["weft.node.attempt"] for s in attempts] == [1, 2, 3]
    assert [_attrs(s)["weft.node.status"] for s in attempts] == ["FAILED", "FAILED", "SUCCEEDED"]
    assert _attrs(attempts[0])["weft.error.code"] == "FLAKY"
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert attempts[2].status.status_code is StatusCode.UNSET
    for span in [*attempts, *_node_spans(tel, "t"), *_node_spans(tel, "start")]:
        assert span.parent is not None and span.parent.span_id == execution.context.span_id
        assert span.context.trace_id == execution.context.trace_id
    assert _attrs(_node_spans(tel, "t")[0])["weft.node.type"] == "transform"
    assert tel.metric_value("weft.node.duration", node_type="wait", status="FAILED") - before == 2
    assert tel.metric_value("weft.executions.finished", status="SUCCEEDED") - finished == 1


class _TakesRecords(SpanExporter):
    """Keeps what its batch processor hands it, lean records as they are."""

    weft_lean_records = True

    def __init__(self) -> None:
        self.items: list[Any] = []

    def export(self, spans: Any) -> SpanExportResult:
        self.items.extend(spans)
        return SpanExportResult.SUCCESS


def _mixed_workflow(
    monkeypatch: pytest.MonkeyPatch, *, iterations: int, first: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``first`` (each returning its id), ``w`` (fails once, then succeeds), a loop of
    ``iterations`` ``inner`` nodes, ``look`` (sets ``looked`` on the current span)."""

    async def looks(ctx: Any) -> Any:
        trace.get_current_span().set_attribute("looked", ctx.attempt)
        return NodeResult(output=1)

    script = Script.install(monkeypatch)
    script.on("w", flaky(1, output="fine"))
    script.on("look", looks)
    script.on("inner", value("x"))
    for node_id in first:
        script.on(node_id, value(node_id))
    chain = ["start", *first, "w", "each", "look"]
    return wf(
        *(W(node_id) for node_id in first),
        W("w", retry={"maxAttempts": 2, "initialIntervalMs": 1}),
        {"id": "each", "type": "loop", "config": {"kind": "for", "count": iterations}},
        W("inner", parent="each"),
        W("look"),
        edges=list(pairwise(chain)),
    )


async def _run_exported(
    tel: TestTelemetry, workflow: dict[str, Any], *, runs: int, alone: bool
) -> _TakesRecords:
    """``workflow`` run ``runs`` times (each must succeed) with a batch processor whose exporter
    takes lean records, the provider's only one if ``alone``, else beside the test's. (Spans
    of earlier tests still pending go to the test's exporter first; the process's provider is
    shared, and spans that end meanwhile elsewhere may still reach this one.)"""
    flush_node_spans()
    tel.provider.force_flush()
    exporter = _TakesRecords()
    processor = BatchSpanProcessor(exporter)
    multi: Any = tel.provider._active_span_processor
    saved = multi._span_processors
    if alone:
        multi._span_processors = (processor,)
    else:
        tel.provider.add_span_processor(processor)
    try:
        for _ in range(runs):
            run = await _run(workflow)
            assert run.outcome.status == "SUCCEEDED"
        processor.force_flush()
    finally:
        multi._span_processors = saved
        processor.shutdown()
    return exporter


def _shape(span: ReadableSpan) -> tuple[Any, ...]:
    parent = span.parent.span_id if span.parent is not None else 0
    return (span.context.span_id, parent, span.name, _attrs(span), span.start_time,
            span.end_time, span.status.status_code)  # fmt: skip


async def test_attempts_nobody_looked_at_reach_an_exporter_that_takes_them_as_lean_records(
    tel: TestTelemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most attempts are kept as lean records, never made spans: an exporter that takes records
    (Weft's OTLP one) gets them as they are, and they encode as the spans every other processor
    gets (made from the same records). Attempts that failed, or whose code asked for the
    current span, are spans from then on: the attribute set on one is exported."""
    workflow = _mixed_workflow(monkeypatch, iterations=3)
    # Beside the test's exporter; two runs (traces, executions) in the same batches.
    exporter = await _run_exported(tel, workflow, runs=2, alone=False)

    records = [item for item in exporter.items if type(item) is tuple]
    assert len(records) >= 10  # start, w (2nd attempt), 3 x inner, each: never looked at
    spans = lean_spans(exporter.items)
    node_spans = [s for s in spans if "weft.node.id" in _attrs(s)]
    assert sorted(map(_shape, node_spans)) == sorted(
        _shape(s) for s in tel.spans() if "weft.node.id" in _attrs(s)
    )
    looks = [s for s in node_spans if _attrs(s)["weft.node.id"] == "look"]
    assert [(_attrs(s)["looked"], _attrs(s)["weft.node.status"]) for s in looks] == [
        (1, "SUCCEEDED")
    ] * 2
    assert len({s.context.trace_id for s in node_spans}) == 2
    assert encode_spans_bytes(exporter.items) == encode_spans(spans).SerializeToString()


def _masked(request: bytes) -> list[Any]:
    """The spans of a serialized export request, span ids left out (sorted by name, start)."""
    parsed = ExportTraceServiceRequest.FromString(request)
    spans = [
        span
        for resource in parsed.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    for span in spans:
        span.span_id = b""
    return sorted(spans, key=lambda span: (span.name, span.start_time_unix_nano))


async def test_a_sole_exporter_gets_first_attempts_as_node_run_records(
    tel: TestTelemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With Weft's exporter the provider's only one, a first attempt nobody looked at reaches it
    as a record of the engine's node run (nothing made or drawn for its span while it ran): it
    encodes as the span made from it, its span id drawn at encoding, a child of the run's span.
    Attempts that are spans (the node's code asked for the current span, a retry) are exported
    as before."""
    workflow = _mixed_workflow(monkeypatch, iterations=2, first=("a", "b"))
    exporter = await _run_exported(tel, workflow, runs=1, alone=True)
    spans = lean_spans(exporter.items)  # (their span ids drawn for these)
    [execution] = [s for s in spans if s.name == "execution t"]
    trace_id = execution.context.trace_id
    items = [  # (what another test's code still running may have ended meanwhile left out)
        item
        for item, span in zip(exporter.items, spans, strict=True)
        if span.context.trace_id == trace_id
    ]
    spans = [span for span in spans if span.context.trace_id == trace_id]

    records = [item for item in items if type(item) is tuple]
    node_runs = [item for item in records if type(item[1]) is not tuple]
    # First attempts nobody looked at (the loop's iterations too: a child of the run's span).
    assert sorted(item[1].node.id for item in node_runs) == ["a", "b", "inner", "inner", "start"]
    assert all(item[1].span is None for item in node_runs)  # nothing kept on the node runs
    by_node = {item[1].node.id: item for item in node_runs}
    node_spans = [s for s in spans if "weft.node.id" in _attrs(s)]
    assert sorted((_attrs(s)["weft.node.id"], _attrs(s)["weft.node.attempt"]) for s in node_spans) == [
        ("a", 1), ("b", 1), ("inner", 1), ("inner", 1), ("look", 1), ("start", 1),
        ("w", 1), ("w", 2),
    ]  # fmt: skip
    [looked] = [s for s in node_spans if _attrs(s)["weft.node.id"] == "look"]
    assert _attrs(looked)["looked"] == 1

    request = encode_spans_bytes(items)
    assert _masked(request) == _masked(encode_spans(spans).SerializeToString())
    run_span_id = execution.context.span_id.to_bytes(8, "big")
    for span in _masked(request):
        assert span.trace_id == trace_id.to_bytes(16, "big")
        if span.name != "execution t":
            assert span.parent_span_id == run_span_id, span.name
    ids = [
        span.span_id
        for resource in ExportTraceServiceRequest.FromString(request).resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert len(set(ids)) == len(ids) and all(len(i) == 8 and any(i) for i in ids)
    # The record's times are the node run's: its start (node:started) and the attempt's end.
    start, end = by_node["a"][1].started_at, by_node["a"][2]
    [a] = [s for s in node_spans if _attrs(s)["weft.node.id"] == "a"]
    assert (a.start_time, a.end_time) == (int(start * 1e9), end)
    assert a.start_time <= a.end_time


async def test_timeouts_and_scopes_are_on_the_node_spans(
    tel: TestTelemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = Script.install(monkeypatch)
    script.on("slow", sleep(5))
    script.on("inner", value("x"))
    workflow = wf(
        {"id": "each", "type": "loop", "config": {"kind": "for", "count": 2}},
        W("inner", parent="each"),
        W("slow", timeoutMs=50),
        edges=[("start", "each"), ("each", "slow")],
    )
    run = await _run(workflow)
    assert run.outcome.status == "FAILED"
    [slow] = _node_spans(tel, "slow")
    assert _attrs(slow)["weft.node.status"] == "FAILED"
    assert _attrs(slow)["weft.error.code"] == "TIMEOUT"
    scopes = sorted(_attrs(s)["weft.node.scope"] for s in _node_spans(tel, "inner"))
    assert scopes == ["each:0", "each:1"]


async def test_llm_usage_goes_on_the_span_and_the_token_counter(
    tel: TestTelemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = Script.install(monkeypatch)
    script.on(
        "chat",
        value(
            {
                "content": "hi",
                "model": "test-model",
                "usage": {"inputTokens": 11, "outputTokens": 4},
            },
            token_usage={"inputTokens": 11, "outputTokens": 4},
        ),
    )
    before = tel.metric_value("weft.llm.tokens", model="test-model", direction="input")
    run = await _run(wf(W("chat"), edges=[("start", "chat")]))
    assert run.outcome.status == "SUCCEEDED"
    [chat] = _node_spans(tel, "chat")
    assert _attrs(chat)["gen_ai.request.model"] == "test-model"
    assert _attrs(chat)["gen_ai.usage.input_tokens"] == 11
    assert _attrs(chat)["gen_ai.usage.output_tokens"] == 4
    assert tel.metric_value("weft.llm.tokens", model="test-model", direction="input") - before == 11


async def test_a_resumed_run_links_to_the_first_runs_trace(tel: TestTelemetry) -> None:
    workflow = wf(
        {"id": "ok", "type": "approval", "config": {"reason": "sure?"}},
        edges=[("start", "ok")],
        id="approval_flow",
    )
    started = tel.metric_value("weft.executions.started")
    run = await _run(workflow)
    assert run.outcome.status == "PAUSED"
    [first] = [s for s in tel.spans() if s.name == "execution approval_flow"]
    stored = run.store.steps[TRACE_STEP_KEY]
    traceparent = stored.data["traceparent"]
    assert traceparent.startswith(f"00-{first.context.trace_id:032x}-{first.context.span_id:016x}-")
    assert tel.metric_value("weft.executions.started") - started == 1

    # Later, another worker: continue from the store with the resume, in a new trace.
    token = otel_context.attach(otel_context.Context())
    try:
        begin_execution_run(
            "ex-1", "approval_flow", first_run=False, stored_traceparent=traceparent
        )
        try:
            run.continue_with(resumes=[Resume("r1", "ok", (), {"yes": True})])
            outcome = await asyncio.wait_for(run.handle.result(), 10)
        finally:
            end_execution_run()
    finally:
        otel_context.detach(token)
    assert outcome.status == "SUCCEEDED"
    assert tel.metric_value("weft.executions.started") - started == 1  # a resume is no new start
    [second] = [
        s
        for s in tel.spans()
        if s.name == "execution approval_flow"
        and s is not first
        and s.context.span_id != first.context.span_id
    ]
    assert second.context.trace_id != first.context.trace_id
    assert [(link.context.trace_id, link.context.span_id) for link in second.links] == [
        (first.context.trace_id, first.context.span_id)
    ]
    assert _attrs(second)["weft.execution.resumed"] is True
    assert run.store.steps[TRACE_STEP_KEY].data["traceparent"] == traceparent  # kept as it was


async def test_tracing_off_records_no_trace_step(monkeypatch: pytest.MonkeyPatch) -> None:
    telemetry_for_tests().stop()
    script = Script.install(monkeypatch)
    script.on("w", value(1))
    run = await _run(wf(W("w"), edges=[("start", "w")]))
    assert run.outcome.status == "SUCCEEDED"
    assert TRACE_STEP_KEY not in run.store.steps

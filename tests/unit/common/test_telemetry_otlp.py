"""Weft's OTLP trace encoder against the SDK's: the same ``ExportTraceServiceRequest`` (the same
bytes, even) for SDK spans of every kind and feature (events, links, statuses, every attribute
type, trace state, remote parents, several resources and scopes) and for lean node spans; an
attribute neither can encode is skipped by both."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from weft_common.logging_setup import LOG_IDS
from weft_common.telemetry import TestTelemetry, execution_span, telemetry_for_tests
from weft_common.telemetry_otlp import WeftOTLPSpanExporter, encode_spans_bytes
from weft_common.telemetry_spans import attempt_span, node_span, record_node_status


@pytest.fixture
def tel() -> Iterator[TestTelemetry]:
    t = telemetry_for_tests()
    yield t
    t.stop()


def _same(spans: list[Any]) -> ExportTraceServiceRequest:
    ours = encode_spans_bytes(spans)
    theirs = encode_spans(spans)
    assert ExportTraceServiceRequest.FromString(ours) == theirs
    assert ours == theirs.SerializeToString()
    return theirs


def _provider(resource: Resource) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_sdk_spans_encode_as_the_sdk_encodes_them() -> None:
    provider, exporter = _provider(
        Resource.create({"service.name": "enc", "n": 3, "ok": True}, schema_url="https://s/1")
    )
    other, other_exporter = _provider(Resource.create({"service.name": "other"}))
    tracer = provider.get_tracer("weft.test", "1.2", schema_url="https://s/2", attributes={"a": 1})
    plain = provider.get_tracer("plain")
    remote = SpanContext(
        0xABC,
        0xDEF,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("k", "v")]),
    )
    values: dict[str, Any] = {
        "str": "text é ✓",
        "empty": "",
        "true": True,
        "false": False,
        "zero": 0,
        "neg": -5,
        "big": 2**62,
        "float": 1.5,
        "nfloat": -0.0,
        "strs": ["a", "b"],
        "ints": (1, 2, 3),
        "bools": [True, False],
        "floats": [0.5],
        "nothing": [],
    }
    with tracer.start_as_current_span(
        "root", kind=SpanKind.SERVER, context=set_span_in_context(NonRecordingSpan(remote))
    ) as root:
        root.set_attributes(values)
        root.add_event("evt", {"x": 1, "y": "z"})
        root.add_event("bare")
        with tracer.start_as_current_span(
            "child",
            kind=SpanKind.CLIENT,
            links=[Link(remote, {"why": "resume"}), Link(root.get_span_context())],
        ) as child:
            child.set_status(Status(StatusCode.ERROR, "boom"))
            child.record_exception(ValueError("bad"))
        for kind in (SpanKind.PRODUCER, SpanKind.CONSUMER, SpanKind.INTERNAL):
            with plain.start_as_current_span(f"k{kind.value}", kind=kind) as s:
                s.set_status(Status(StatusCode.OK))
    with other.get_tracer("x").start_as_current_span("elsewhere"):
        pass
    spans = [*exporter.get_finished_spans(), *other_exporter.get_finished_spans()]
    request = _same(spans)
    assert len(request.resource_spans) == 2
    assert len(request.resource_spans[0].scope_spans) == 2
    assert sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans) == 6
    _same(spans[::-1])  # other orders group the same way


def test_an_attribute_the_sdk_cannot_encode_is_skipped_by_both(caplog: Any) -> None:
    provider, exporter = _provider(Resource.create({}))
    with provider.get_tracer("t").start_as_current_span("s") as span:
        span.set_attribute("fine", 1)
        span.set_attribute("huge", 2**70)  # beyond int64
        span.set_attribute("mixed", [1, 2**70])
    request = _same(list(exporter.get_finished_spans()))
    [encoded] = request.resource_spans[0].scope_spans[0].spans
    assert [kv.key for kv in encoded.attributes] == ["fine"]
    assert "Failed to encode key huge" in caplog.text


def test_values_beyond_span_attributes_encode_as_the_sdk_encodes_them() -> None:
    """Mappings and ``None`` (allowed in events of some instrumentations) through a stand-in."""
    provider, exporter = _provider(Resource.create({}))
    with provider.get_tracer("t").start_as_current_span("s"):
        pass
    [real] = exporter.get_finished_spans()

    class Stand(type(real)):  # type: ignore[misc]
        @property
        def attributes(self) -> Any:
            return {"map": {"a": 1, "b": [True, None], "c": {"d": b"\x00\xff"}}, "none": None}

    stand = Stand.__new__(Stand)
    stand.__dict__.update(real.__dict__)
    _same([stand])


def _lean_run(execution_id: str) -> int:
    """One execution run of lean node spans of every shape; its trace id."""
    with execution_span(execution_id, "wf") as ex:
        for i in range(20):
            ids = LOG_IDS.set((execution_id, f"n{i}", None))
            scope = (("loop", i),) if i % 2 else ()
            with attempt_span(f"n{i}", "wait", scope, i, execution_id) as s:
                if i == 3:
                    record_node_status("FAILED", error_code="X", error_message="m", span=s)
                if i == 4:
                    s.set_attribute("gen_ai.usage.input_tokens", 12)
                if i == 5:
                    record_node_status("PAUSED", span=s)
            LOG_IDS.reset(ids)
        for i in range(2):  # one node in two iterations of a loop: two scopes
            ids = LOG_IDS.set((execution_id, "body", None))
            with attempt_span("body", "wait", (("loop", i),), 1, execution_id):
                pass
            LOG_IDS.reset(ids)
        with pytest.raises(ValueError):
            with node_span("raises", "transform", execution_id=execution_id):  # an event
                raise ValueError("boom")
        with node_span("outer", "subworkflow", execution_id=execution_id) as outer:
            outer.update_name("renamed outer")
            with node_span("inner", "transform", execution_id=execution_id):
                pass
        # A scope given as a list of mappings (unhashable): keyed by its text.
        with node_span(
            "listed", "wait", [{"container": "each", "index": 1}], execution_id=execution_id
        ):
            pass
        with node_span("plain", "transform"):  # no execution id attribute
            ids = LOG_IDS.set((execution_id, "nested", LOG_IDS.get()[2]))
            with attempt_span("nested", "wait", (), 1, execution_id):  # its parent: "plain"
                pass
            LOG_IDS.reset(ids)
    return ex.get_span_context().trace_id  # type: ignore[no-any-return]


def test_lean_node_spans_encode_as_the_sdk_encodes_them(tel: TestTelemetry) -> None:
    trace_id = _lean_run("exec-o")
    spans = [s for s in tel.spans() if s.context.trace_id == trace_id]
    assert len(spans) == 29
    _same(spans)


def test_lean_spans_of_a_workflow_run_again_encode_as_the_sdk_encodes_them(
    tel: TestTelemetry,
) -> None:
    """The second run's spans are put together from the parts the first run's left (same nodes,
    another trace, execution id, span ids and times)."""
    first, second = _lean_run("exec-1"), _lean_run("exec-22")
    for trace_id in (first, second, first):
        spans = [s for s in tel.spans() if s.context.trace_id == trace_id]
        assert len(spans) == 29
        _same(spans)
    _same(list(tel.spans()))


def test_the_exporter_sends_the_same_request() -> None:
    provider, exporter = _provider(Resource.create({"service.name": "x"}))
    with provider.get_tracer("t").start_as_current_span("s") as span:
        span.set_attribute("k", "v")
    spans = list(exporter.get_finished_spans())
    weft = WeftOTLPSpanExporter(endpoint="http://127.0.0.1:1", insecure=True)
    try:
        assert weft._translate_data(spans) == encode_spans(spans).SerializeToString()
    finally:
        weft.shutdown()

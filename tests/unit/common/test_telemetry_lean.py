"""Telemetry on the engine's hot path: ``attempt_span`` (the per-attempt span, current without
setting the log ids again, SUCCEEDED unless told otherwise), the bulk hand-over of ended node
spans to an SDK ``BatchSpanProcessor`` (its queue filled in one go: every span exactly once, in
order, with its parent, at a batch, at the execution's end and at exit), and node durations
recorded in batches (every one of them in every collection)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from weft_common import telemetry_spans
from weft_common.logging_setup import LOG_IDS
from weft_common.telemetry import TestTelemetry, execution_span, telemetry_for_tests
from weft_common.telemetry_spans import UnsampledRun, attempt_span, record_node_status


@pytest.fixture
def tel() -> Iterator[TestTelemetry]:
    t = telemetry_for_tests()
    yield t
    t.stop()


def _of(tel: TestTelemetry, trace_id: int) -> dict[str, Any]:
    return {s.name: s for s in tel.spans() if s.context.trace_id == trace_id}


async def test_attempt_span_is_current_without_setting_the_log_ids(tel: TestTelemetry) -> None:
    seen: dict[str, Any] = {}
    with execution_span("exec-a", "wf") as ex:
        ids = LOG_IDS.set(("exec-a", "fetch", LOG_IDS.get()[2], None))  # as the engine's attempts
        attempt_ids = LOG_IDS.get()
        with attempt_span("fetch", "http", (("loop", 2),), 3, "exec-a") as span:
            assert LOG_IDS.get() is attempt_ids  # nothing set on top of the caller's ids
            assert trace.get_current_span() is span  # what outbound calls are parented to
            # Code that copies the context (set_value) and tasks the node starts see it too.
            copied = otel_context.set_value("weft-test-key", 1)
            assert trace.get_current_span(copied) is span

            async def child() -> None:
                seen["child"] = trace.get_current_span()

            await asyncio.create_task(child())
        assert trace.get_current_span() is ex  # ended: the execution span again, ids or not
        LOG_IDS.reset(ids)
    assert seen["child"] is span
    assert not span.is_recording()
    spans = _of(tel, ex.get_span_context().trace_id)
    node = spans["http fetch"]
    assert node.parent is not None and node.parent.span_id == ex.get_span_context().span_id
    assert node.attributes == {
        "weft.node.id": "fetch",
        "weft.node.type": "http",
        "weft.node.attempt": 3,
        "weft.node.scope": "loop:2",
        "weft.execution.id": "exec-a",
        "weft.node.status": "SUCCEEDED",  # the default of a block that returned
    }


async def test_attempt_span_statuses_and_errors(tel: TestTelemetry) -> None:
    with execution_span("exec-b", "wf") as ex:
        for node_id in ("paused", "failed", "raised"):
            ids = LOG_IDS.set(("exec-b", node_id, None, None))
            try:
                with attempt_span(node_id, "transform", (), 1, "exec-b") as span:
                    if node_id == "paused":
                        record_node_status("PAUSED", span=span)
                    elif node_id == "failed":
                        record_node_status("FAILED", error_code="BAD", span=span)
                        raise ValueError("told")
                    else:
                        raise ValueError("boom")  # no status recorded
            except ValueError:
                pass
            finally:
                LOG_IDS.reset(ids)
    spans = _of(tel, ex.get_span_context().trace_id)
    paused, failed, raised = (spans[f"transform {n}"] for n in ("paused", "failed", "raised"))
    assert paused.attributes is not None and paused.attributes["weft.node.status"] == "PAUSED"
    assert failed.attributes is not None and failed.attributes["weft.node.status"] == "FAILED"
    assert failed.attributes["weft.error.code"] == "BAD"
    assert failed.status.status_code is StatusCode.ERROR
    assert raised.attributes is not None and "weft.node.status" not in raised.attributes
    assert raised.status.status_code is StatusCode.ERROR
    assert raised.status.description == "ValueError: boom"
    assert [e.name for e in raised.events] == ["exception"]


def test_attempt_span_without_fresh_ids_sets_and_resets_them(tel: TestTelemetry) -> None:
    with execution_span("exec-c", "wf") as ex:
        ids = LOG_IDS.set(("exec-c", "outer", None, None))
        with attempt_span("outer", "subworkflow", (), 1, "exec-c") as outer:
            # A second attempt under the same ids (no caller set them): it sets its own.
            with attempt_span("inner", "transform", (), 1, "exec-c") as inner:
                assert trace.get_current_span() is inner
                assert LOG_IDS.get()[1:] == ("inner", inner, None)
            assert trace.get_current_span() is outer
            assert LOG_IDS.get()[1] == "outer"
        LOG_IDS.reset(ids)
    spans = _of(tel, ex.get_span_context().trace_id)
    assert {"subworkflow outer", "transform inner"} <= set(spans)


def test_an_attempt_kept_on_its_node_run_is_made_a_span_when_asked(tel: TestTelemetry) -> None:
    """The engine's common attempt: nothing but a mark on its node run (the fourth log id) while
    it runs; asking for the current span makes it (once, started at the node run's start, a
    child of the run's span), and an ``attempt_span`` opened inside is its child."""
    with execution_span("exec-n", "wf") as ex:
        run = telemetry_spans.current_context()
        assert type(run) is telemetry_spans.LeanRun
        node_run = SimpleNamespace(
            node=SimpleNamespace(id="outer", type="subworkflow"),
            frame=SimpleNamespace(scope=()),
            attempt=1,
            started_at=1_700_000_000.25,
            span=run,  # what run_attempt sets while the attempt runs
        )
        ids = LOG_IDS.set(("exec-n", "outer", None, node_run))
        outer = trace.get_current_span()
        assert node_run.span is outer and trace.get_current_span() is outer  # made once
        started = outer.start_time  # type: ignore[attr-defined]
        assert abs(started - 1_700_000_000_250_000_000) < 1_000  # (a float's seconds, in ns)
        assert outer.parent.span_id == ex.get_span_context().span_id  # type: ignore[attr-defined]
        with attempt_span("inner", "transform", (), 1, "exec-n") as inner:
            assert trace.get_current_span() is inner
            assert inner.parent.span_id == outer.get_span_context().span_id  # type: ignore[attr-defined]
        assert trace.get_current_span() is outer
        node_run.span = None  # the attempt ended (run_attempt): the run's span is current again
        assert trace.get_current_span() is not outer
        assert trace.get_current_span().get_span_context() == ex.get_span_context()
        LOG_IDS.reset(ids)


def test_attempt_span_is_nothing_outside_a_sampled_trace(tel: TestTelemetry) -> None:
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    unsampled = SpanContext(0xABF, 0xDF0, is_remote=True, trace_flags=TraceFlags(0))
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(unsampled)))
    try:
        with execution_span("exec-d", "wf"):
            # The run's context says so: node attempts record nothing, without looking further.
            assert type(otel_context.get_current()) is UnsampledRun
            assert trace.get_current_span(otel_context.set_value("k", 1)).get_span_context() == (
                trace.get_current_span().get_span_context()
            )
            ids = LOG_IDS.get()
            with attempt_span("n", "transform", (), 1, "exec-d") as span:
                assert not span.is_recording()
                assert LOG_IDS.get() is ids
                assert trace.get_current_span().get_span_context().trace_id == 0xABF
    finally:
        otel_context.detach(token)
    assert [s.name for s in tel.spans() if s.context.trace_id == 0xABF] == []


def test_bulk_emit_fills_the_batch_queue_as_emit_one_by_one_would() -> None:
    """``_emit_many`` against the SDK's own ``emit``: same queue contents and order when the queue
    overflows (the oldest dropped), same wake-up of the export thread."""

    class Nothing(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    def processor() -> BatchSpanProcessor:
        return BatchSpanProcessor(
            Nothing(), max_queue_size=10, max_export_batch_size=4, schedule_delay_millis=600_000
        )

    bulk, single = processor(), processor()
    # The export threads wait on these events: give the processors others to set, so nothing is
    # exported (popped) while the queues are compared.
    waiting = [p._batch_processor._worker_awaken for p in (bulk, single)]
    for p in (bulk, single):
        p._batch_processor._worker_awaken = threading.Event()
    try:
        items: list[Any] = [object() for _ in range(25)]
        queue = telemetry_spans._batch_queue(bulk)
        assert queue is not None
        telemetry_spans._emit_many(bulk._batch_processor, queue, items[:3])
        assert not bulk._batch_processor._worker_awaken.is_set()  # below a batch: sleeps on
        telemetry_spans._emit_many(bulk._batch_processor, queue, items[3:])
        for item in items:
            single._batch_processor.emit(item)
        assert list(bulk._batch_processor._queue) == list(single._batch_processor._queue)
        assert list(bulk._batch_processor._queue) == items[:-11:-1]  # the newest 10, newest first
        assert bulk._batch_processor._worker_awaken.is_set()  # a batch is waiting
        assert single._batch_processor._worker_awaken.is_set()
    finally:
        for p, event in zip((bulk, single), waiting, strict=True):
            p._batch_processor._worker_awaken = event
            p.shutdown()
    assert telemetry_spans._batch_queue(single) is not None
    assert telemetry_spans._batch_queue(object()) is None  # any other processor: on_end per span


_BULK_SCRIPT = textwrap.dedent(
    """
    import atexit, json, sys, threading
    from opentelemetry import trace
    from opentelemetry.sdk._shared_internal import BatchProcessor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from weft_common._telemetry_state import flags
    from weft_common.logging_setup import LOG_IDS
    from weft_common.telemetry_spans import attempt_span, execution_span, node_span

    lock = threading.Lock()

    def out(*item):  # from this thread and the export thread: one write per line
        with lock:
            sys.stdout.write(json.dumps(item) + "\\n")
            sys.stdout.flush()

    emits = [0]
    emit = BatchProcessor.emit

    def counted(self, data):
        emits[0] += 1
        return emit(self, data)

    BatchProcessor.emit = counted
    atexit.register(lambda: out("emits", emits[0]))  # registered first: runs last

    class Printing(SpanExporter):
        def export(self, spans):
            for s in spans:
                parent = s.parent.span_id if s.parent else None
                out("span", s.name, s.context.trace_id, s.context.span_id, parent)
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Printing()))
    trace.set_tracer_provider(provider)
    flags.tracing = True

    with execution_span("e1", "wf") as ex:  # two batches of 512 on the way, the rest at its end
        ctx = ex.get_span_context()
        out("run", ctx.trace_id, ctx.span_id)
        for i in range(1300):
            ids = LOG_IDS.set(("e1", f"n{i}", LOG_IDS.get()[2], None))
            with attempt_span(f"n{i}", "noop", (), 1, "e1"):
                if i == 7:
                    with node_span("nested", "transform", execution_id="e1") as nested:
                        ctx = nested.get_span_context()
                        out("nested", ctx.span_id)
            LOG_IDS.reset(ids)
    scope = execution_span("e2", "wf")  # never ends: its node spans go at exit
    ex2 = scope.__enter__()
    ctx = ex2.get_span_context()
    out("run", ctx.trace_id, ctx.span_id)
    for i in range(3):
        ids = LOG_IDS.set(("e2", f"m{i}", None, None))
        with attempt_span(f"m{i}", "noop", (), 1, "e2"):
            pass
        LOG_IDS.reset(ids)
    """
)


def test_bulk_hand_over_delivers_every_node_span_once_with_its_parent() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _BULK_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    runs = [(trace_id, span_id) for kind, trace_id, span_id in (x for x in lines if x[0] == "run")]
    [nested_id] = [x[1] for x in lines if x[0] == "nested"]
    spans = [x[1:] for x in lines if x[0] == "span"]
    names = [name for name, *_ in spans]
    expected = [f"noop n{i}" for i in range(1300)] + [f"noop m{i}" for i in range(3)]
    assert sorted(n for n in names if n.startswith("noop")) == sorted(expected)  # each once
    assert names.count("transform nested") == 1
    assert names.count("execution wf") == 1  # e1's; e2's never ended
    by_name = {name: rest for name, *rest in spans}
    (trace1, exec1), (trace2, exec2) = runs
    for i in range(1300):
        assert by_name[f"noop n{i}"][0] == trace1 and by_name[f"noop n{i}"][2] == exec1
    for i in range(3):
        assert by_name[f"noop m{i}"][0] == trace2 and by_name[f"noop m{i}"][2] == exec2
    assert by_name["transform nested"][1:] == [nested_id, by_name["noop n7"][1]]
    # Node spans went in bulk (no emit per span): the only emit was e1's execution span.
    assert lines[-1] == ["emits", 1]


# --------------------------------------------------------------- node durations, in batches


def test_node_durations_are_recorded_in_batches_and_read_in_full(tel: TestTelemetry) -> None:
    from weft_common import telemetry_metrics
    from weft_common.telemetry_metrics import drain_node_durations, record_node_duration

    def count(status: str) -> int:  # the collection, as an exporter or a scrape makes it
        data = tel.reader.get_metrics_data()
        assert data is not None
        return sum(
            point.count
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name == "weft.node.duration"
            for point in metric.data.data_points
            if dict(point.attributes or {}) == {"node_type": "batch-test", "status": status}
        )

    before, before_failed = count("SUCCEEDED"), count("FAILED")
    calls: list[Any] = []
    real = telemetry_metrics.metrics.node_duration

    class Spy:
        def record(self, *args: Any) -> None:
            calls.append(args)
            real.record(*args)

    telemetry_metrics.metrics.node_duration = Spy()  # type: ignore[assignment]
    try:
        for _ in range(3):  # no event loop here: each goes at once
            record_node_duration(0.002, "batch-test", "SUCCEEDED")
        assert len(calls) == 3
        assert count("SUCCEEDED") - before == 3

        async def in_a_loop() -> int:
            for _ in range(telemetry_metrics._DRAIN_AT + 10):
                record_node_duration(0.002, "batch-test", "FAILED")
            return len(calls)

        recorded = asyncio.run(in_a_loop())
        assert recorded == 3 + telemetry_metrics._DRAIN_AT  # one batch; 10 kept
        # A collection takes them all (the kept ones first).
        assert count("FAILED") - before_failed == telemetry_metrics._DRAIN_AT + 10
        assert len(calls) == 3 + telemetry_metrics._DRAIN_AT + 10
        drain_node_durations()  # nothing left
        assert len(calls) == 3 + telemetry_metrics._DRAIN_AT + 10
    finally:
        telemetry_metrics.metrics.node_duration = real
    assert all(
        args[1] == {"node_type": "batch-test", "status": args[1]["status"]} for args in calls
    )


@pytest.mark.parametrize("setup", ["one reader", "two readers, a view keeping node_type"])
def test_a_batch_of_durations_aggregates_as_record_per_value_does(setup: str) -> None:
    """``_record_all`` (an attribute set's first measurement through the SDK's consumer, the
    others straight to its aggregations) against ``Histogram.record`` per value, in two meter
    providers: same points (count, sum, min, max, buckets, attributes) and exemplars, each
    exemplar at its measurement's own time; with two readers and a view that keeps one
    attribute, every reader's points."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.metrics.view import View
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    from weft_common.telemetry_metrics import (
        SECONDS_BUCKETS,
        _aggregations,
        _consumer,
        _record_all,
    )

    sampled = otel_context.Context()
    sampled = trace.set_span_in_context(
        NonRecordingSpan(SpanContext(0x1234, 0x5678, False, TraceFlags(1))), sampled
    )
    batch = [
        (0.0004, "wait", "SUCCEEDED", sampled, 1_000),
        (0.3, "wait", "SUCCEEDED", sampled, 2_000),
        (7.0, "http", "FAILED", otel_context.Context(), 3_000),
        (float("nan"), "http", "FAILED", sampled, 4_000),  # record() refuses it: both skip it
        (0.02, "wait", "SUCCEEDED", sampled, 5_000),
        (0.5, "http", "FAILED", otel_context.Context(), 6_000),  # no exemplar: not sampled
    ]
    two = setup != "one reader"
    views = [View(instrument_name="d", attribute_keys={"node_type"})] if two else []
    points = []
    for direct in (True, False):
        readers = [InMemoryMetricReader() for _ in range(2 if two else 1)]
        histogram: Any = (
            MeterProvider(metric_readers=readers, views=views)
            .get_meter("t")
            .create_histogram("d", explicit_bucket_boundaries_advisory=SECONDS_BUCKETS)
        )
        assert _consumer(histogram) is not None
        if direct:
            _record_all(histogram, batch)
            # (the straight path, not the consumer value by value, for the sets seen)
            assert _aggregations(histogram, {"node_type": "wait", "status": "SUCCEEDED"})
        else:
            for seconds, node_type, status, context, _at in batch:
                histogram.record(seconds, {"node_type": node_type, "status": status}, context)
        for reader in readers:
            data = reader.get_metrics_data()
            assert data is not None
            [metric] = data.resource_metrics[0].scope_metrics[0].metrics
            points.append(
                {
                    tuple(sorted(p.attributes.items())): (
                        p.count,
                        p.sum,
                        p.min,
                        p.max,
                        list(p.bucket_counts),
                        sorted((e.value, e.span_id, e.trace_id) for e in p.exemplars),
                        sorted(e.time_unix_nano for e in p.exemplars),
                        sorted(tuple(sorted(e.filtered_attributes.items())) for e in p.exemplars),
                    )
                    for p in metric.data.data_points
                }
            )
    half = len(points) // 2
    for ours, theirs in zip(points[:half], points[half:], strict=True):
        assert {k: v[:6] + v[7:] for k, v in ours.items()} == {
            k: v[:6] + v[7:] for k, v in theirs.items()
        }
    wait = (("node_type", "wait"),) if two else (("node_type", "wait"), ("status", "SUCCEEDED"))
    assert points[0][wait][0] == 3
    assert points[0][wait][6] == [1_000, 2_000, 5_000]

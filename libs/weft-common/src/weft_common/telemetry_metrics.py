"""Every Weft metric, defined once, through the OpenTelemetry metrics API.

Services call the instruments directly::

    from weft_common.telemetry_metrics import metrics
    metrics.executions_finished.add(1, {"status": "SUCCEEDED"})

Until ``setup_telemetry`` installs a MeterProvider the instruments are the API's no-op proxies
(a method call and nothing else); afterwards they report to OTLP and/or the Prometheus port.
Attributes stay low-cardinality (status, node type, model): never execution or node ids.
Prometheus names: dots become underscores, units become suffixes (``weft_node_duration_seconds``).

``weft.node.duration`` is recorded through ``record_node_duration``, once per node attempt: the
measurement is kept (a tuple in a list) and handed to the SDK histogram with the others of its
batch, every 512 attempts, at the end of the execution run (``drain_node_durations``), within a
second otherwise, and before every collection (export, scrape), so every reading includes every
attempt that ended. Each value is recorded as it was measured: its time (an exemplar's timestamp)
and its context (what exemplars link to) are the attempt's end's. The SDK's per-measurement path
(attribute hashing, exemplar filter, aggregation) runs the batch back to back instead of between
two nodes of the engine, without ``record``'s checks and attribute cleaning that durations and
these attributes do not need, and, after an attribute set's first value, without the consumer's
attribute hashing and view lookups either (``_record_all``): about 1.4 us per value, not 3.9.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from datetime import datetime
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics as otel_metrics
from opentelemetry.metrics import CallbackOptions, Observation

from ._telemetry_state import flags

__all__ = [
    "SECONDS_BUCKETS",
    "WeftMetrics",
    "drain_node_durations",
    "metrics",
    "record_event_lag",
    "record_node_duration",
    "watch_ready_queue",
]

# Node runs, commits and fan-out lag span sub-millisecond to minutes.
SECONDS_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
)  # fmt: skip


_ready_queue_sources: list[Callable[[], int]] = []


def watch_ready_queue(source: Callable[[], int]) -> None:
    """Add a source of ready-queue depth (summed into ``weft.ready_queue.depth``)."""
    _ready_queue_sources.append(source)


def _observe_ready_queues(options: CallbackOptions) -> Iterable[Observation]:
    # Called first thing in every collection (observable instruments are read before the
    # synchronous ones' storage): the kept node durations go in before it is read.
    drain_node_durations()
    yield Observation(sum(source() for source in _ready_queue_sources))


class WeftMetrics:
    """The instruments. Attribute keys each one expects are in its description."""

    def __init__(self, meter: otel_metrics.Meter) -> None:
        self.executions_started = meter.create_counter(
            "weft.executions.started",
            unit="{execution}",
            description="Executions started (first runs, not resumes).",
        )
        self.executions_finished = meter.create_counter(
            "weft.executions.finished",
            unit="{execution}",
            description="Executions that reached a terminal status; attribute: status.",
        )
        self.node_duration = meter.create_histogram(
            "weft.node.duration",
            unit="s",
            description="Duration of one node attempt; attributes: node_type, status.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        # Observed when metrics are collected (no cost per node): see ``watch_ready_queue``.
        self.ready_queue_depth = meter.create_observable_gauge(
            "weft.ready_queue.depth",
            callbacks=[_observe_ready_queues],
            unit="{node}",
            description="Nodes ready to run but waiting for a concurrency slot, in this process.",
        )
        self.commit_duration = meter.create_histogram(
            "weft.commit.duration",
            unit="s",
            description="Latency of one step commit; attributes: side (executor|state), outcome.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.event_fanout_lag = meter.create_histogram(
            "weft.events.fanout_lag",
            unit="s",
            description="Time from an event's commit to its delivery to a stream subscriber.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.sse_active_streams = meter.create_up_down_counter(
            "weft.sse.active_streams",
            unit="{stream}",
            description="Open SSE streams at the gateway (+1 on open, -1 on close).",
        )
        self.llm_tokens = meter.create_counter(
            "weft.llm.tokens",
            unit="{token}",
            description="LLM tokens; attributes: model, direction (input|output).",
        )
        self.rpc_server_duration = meter.create_histogram(
            "rpc.server.duration",
            unit="s",
            description="gRPC server call duration; attributes: rpc.service, rpc.method, rpc.grpc.status_code.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )


metrics = WeftMetrics(otel_metrics.get_meter("weft"))


# --------------------------------------------------------------------------- node durations

_DRAIN_AT = 512
_DRAIN_AFTER_S = 1.0
_durations: list[tuple[float, str, str, Any, int]] = []
_drain_armed = [False]
_drain_lock = threading.Lock()

# otel_context.get_current(), minus two calls, with the default (contextvars) runtime context.
_runtime_var = getattr(otel_context._RUNTIME_CONTEXT, "_current_context", None)
_current_context: Any = (
    _runtime_var.get if isinstance(_runtime_var, ContextVar) else otel_context.get_current
)


def record_node_duration(
    seconds: float, node_type: str, status: str, context: Any = None, at: int = 0
) -> None:
    """``weft.node.duration`` of one node attempt, ended at ``at`` (``time_ns()``, default now),
    with ``context`` (default: the current one); see the module docstring: recorded in batches.
    """
    pending = _durations
    pending.append((seconds, node_type, status, context or _current_context(), at or time_ns()))
    if len(pending) >= _DRAIN_AT:
        drain_node_durations()
    elif not _drain_armed[0]:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop to drain later: now
            drain_node_durations()
            return
        _drain_armed[0] = True  # until the next drain
        loop.call_later(_DRAIN_AFTER_S, drain_node_durations)


def drain_node_durations() -> None:
    """Record the kept node durations in the SDK histogram (thread-safe; any thread)."""
    with _drain_lock:
        _drain_armed[0] = False
        count = len(_durations)
        if not count:
            return
        batch = _durations[:count]
        del _durations[:count]  # appended meanwhile (another thread): kept for the next
    histogram: Any = metrics.node_duration
    _record_all(getattr(histogram, "_real_instrument", None) or histogram, batch)


def _record_all(histogram: Any, batch: list[tuple[float, str, str, Any, int]]) -> None:
    """Each value of ``batch`` into ``histogram``: what ``Histogram.record`` does, with the
    measurement's own time; for an enabled SDK histogram, the measurement is made here and handed
    to the SDK's measurement consumer (``record`` minus its argument checks, which durations
    pass, and its attribute cleaning, which these attributes, strings, need not), else through
    ``record`` itself.

    Within a batch, an attribute set's first measurement goes through the consumer (which finds
    or makes its aggregations, one per reader and view); the set's others go straight to those
    aggregations, with the consumer's exemplar decision (``_aggregations``): the consumer's work
    less the attribute copying and hashing and the view lookups it repeats for each value."""
    consume = _consumer(histogram)
    attributes: dict[tuple[str, str], dict[str, str]] = {}
    targets: dict[tuple[str, str], list[Any] | None] = {}  # per attribute set, see above
    for seconds, node_type, status, context, at in batch:
        key = (node_type, status)
        attrs = attributes.get(key)
        if attrs is None:  # one dict per attribute set (the SDK copies what it keeps)
            attrs = attributes[key] = {"node_type": node_type, "status": status}
        if consume is None or not 0.0 <= seconds < _INF:
            histogram.record(seconds, attrs, context)
            continue
        measurement = _new_object(_Measurement)
        fields = measurement.__dict__  # (a frozen dataclass: its fields set as its __init__ does)
        fields["value"] = seconds
        fields["time_unix_nano"] = at
        fields["instrument"] = histogram
        fields["context"] = context
        fields["attributes"] = attrs
        aggregations = targets.get(key)
        if aggregations is None:
            consume(measurement)
            if key not in targets:
                targets[key] = _aggregations(histogram, attrs)
            continue
        sample = aggregations[0](seconds, at, attrs, context)
        for aggregation in aggregations[1:]:
            aggregation.aggregate(measurement, sample)


def _aggregations(histogram: Any, attrs: dict[str, str]) -> list[Any] | None:
    """The exemplar filter's ``should_sample`` and the aggregations a measurement of ``histogram``
    with ``attrs`` goes to (each reader's, each matching view's), as the SDK's consumer finds
    them (SDK 1.3x-1.4x: ``SynchronousMeasurementConsumer`` -> ``MetricReaderStorage`` ->
    ``_ViewInstrumentMatch``, whose aggregation objects live as long as it does); None when one
    is not there yet or the SDK is laid out otherwise (then the consumer, value by value)."""
    if _hash_attributes is None:
        return None
    try:
        consumer = histogram._measurement_consumer
        found: list[Any] = [consumer._sdk_config.exemplar_filter.should_sample]
        for storage in consumer._reader_storages.values():
            for match in storage._get_or_init_view_instrument_match(histogram):
                keys = match._view._attribute_keys
                kept = attrs if keys is None else {k: v for k, v in attrs.items() if k in keys}
                aggregation = match._attributes_aggregation.get(_hash_attributes(kept))
                if aggregation is None or not callable(getattr(aggregation, "aggregate", None)):
                    return None
                found.append(aggregation)
    except (AttributeError, TypeError):
        return None
    return found


_INF = float("inf")
_new_object = object.__new__
try:
    from opentelemetry.sdk.metrics._internal.instrument import _Histogram
    from opentelemetry.sdk.metrics._internal.measurement import Measurement as _Measurement

    _MEASUREMENT_OK = list(getattr(_Measurement, "__dataclass_fields__", {})) == [
        "value",
        "time_unix_nano",
        "instrument",
        "context",
        "attributes",
    ] and hasattr(_new_object(_Measurement), "__dict__")
except ImportError:  # pragma: no cover - another SDK layout: record() per value
    _Histogram = _Measurement = None  # type: ignore[assignment,misc]
    _MEASUREMENT_OK = False
try:
    from opentelemetry.sdk.metrics._internal._view_instrument_match import _hash_attributes
except ImportError:  # pragma: no cover - another SDK layout: the consumer per value
    _hash_attributes = None  # type: ignore[assignment]


def _consumer(histogram: Any) -> Any:
    """The SDK measurement consumer's ``consume_measurement`` for an enabled SDK histogram."""
    if not _MEASUREMENT_OK or type(histogram) is not _Histogram or not histogram._is_enabled():
        return None
    consumer = getattr(histogram, "_measurement_consumer", None)
    return getattr(consumer, "consume_measurement", None)


_TIMESTAMP_KEY = '"timestamp":"'


def record_event_lag(event_json: str) -> None:
    """``weft.events.fanout_lag`` for one event about to reach a subscriber: now minus the
    event's ``timestamp`` (read from its SPEC JSON without parsing the rest of it)."""
    if not flags.metrics:
        return
    start = event_json.find(_TIMESTAMP_KEY)
    if start < 0:
        return
    start += len(_TIMESTAMP_KEY)
    end = event_json.find('"', start)
    try:
        stamp = datetime.fromisoformat(event_json[start:end]).timestamp()
    except ValueError:
        return
    metrics.event_fanout_lag.record(max(0.0, time.time() - stamp))

"""OpenTelemetry for every service: ``setup_telemetry(service_name, settings)`` in ``__main__``.

What gets installed, from the standard ``OTEL_*`` variables and ``WEFT_METRICS_PORT``:

- ``OTEL_SDK_DISABLED=true``: nothing (every helper stays a flag check).
- Traces: OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set, over
  gRPC or, with ``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`` (or ``..._TRACES_PROTOCOL``), HTTP
  (the SDK's exporters with Weft's encoder of the same request: ``telemetry_otlp``);
  ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, ``none``, comma list) overrides. Sampler from
  ``OTEL_TRACES_SAMPLER``/``_ARG`` (default parent-based always-on), batching from ``OTEL_BSP_*``.
- Metrics: OTLP likewise (``OTEL_METRICS_EXPORTER``, ``OTEL_METRIC_EXPORT_INTERVAL``), plus a
  Prometheus scrape endpoint on ``settings.host:settings.metrics_port`` when the port is not 0.
- Resource: ``service.name`` = ``OTEL_SERVICE_NAME`` or the name given here, ``service.namespace``
  = ``weft``, and ``OTEL_RESOURCE_ATTRIBUTES``.

With no exporter for a signal its provider is not installed: the API's no-op objects answer and
the Weft helpers skip span work entirely. The OpenTelemetry globals can be set once per process,
so the first call wins (``weft up`` runs the four services in one process under one resource).

Tests call ``telemetry_for_tests()`` instead: in-memory span exporter and metric reader.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricReader
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ._telemetry_state import flags
from .settings import CommonSettings
from .telemetry_metrics import drain_node_durations
from .telemetry_spans import (
    current_traceparent,
    execution_span,
    flush_node_spans,
    format_scope,
    link_from_str,
    node_span,
    record_llm_usage,
    record_node_status,
    span_context_to_str,
)

__all__ = [
    "Telemetry",
    "TestTelemetry",
    "current_traceparent",
    "execution_span",
    "format_scope",
    "link_from_str",
    "node_span",
    "record_llm_usage",
    "record_node_status",
    "setup_telemetry",
    "span_context_to_str",
    "telemetry_for_tests",
    "trace_sqlalchemy_engine",
    "tracing_enabled",
]

log = logging.getLogger("weft.telemetry")


@dataclass
class Telemetry:
    """What ``setup_telemetry`` installed in this process."""

    service_name: str
    tracing: bool = False
    metrics: bool = False
    metrics_port: int = 0  # the bound Prometheus port, 0 when off
    _tracer_provider: TracerProvider | None = None
    _meter_provider: MeterProvider | None = None
    _prometheus: Any = None
    _stopped: bool = field(default=False, repr=False)

    def shutdown(self) -> None:
        """Flush and stop exporters (call on SIGTERM after the servers stopped)."""
        if self._stopped:
            return
        self._stopped = True
        flush_node_spans()
        drain_node_durations()
        if self._tracer_provider is not None:
            self._tracer_provider.shutdown()
        if self._meter_provider is not None:
            self._meter_provider.shutdown()
        if self._prometheus is not None:
            self._prometheus.shutdown()
            self._prometheus.server_close()


_installed: Telemetry | None = None


def tracing_enabled() -> bool:
    return flags.tracing


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _exporter_names(env: Mapping[str, str], signal: str) -> list[str]:
    """``OTEL_<SIGNAL>_EXPORTER`` if set, else ``otlp`` when an OTLP endpoint is configured."""
    explicit = env.get(f"OTEL_{signal}_EXPORTER")
    if explicit is not None:
        names = [n.strip().lower() for n in explicit.split(",") if n.strip()]
        return [n for n in names if n != "none"]
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"):
        return ["otlp"]
    return []


_PROTOCOLS = ("grpc", "http/protobuf")


def _protocol(env: Mapping[str, str], signal: str) -> str:
    """A signal's OTLP transport: ``OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL``, else
    ``OTEL_EXPORTER_OTLP_PROTOCOL``, else ``grpc``; one Weft does not speak (``http/json``) is
    logged and gRPC used."""
    name = f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"
    if not env.get(name):
        name = "OTEL_EXPORTER_OTLP_PROTOCOL"
    protocol = (env.get(name) or "grpc").strip().lower()
    if protocol not in _PROTOCOLS:
        log.warning(
            "%s=%s is not supported (grpc, http/protobuf); exporting %s over gRPC "
            "(point the endpoint at the collector's gRPC port, usually 4317)",
            name,
            protocol,
            signal.lower(),
        )
        return "grpc"
    return protocol


def build_resource(service_name: str) -> Resource:
    """``service.name`` from ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` when given,
    else ``service_name``; the environment always wins over the code."""
    ours = Resource.create({"service.name": service_name, "service.namespace": "weft"})
    return ours.merge(OTELResourceDetector().detect())


def setup_telemetry(
    service_name: str,
    settings: CommonSettings,
    *,
    environ: Mapping[str, str] | None = None,
    libraries: Sequence[str] = (),
) -> Telemetry:
    """Install tracing and metrics for this process (idempotent: later calls return the first).

    SQLAlchemy and redis are traced when this process imported them already (a service's
    ``__main__`` imports its server first) or when named in ``libraries`` (for a process that
    imports its services later, like ``weft up``).
    """
    global _installed
    if _installed is not None:
        return _installed
    env = os.environ if environ is None else environ
    telemetry = Telemetry(service_name=service_name)
    _installed = telemetry
    if _truthy(env.get("OTEL_SDK_DISABLED")):
        log.info("OpenTelemetry disabled (OTEL_SDK_DISABLED)")
        return telemetry
    resource = build_resource(service_name)

    span_exporters = _exporter_names(env, "TRACES")
    if span_exporters:
        provider = TracerProvider(resource=resource)
        for name in span_exporters:
            processor = _span_processor(name, _protocol(env, "TRACES"))
            if processor is not None:
                provider.add_span_processor(processor)
        trace.set_tracer_provider(provider)
        telemetry._tracer_provider = provider
        telemetry.tracing = flags.tracing = True
        instrument_libraries(libraries)

    readers: list[MetricReader] = []
    for name in _exporter_names(env, "METRICS"):
        reader = _metric_reader(name, _protocol(env, "METRICS"))
        if reader is not None:
            readers.append(reader)
    if settings.metrics_port:
        prometheus_reader, server, port = _start_prometheus(settings.host, settings.metrics_port)
        readers.append(prometheus_reader)
        telemetry._prometheus = server
        telemetry.metrics_port = port
    if readers:
        meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        otel_metrics.set_meter_provider(meter_provider)
        telemetry._meter_provider = meter_provider
        telemetry.metrics = flags.metrics = True

    log.info(
        "telemetry for %s: traces=%s metrics=%s prometheus_port=%s",
        resource.attributes.get("service.name"),
        ",".join(span_exporters) or "off",
        "on" if readers else "off",
        telemetry.metrics_port or "off",
    )
    return telemetry


def instrument_libraries(libraries: Sequence[str] = ()) -> None:
    """Trace the libraries the services use, for every client/engine created from now on:
    httpx (outbound ``traceparent``), and SQLAlchemy, asyncpg (a span per statement) and redis when this
    process imported them already or they are named in ``libraries`` (the state service uses
    them; the other services skip their import cost)."""
    from .telemetry_http import instrument_httpx_globally

    instrument_httpx_globally()
    instrumentors: list[Any] = []
    if "sqlalchemy" in sys.modules or "sqlalchemy" in libraries:
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        instrumentors.append(SQLAlchemyInstrumentor())
    if "asyncpg" in sys.modules or "asyncpg" in libraries:
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        instrumentors.append(AsyncPGInstrumentor())  # type: ignore[no-untyped-call]
    if "redis" in sys.modules or "redis" in libraries:
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        instrumentors.append(RedisInstrumentor())
    for instrumentor in instrumentors:
        if not instrumentor.is_instrumented_by_opentelemetry:
            try:
                # SQLAlchemy 2.1 is newer than the instrumentation's declared range; its engine
                # events are unchanged (tests check statements are traced).
                instrumentor.instrument(skip_dep_check=True, **_instrument_options(instrumentor))
            except Exception:
                log.warning("could not instrument %s", type(instrumentor).__name__, exc_info=True)
            else:
                if type(instrumentor).__name__ == "SQLAlchemyInstrumentor":
                    _no_connect_spans()


def _instrument_options(instrumentor: Any) -> dict[str, Any]:
    """SQLAlchemy: no ``db.client.connections.usage`` (two counter updates per pool checkout,
    most of a traced state service's metric measurements; Weft's own metrics cover commits)."""
    if type(instrumentor).__name__ == "SQLAlchemyInstrumentor":
        return {"meter_provider": otel_metrics.NoOpMeterProvider()}
    return {}


def _no_connect_spans() -> None:
    """The SQLAlchemy instrumentation wraps ``Engine.connect`` in a "connect" span: a pool
    checkout (every transaction of the state service: most of its spans), with nothing in it
    that the statement spans do not say. Unwrapped: statements keep their spans."""
    from opentelemetry.instrumentation.utils import unwrap
    from sqlalchemy.engine.base import Engine

    unwrap(Engine, "connect")


def trace_sqlalchemy_engine(engine: Any) -> None:
    """A span per SQL statement on this (sync or async) engine, with tracing on.

    Needed where the engine was made by a ``create_async_engine`` imported before
    ``setup_telemetry`` ran (a service's modules import first): the instrumentation only wraps
    the function as found in its module afterwards. No-op when already traced.
    """
    if not flags.tracing:
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    sync_engine = getattr(engine, "sync_engine", engine)
    if any(params[0]() is sync_engine for params in EngineTracer._remove_event_listener_params):
        return
    meter = otel_metrics.NoOpMeterProvider().get_meter("opentelemetry.instrumentation.sqlalchemy")
    usage = meter.create_up_down_counter(  # not recorded: see _instrument_options
        "db.client.connections.usage",
        unit="connections",
        description="The number of connections that are currently in state described by the state attribute.",
    )
    tracer = trace.get_tracer("opentelemetry.instrumentation.sqlalchemy")
    EngineTracer(tracer, sync_engine, usage)  # type: ignore[no-untyped-call]


def uninstrument_libraries() -> None:
    """Undo ``instrument_libraries`` (tests only: clients and engines made since stay traced)."""
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    instrumentors = (
        HTTPXClientInstrumentor(),
        SQLAlchemyInstrumentor(),
        RedisInstrumentor(),
        AsyncPGInstrumentor(),  # type: ignore[no-untyped-call]
    )
    for instrumentor in instrumentors:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()


def _span_processor(name: str, protocol: str = "grpc") -> Any:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    if name == "otlp" and protocol == "http/protobuf":
        from .telemetry_otlp_http import WeftOTLPHTTPSpanExporter

        return BatchSpanProcessor(WeftOTLPHTTPSpanExporter())
    if name == "otlp":
        from .telemetry_otlp import WeftOTLPSpanExporter  # the SDK's, with a faster encoder

        return BatchSpanProcessor(WeftOTLPSpanExporter())
    if name == "console":
        return SimpleSpanProcessor(ConsoleSpanExporter())
    log.warning("unknown OTEL_TRACES_EXPORTER %r ignored (supported: otlp, console, none)", name)
    return None


def _metric_reader(name: str, protocol: str = "grpc") -> MetricReader | None:
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        PeriodicExportingMetricReader,
    )

    if name == "otlp" and protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as OTLPHTTPMetricExporter,
        )

        return PeriodicExportingMetricReader(OTLPHTTPMetricExporter())
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return PeriodicExportingMetricReader(OTLPMetricExporter())
    if name == "console":
        return PeriodicExportingMetricReader(ConsoleMetricExporter())
    if name == "prometheus":
        return None  # served on WEFT_METRICS_PORT
    log.warning("unknown OTEL_METRICS_EXPORTER %r ignored (supported: otlp, console, none)", name)
    return None


def _start_prometheus(host: str, port: int) -> tuple[MetricReader, Any, int]:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry, scope_info_enabled=False)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    bound = server.server_address[1]
    log.info("Prometheus metrics on http://%s:%d/metrics", host, bound)
    return reader, server, int(bound)


# --------------------------------------------------------------------------- test hook


@dataclass
class TestTelemetry:
    """In-memory exporters shared by every test of the process (the globals are set once)."""

    __test__ = False  # not a pytest class

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    provider: TracerProvider

    def spans(self) -> list[ReadableSpan]:
        flush_node_spans()
        self.provider.force_flush()
        return list(self.exporter.get_finished_spans())

    def clear(self) -> None:
        flush_node_spans()
        self.exporter.clear()

    def stop(self) -> None:
        """Back to "off" for the tests that follow: Weft helpers and interceptors skip spans,
        library instrumentation is removed, nothing more is recorded (the SDK providers stay
        installed: OpenTelemetry cannot uninstall them)."""
        flush_node_spans()
        flags.tracing = flags.metrics = False
        uninstrument_libraries()
        self.exporter.clear()

    def metric_points(self) -> dict[tuple[str, frozenset[tuple[str, Any]]], Any]:
        """Cumulative values by (metric name, attributes): a sum, or a histogram's count."""
        out: dict[tuple[str, frozenset[tuple[str, Any]]], Any] = {}
        drain_node_durations()  # (a collection drains them too; explicit for readers' sake)
        data = self.reader.get_metrics_data()
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for point in metric.data.data_points:
                        key = (metric.name, frozenset((point.attributes or {}).items()))
                        value = getattr(point, "value", None)
                        out[key] = value if value is not None else getattr(point, "count", 0)
        return out

    def metric_value(self, name: str, **attributes: Any) -> Any:
        """The current cumulative value of one series (0 when it has not been recorded)."""
        return self.metric_points().get((name, frozenset(attributes.items())), 0)


_test_telemetry: TestTelemetry | None = None


def telemetry_for_tests(service_name: str = "weft-test") -> TestTelemetry:
    """Install (once per process) SDK providers with in-memory exporters; clears old spans.

    Call it before the services start; ``setup_telemetry`` afterwards keeps these providers.
    """
    global _test_telemetry, _installed
    if _test_telemetry is None:
        resource = build_resource(service_name)
        provider = TracerProvider(resource=resource)
        exporter = InMemorySpanExporter()
        provider.add_span_processor(_WhileTracing(exporter))
        trace.set_tracer_provider(provider)
        reader = InMemoryMetricReader()
        otel_metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))
        _test_telemetry = TestTelemetry(exporter=exporter, reader=reader, provider=provider)
        _installed = Telemetry(service_name=service_name, tracing=True, metrics=True)
        instrument_libraries()
    else:
        instrument_libraries()
    flags.tracing = flags.metrics = True
    _test_telemetry.clear()
    return _test_telemetry


class _WhileTracing(SimpleSpanProcessor):
    """Records only while the test hook is on, so later tests do not fill the exporter."""

    def on_end(self, span: ReadableSpan) -> None:
        if flags.tracing:
            super().on_end(span)

"""What tracing costs the engine per node (issue 8): ``bench/engine.py``'s 1,000-node no-op chain
with tracing off and on, and the other telemetry modes, per node.

    .venv/bin/python bench/engine_tracing.py [--quick] [--rounds N]

All modes run in ONE process, interleaved round by round (off, traces, traces-otlp, ...; then
again), and each mode's best round is kept: on a shared machine the load drifts within seconds,
so modes measured minutes apart in separate processes are not comparable. What is installed is
what ``setup_telemetry`` installs for an OTLP endpoint: the SDK ``TracerProvider`` with its
default (parent-based) sampler and a ``BatchSpanProcessor``, and a ``MeterProvider`` with a
periodic reader; the worker's execution-run span wraps each execution. Modes switch what the
engine sees at run time (the telemetry flags, the batch processor's exporter):

- ``off``: tracing and metrics off (the flags the helpers check; the SDK is not touched).
- ``traces``: tracing on; the batch processor's exporter drops the batches (the processor's
  queue, batching and export thread still run). It takes lean records (see
  ``weft_common.telemetry_spans``) as they are, like Weft's OTLP exporter: an attempt nothing
  looked at is never made a span object.
- ``traces-read``: as ``traces``, with an exporter that reads every field of every span (context,
  parent, name, kind, times, status, resource, scope, events, links, attributes) and sends
  nothing: what an exporter other than Weft's costs before its wire format (lean records are made
  spans for it, and lean spans build their context, name and attributes on first read).
- ``traces-otlp``: tracing on; the OTLP/gRPC exporter ``setup_telemetry`` installs (the SDK's
  ``OTLPSpanExporter`` sending the bytes of Weft's encoder, ``weft_common.telemetry_otlp``) sends
  every span to a collector stub in another process: encoding and the gRPC send are in this
  process's CPU, the receiving side is not.
- ``traces-otlp-http``: as ``traces-otlp`` over OTLP/HTTP (``OTEL_EXPORTER_OTLP_PROTOCOL=
  http/protobuf``: the SDK's HTTP exporter sending Weft's encoding) to the stub's HTTP port.
- ``traces-sdk``: as ``traces`` but every node span an SDK span (the engine's lean node spans off):
  what tracing cost before them.
- ``traces+metrics``: ``traces`` and metrics on: adds the ``weft.node.duration`` histogram
  measurement per node (the periodic metric export, once a minute, is not in the figures).
- ``sampled``: ``traces+metrics`` for an execution whose trace sampling left out (the caller's
  ``traceparent`` says not sampled; with ``parentbased_traceidratio`` 0.1 that is 90 % of them).

Each timed run ends with the span processor's ``force_flush()`` inside the clock, so the export
thread's work for the run's spans (batching, encoding, sending) is in the CPU figures.

How it is measured, so that the figures are this process's work and nothing else's:

- The process is pinned to one CPU (the last; ``--no-pin`` leaves it free) and the collector stub,
  a stand-in for a collector on another machine, runs on the others: on a 2-CPU machine whose
  CPUs share a core's resources, work on the other CPU slows this one down by up to 2x, which
  would be counted as tracing's cost.
- The garbage collector is set up as the executor sets it up (``tune_gc``, as in
  ``bench/engine.py``; ``--gc-default`` keeps the interpreter's defaults).
- The ratio of a mode is the median, over the rounds, of its CPU time over the CPU time of the
  same round's ``off`` (run just before it): a pair measured seconds apart, so the machine's
  drift over the run cancels out (the quartiles are printed beside it). Each mode's best round
  (CPU and wall time per node) is printed too, with its ratio to the best ``off``.

Reported against the target (<= 1.3x for tracing): the median ratio; everything is kept in
``bench/results/engine_tracing.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

N = 1000
MODES = (
    "off", "traces", "traces-read", "traces-otlp", "traces-otlp-http", "traces-sdk",
    "traces+metrics", "sampled",
)  # fmt: skip


class Telemetry:
    """The providers, installed once; ``use(mode)`` switches between the modes."""

    def __init__(self, otlp_port: int, http_port: int) -> None:
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            MetricExporter,
            MetricExportResult,
            PeriodicExportingMetricReader,
        )
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        from weft_common.telemetry_otlp import WeftOTLPSpanExporter
        from weft_common.telemetry_otlp_http import WeftOTLPHTTPSpanExporter
        from weft_common.telemetry_spans import lean_spans

        class Drop(SpanExporter):
            weft_lean_records = True  # it reads nothing: records need not be made spans

            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        class Read(SpanExporter):
            """Reads every field of every span, as any exporter must before encoding it (lean
            node spans build their context, name and attributes on first read), sends nothing."""

            def export(self, spans: Any) -> SpanExportResult:
                for span in spans:
                    context, parent = span.context, span.parent
                    _ = (
                        context.trace_id,
                        context.span_id,
                        context.trace_flags,
                        context.trace_state,
                    )
                    _ = (parent.span_id if parent is not None else 0, span.name, span.kind)
                    _ = (span.start_time, span.end_time, span.status.status_code, span.resource)
                    _ = (span.instrumentation_scope, list(span.events), list(span.links))
                    for _item in (span.attributes or {}).items():
                        pass
                return SpanExportResult.SUCCESS

        class Switch(SpanExporter):
            """The batch processor's exporter: hands the batch to the mode's exporter (lean
            records made spans first for one that does not take them, as the flush would)."""

            weft_lean_records = True

            def __init__(self) -> None:
                self.target: SpanExporter = Drop()

            def export(self, spans: Any) -> SpanExportResult:
                if not getattr(self.target, "weft_lean_records", False):
                    spans = lean_spans(spans)
                return self.target.export(spans)

        class DropMetrics(MetricExporter):
            def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kw: Any) -> Any:
                return MetricExportResult.SUCCESS

            def force_flush(self, timeout_millis: float = 10_000) -> bool:
                return True

            def shutdown(self, timeout_millis: float = 30_000, **kw: Any) -> None:
                pass

        self.drop = Drop()
        self.read = Read()
        # The exporter setup_telemetry installs for OTLP (the SDK's, with Weft's encoder).
        self.otlp = WeftOTLPSpanExporter(endpoint=f"http://127.0.0.1:{otlp_port}", insecure=True)
        self.otlp_http = WeftOTLPHTTPSpanExporter(
            endpoint=f"http://127.0.0.1:{http_port}/v1/traces"
        )
        self.switch = Switch()
        self.sink: Any = None
        self.provider = TracerProvider()
        self.provider.add_span_processor(BatchSpanProcessor(self.switch))
        trace.set_tracer_provider(self.provider)
        metrics.set_meter_provider(
            MeterProvider(metric_readers=[PeriodicExportingMetricReader(DropMetrics())])
        )

    def use(self, mode: str) -> None:
        from weft_common import telemetry_spans
        from weft_common._telemetry_state import flags

        flags.tracing = mode != "off"
        flags.metrics = mode in ("traces+metrics", "sampled")
        targets = {"traces-otlp": self.otlp, "traces-otlp-http": self.otlp_http}
        self.switch.target = {**targets, "traces-read": self.read}.get(mode, self.drop)
        # The lean node spans' sink for this provider, or none (SDK spans), as the engine sees it:
        # one sink, made once, as in a process whose provider is set up once.
        if self.sink is None:
            telemetry_spans._sink_cache = (None, None)
            self.sink = telemetry_spans._lean_sink()
        telemetry_spans._sink_cache = (self.provider, None if mode == "traces-sdk" else self.sink)


async def measure(rounds: int, otlp_port: int, http_port: int) -> dict[str, dict[str, float]]:
    from engine import Clock, chain, compile_json, execute, install_noop, make_engine, paired_ratios
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    from weft_executor.tracing import (
        begin_execution_run,
        end_execution_run,
        remember_start_context,
    )

    tel = Telemetry(otlp_port, http_port)
    install_noop()
    dag = compile_json(chain(N))
    engine = make_engine()
    left_out = SpanContext(0xB0, 0x1, is_remote=True, trace_flags=TraceFlags(0))

    async def one(mode: str) -> None:
        # In a task of its own, like the worker's task per execution.
        async def run() -> None:
            if mode == "sampled":  # the caller's trace was left out by sampling
                otel_context.attach(trace.set_span_in_context(NonRecordingSpan(left_out)))
                remember_start_context("bench")  # as StartExecution does: the run continues it
            begin_execution_run("bench", "bench", first_run=True)
            recording = trace.get_current_span().is_recording()
            if recording != (mode not in ("off", "sampled")):
                raise SystemExit(f"{mode}: execution span recording={recording}")
            try:
                await execute(engine, dag)
            finally:
                end_execution_run()

        await asyncio.create_task(run())
        tel.provider.force_flush()  # the export side of this run's spans, inside the clock

    for mode in MODES:  # warm up every path
        tel.use(mode)
        await one(mode)
    clocks: dict[str, list[Any]] = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode in MODES:
            tel.use(mode)
            with Clock() as c:
                await one(mode)
            clocks[mode].append(c)
    tel.use("off")
    results = {}
    off_cpu = [c.cpu for c in clocks["off"]]
    for mode, cs in clocks.items():
        paired = paired_ratios([c.cpu for c in cs], off_cpu)
        results[mode] = {
            "cpu_us_per_node": min(c.cpu for c in cs) / (N + 1) * 1e6,
            "wall_us_per_node": min(c.wall for c in cs) / (N + 1) * 1e6,
            "ratio_median": paired["median"],
            "ratio_quartiles": paired["quartiles"],
        }
    return results


def sink(port_file: str) -> None:
    """A collector stub: accepts OTLP trace exports over gRPC and over HTTP (``POST /v1/traces``)
    and drops them (its own process); writes both ports."""
    import threading
    from concurrent import futures
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    class Sink(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
        def Export(self, request: Any, context: Any) -> Any:
            return trace_service_pb2.ExportTraceServiceResponse()

    class HTTPSink(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a collector does
        answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()

        def do_POST(self) -> None:
            trace_service_pb2.ExportTraceServiceRequest.FromString(
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
            )  # parsed, as a collector would, and dropped
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(self.answer)))
            self.end_headers()
            self.wfile.write(self.answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Sink(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    http = ThreadingHTTPServer(("127.0.0.1", 0), HTTPSink)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    Path(port_file).write_text(f"{port} {http.server_address[1]}")
    server.wait_for_termination()


def start_sink(cpus: set[int] | None = None) -> tuple[subprocess.Popen[bytes], int, int]:
    """The collector stub in a process of its own (on ``cpus``, if given)."""
    port_file = Path(f"/tmp/weft-bench-otlp-{os.getpid()}.port")
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, __file__, "--sink", str(port_file)])
    if cpus:
        os.sched_setaffinity(proc.pid, cpus)
    for _ in range(200):
        if port_file.exists() and " " in port_file.read_text():
            grpc_port, http_port = map(int, port_file.read_text().split())
            port_file.unlink()
            return proc, grpc_port, http_port
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the OTLP collector stub did not start")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="6 rounds instead of 20")
    ap.add_argument("--rounds", type=int, default=0, help="rounds (each runs every mode once)")
    ap.add_argument(
        "--no-pin", action="store_true",
        help="leave the process unpinned (default: pinned to the last CPU, the stub elsewhere)",
    )  # fmt: skip
    ap.add_argument(
        "--gc-default", action="store_true",
        help="the interpreter's gc defaults instead of the executor's tune_gc",
    )  # fmt: skip
    ap.add_argument("--sink", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sink:
        sink(args.sink)
        return
    rounds = args.rounds or (6 if args.quick else 20)
    cpus = sorted(os.sched_getaffinity(0))
    pinned = not args.no_pin and len(cpus) > 1
    if pinned:  # this process on one CPU, the collector stub (a stand-in for a remote one) not
        os.sched_setaffinity(0, {cpus[-1]})
    sink_proc, otlp_port, http_port = start_sink(set(cpus[:-1]) if pinned else None)
    from engine import keep_results, previous_results, setup_gc

    gc_setup = setup_gc(args.gc_default) or " (the executor's tune_gc)"
    load_before = os.getloadavg()
    try:
        results = asyncio.run(measure(rounds, otlp_port, http_port))
    finally:
        sink_proc.terminate()
        sink_proc.wait()
    load = os.getloadavg()
    off = results["off"]
    where = f"pinned to CPU {cpus[-1]}, the collector stub on others" if pinned else "unpinned"
    print(
        f"\nengine per node, {N}-node no-op chain; modes interleaved, {rounds} rounds; CPU of all "
        f"threads, force_flush in the clock; {where}; gc{gc_setup.replace('-', ' ')}\n"
        f"ratio: the median of each round's CPU over the same round's 'off' (quartiles beside); "
        f"us: each mode's best round\nload average {load_before[0]:.2f} before, {load[0]:.2f} "
        f"after (shared 2-core machine: above ~2 the figures are noisy)"
    )
    previous = previous_results("engine_tracing")
    for mode, r in results.items():
        r["ratio_cpu"] = r["cpu_us_per_node"] / off["cpu_us_per_node"]  # best over best
        r["ratio_wall"] = r["wall_us_per_node"] / off["wall_us_per_node"]
        low, high = r["ratio_quartiles"]
        line = (
            f"  {mode:<16} {r['ratio_median']:5.2f}x ({low:.2f}-{high:.2f})   "
            f"{r['cpu_us_per_node']:6.1f} us cpu {r['ratio_cpu']:5.2f}x   "
            f"{r['wall_us_per_node']:6.1f} us wall"
        )
        if mode != "off":
            line += f"   {'ok' if r['ratio_median'] <= 1.3 else 'over'} (target <= 1.3x)"
        if previous.get(mode, {}).get("ratio_median"):
            line += f"  (previous run {previous[mode]['ratio_median']:.2f}x)"
        print(line)
    keep_results(
        "engine_tracing",
        results,
        load_average=[round(load_before[0], 2), round(load[0], 2)],
        rounds=rounds,
        pinned=pinned,
        gc="default" if args.gc_default else "tune_gc",
    )


if __name__ == "__main__":
    main()

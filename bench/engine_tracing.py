"""What tracing costs the engine per node (issue 8): ``bench/engine.py``'s 1,000-node no-op chain
with telemetry off and on, each mode in a fresh process (the OpenTelemetry globals are set once per
process).

    .venv/bin/python bench/engine_tracing.py [--quick] [--modes off,traces,...]

Modes ("on" = what ``setup_telemetry`` installs: the SDK ``TracerProvider`` with its default
parent-based sampler and a ``BatchSpanProcessor``; plus the worker's execution-run span around
each execution):

- ``off``: nothing installed (the baseline).
- ``traces``: tracing on, exporter that drops the batches (the processor's queue, batching and
  export thread still run).
- ``traces-otlp``: tracing on, the SDK's ``OTLPSpanExporter`` (gRPC) sending every span to a
  local collector stub in another process (so the protobuf encoding and the gRPC send are in this
  process's CPU; the receiving side is not).
- ``traces-sdk``: as ``traces`` but every node span an SDK span (the engine's lean node spans
  turned off): what tracing cost before them.
- ``traces+metrics``: ``traces`` and the metrics (periodic reader, exporter that drops): adds
  the ``weft.node.duration`` histogram measurement per node.
- ``sampled``: ``traces+metrics`` under ``parentbased_traceidratio`` 0.1, with every run's trace
  left out (the 90 % case; the 10 % kept cost what ``traces+metrics`` does).

Each timed run ends with ``force_flush()`` of the span processor inside the clock, so the export
thread's work for that run's spans (materialising, batching, encoding, sending) is counted in
the CPU figures. Reported: time per node (wall and CPU), and the ratio to "off" (target <= 1.3x
for tracing). The shared 2-core machine makes numbers noisy: best of repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

N = 1000
MODES = ("off", "traces", "traces-otlp", "traces-sdk", "traces+metrics", "sampled")
RESULTS = Path(__file__).parent / "results" / "engine_tracing.json"


def install(mode: str, otlp_port: int) -> Any:
    """Install the providers for ``mode``; returns the tracer provider (None when off)."""
    if mode == "off":
        return None
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        MetricExporter,
        MetricExportResult,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from weft_common import telemetry_spans
    from weft_common._telemetry_state import flags

    class DropSpans(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    class DropMetrics(MetricExporter):
        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kw: Any) -> Any:
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kw: Any) -> None:
            pass

    exporter: SpanExporter
    if mode == "traces-otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{otlp_port}", insecure=True)
    else:
        exporter = DropSpans()
    sampler = ParentBased(TraceIdRatioBased(0.1)) if mode == "sampled" else None
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    flags.tracing = True
    if mode in ("traces+metrics", "sampled"):
        metrics.set_meter_provider(
            MeterProvider(metric_readers=[PeriodicExportingMetricReader(DropMetrics(), 10_000)])
        )
        flags.metrics = True
    if mode == "traces-sdk":
        telemetry_spans._lean_sink = lambda: None  # node spans as SDK spans: the old way
    return provider


async def measure(repeats: int, provider: Any, mode: str) -> dict[str, float]:
    from engine import Clock, chain, compile_json, execute, install_noop, make_engine
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    from weft_executor.tracing import begin_execution_run, end_execution_run, remember_start_context

    install_noop()
    dag = compile_json(chain(N))
    engine = make_engine()
    recorded = [0]

    async def one() -> None:
        # In a task of its own, like the worker's task per execution.
        async def run() -> None:
            if mode == "sampled":  # a trace the 10 % sampler leaves out, every time
                from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

                left_out = SpanContext(0xB0, 0x1, is_remote=True, trace_flags=TraceFlags(0))
                otel_context.attach(trace.set_span_in_context(NonRecordingSpan(left_out)))
                remember_start_context("bench")  # as StartExecution does: the run continues it
            begin_execution_run("bench", "bench", first_run=True)
            recorded[0] = int(trace.get_current_span().is_recording())
            try:
                await execute(engine, dag)
            finally:
                end_execution_run()

        await asyncio.create_task(run())
        if provider is not None:
            provider.force_flush()  # the export side of this run's spans, inside the clock

    await one()  # warm up
    clocks = []
    for _ in range(repeats):
        with Clock() as c:
            await one()
        clocks.append(c)
    best_wall = min(c.wall for c in clocks)
    best_cpu = min(c.cpu for c in clocks)
    return {
        "wall_us_per_node": best_wall / (N + 1) * 1e6,
        "cpu_us_per_node": best_cpu / (N + 1) * 1e6,
        "execution_span_recording": recorded[0],
    }


def child(mode: str, repeats: int, otlp_port: int) -> None:
    provider = install(mode, otlp_port)
    print(json.dumps(asyncio.run(measure(repeats, provider, mode))))


def sink(port_file: str) -> None:
    """A collector stub: accepts OTLP trace exports and drops them (its own process)."""
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    class Sink(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
        def Export(self, request: Any, context: Any) -> Any:
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Sink(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    Path(port_file).write_text(str(port))
    server.wait_for_termination()


def start_sink() -> tuple[subprocess.Popen[bytes], int]:
    port_file = Path(f"/tmp/weft-bench-otlp-{os.getpid()}.port")
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, __file__, "--sink", str(port_file)])
    for _ in range(200):
        if port_file.exists() and port_file.read_text():
            port = int(port_file.read_text())
            port_file.unlink()
            return proc, port
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the OTLP collector stub did not start")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)}")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--otlp-port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--sink", help=argparse.SUPPRESS)
    args = ap.parse_args()
    repeats = 3 if args.quick else 7
    if args.sink:
        sink(args.sink)
        return
    if args.child:
        child(args.child, repeats, args.otlp_port)
        return
    modes = [m for m in args.modes.split(",") if m]
    if "off" not in modes:
        modes.insert(0, "off")
    sink_proc, otlp_port = start_sink() if "traces-otlp" in modes else (None, 0)
    results: dict[str, dict[str, float]] = {}
    try:
        for mode in modes:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--otlp-port", str(otlp_port),
                 *(["--quick"] if args.quick else [])],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if proc.returncode != 0:
                raise SystemExit(f"{mode}: {proc.stderr}")
            results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        if sink_proc is not None:
            sink_proc.terminate()
            sink_proc.wait()
    off = results["off"]
    load = os.getloadavg()
    print(
        f"\nengine per node, {N}-node no-op chain, best of {repeats}; CPU includes the export "
        f"thread (force_flush in the clock)\nload average {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f} (shared 2-core machine: above ~2 the figures are noisy)"
    )
    previous: dict[str, Any] = {}
    if RESULTS.exists():
        try:
            previous = json.loads(RESULTS.read_text()).get("results", {})
        except ValueError:
            previous = {}
    for mode, r in results.items():
        r["ratio_wall"] = r["wall_us_per_node"] / off["wall_us_per_node"]
        r["ratio_cpu"] = r["cpu_us_per_node"] / off["cpu_us_per_node"]
        line = (
            f"  {mode:<15} {r['wall_us_per_node']:7.1f} us wall {r['ratio_wall']:5.2f}x  "
            f"{r['cpu_us_per_node']:7.1f} us cpu {r['ratio_cpu']:5.2f}x"
        )
        if mode.startswith("traces") or mode == "sampled":
            line += f"   {'OK' if r['ratio_cpu'] <= 1.3 else 'over'} (target <= 1.3x)"
        if mode in previous and previous[mode].get("ratio_cpu"):
            line += f"  (previous {previous[mode]['ratio_cpu']:.2f}x)"
        print(line)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "load_average": [round(x, 2) for x in load],
                "repeats": repeats,
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"  kept in {RESULTS.relative_to(Path(__file__).parent.parent)}")


if __name__ == "__main__":
    main()

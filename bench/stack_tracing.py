"""What tracing costs an execution end to end: the real services in one process (SQLite state,
dag-builder, executor, all over gRPC on loopback), a 10-node ``transform`` chain run through
``StartExecution`` until it succeeds, with telemetry off, on, and on with 10 % sampling; each
mode in a fresh process (the OpenTelemetry globals are set once per process).

    .venv/bin/python bench/stack_tracing.py [--quick]

"on" is what ``setup_telemetry`` installs for an OTLP endpoint, with exporters that drop. The
shared 2-core machine makes numbers noisy: best of repeats, wall and CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

NODES = 10


def workflow() -> dict[str, Any]:
    ids = [f"t{i}" for i in range(NODES)]
    nodes: list[dict[str, Any]] = [{"id": "start", "type": "start"}]
    nodes += [{"id": i, "type": "transform", "config": {"expression": "1 + 1"}} for i in ids]
    edges = [{"source": a, "target": b} for a, b in zip(["start", *ids[:-1]], ids, strict=True)]
    return {"id": "chain", "nodes": nodes, "edges": edges}


async def measure(executions: int, repeats: int) -> dict[str, float]:
    import grpc

    from weft.executor.v1 import executor_pb2, executor_pb2_grpc
    from weft.state.v1 import state_pb2, state_pb2_grpc
    from weft.workflow.v1 import workflow_pb2
    from weft_common.workflow import definition_to_proto_from_json
    from weft_dag_builder.server import serve as serve_dag_builder
    from weft_dag_builder.settings import DagBuilderSettings
    from weft_executor.server import serve as serve_executor
    from weft_executor.settings import ExecutorSettings
    from weft_state.server import serve as serve_state
    from weft_state.settings import StateSettings

    tmp = Path(tempfile.mkdtemp(prefix="weft-bench-"))
    grace = {"grpc_shutdown_grace_s": 0.2}
    state = await serve_state(
        StateSettings(port=0, database_url=f"sqlite+aiosqlite:///{tmp / 'weft.db'}", **grace)
    )
    dag_builder = await serve_dag_builder(DagBuilderSettings(port=0, **grace))
    executor = await serve_executor(
        ExecutorSettings(
            port=0,
            state_addr=f"127.0.0.1:{state.port}",
            dag_builder_addr=f"127.0.0.1:{dag_builder.port}",
            **grace,
        )
    )
    succeeded = workflow_pb2.ExecutionStatus.Value("EXECUTION_STATUS_SUCCEEDED")
    definition = definition_to_proto_from_json(workflow())
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{executor.port}") as ex_ch,
            grpc.aio.insecure_channel(f"127.0.0.1:{state.port}") as st_ch,
        ):
            ex = executor_pb2_grpc.ExecutorServiceStub(ex_ch)
            st = state_pb2_grpc.StateServiceStub(st_ch)

            async def one() -> None:
                started = await ex.StartExecution(
                    executor_pb2.StartExecutionRequest(workflow=definition, input_json="{}")
                )
                stream = st.StreamEvents(
                    state_pb2.StreamEventsRequest(execution_id=started.execution_id)
                )
                async for _ in stream:
                    pass  # ends after the terminal event
                got = await st.GetExecution(
                    state_pb2.GetExecutionRequest(execution_id=started.execution_id)
                )
                if got.execution.status != succeeded:
                    raise SystemExit(f"execution ended {got.execution.status}")

            await one()  # warm up
            best_wall = best_cpu = float("inf")
            for _ in range(repeats):
                wall0, cpu0 = time.perf_counter(), time.process_time()
                for _ in range(executions):
                    await one()
                best_wall = min(best_wall, time.perf_counter() - wall0)
                best_cpu = min(best_cpu, time.process_time() - cpu0)
    finally:
        await executor.stop()
        await dag_builder.stop()
        await state.stop()
    return {
        "wall_ms_per_execution": best_wall / executions * 1000,
        "cpu_ms_per_execution": best_cpu / executions * 1000,
    }


def install(mode: str) -> None:
    """What ``setup_telemetry`` installs for an OTLP endpoint (batch span processor, periodic
    metric reader), with exporters that drop; ``sampled``: ``parentbased_traceidratio`` 0.1."""
    if mode == "off":
        return
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

    sampler = ParentBased(TraceIdRatioBased(0.1)) if mode == "sampled" else None
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(DropSpans()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(
        MeterProvider(metric_readers=[PeriodicExportingMetricReader(DropMetrics())])
    )
    flags.tracing = flags.metrics = True


def child(mode: str, executions: int, repeats: int) -> None:
    install(mode)
    if mode != "off":  # as setup_telemetry does: SQL statements become spans too
        from weft_common.telemetry import instrument_libraries

        instrument_libraries(("sqlalchemy", "redis"))
    print(json.dumps(asyncio.run(measure(executions, repeats))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer executions and repeats")
    ap.add_argument("--child", choices=["off", "on", "sampled"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    executions, repeats = (10, 2) if args.quick else (30, 3)
    if args.child:
        child(args.child, executions, repeats)
        return
    results: dict[str, dict[str, float]] = {}
    for mode in ("off", "on", "sampled"):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", mode, *(["--quick"] if args.quick else [])],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise SystemExit(f"{mode}: {proc.stderr[-3000:]}")
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    off = results["off"]
    print(
        f"\n{NODES}-node transform chain through the services (SQLite), per execution "
        f"(shared 2-core machine: noisy, best of {repeats} x {executions})"
    )
    for mode, r in results.items():
        wall, cpu = r["wall_ms_per_execution"], r["cpu_ms_per_execution"]
        print(
            f"  {mode:<8} {wall:8.2f} ms wall {wall / off['wall_ms_per_execution']:5.2f}x   "
            f"{cpu:8.2f} ms cpu {cpu / off['cpu_ms_per_execution']:5.2f}x"
        )


if __name__ == "__main__":
    main()

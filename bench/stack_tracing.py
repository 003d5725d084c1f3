"""What tracing costs an execution end to end: the real services in one process (SQLite state,
dag-builder, executor, all over gRPC on loopback), a 10-node ``transform`` chain run through
``StartExecution`` until it succeeds, with telemetry off, on, and on with 10 % sampling; each
mode in a fresh process (the OpenTelemetry globals are set once per process).

    .venv/bin/python bench/stack_tracing.py [--quick] [--rounds N]

"on" is what ``setup_telemetry`` installs for an OTLP endpoint, with exporters that drop. The
shared 2-core machine makes numbers noisy, and drifts over a minute: the modes run in rounds (each
round runs each mode's process once, one after the other), each process pinned to one CPU (the
last; ``--no-pin`` leaves them free); a mode's ratio is the median over the rounds of its time
over the same round's ``off`` (quartiles beside), its times the best round's. Kept in
``bench/results/stack_tracing.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

NODES = 10
MODES = ("off", "on", "sampled")


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
    ap.add_argument("--quick", action="store_true", help="fewer executions and rounds")
    ap.add_argument("--rounds", type=int, default=0, help="rounds (each runs every mode once)")
    ap.add_argument("--no-pin", action="store_true", help="leave the processes unpinned")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    executions = 10 if args.quick else 30
    if args.child:
        child(args.child, executions, 1)
        return
    rounds = args.rounds or (2 if args.quick else 4)
    cpus = sorted(os.sched_getaffinity(0))
    pin = ["taskset", "-c", str(cpus[-1])] if not args.no_pin and len(cpus) > 1 else []
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode in MODES:
            command = [sys.executable, __file__, "--child", mode]
            proc = subprocess.run(
                [*pin, *command, *(["--quick"] if args.quick else [])],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                raise SystemExit(f"{mode}: {proc.stderr[-3000:]}")
            runs[mode].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    from engine import keep_results, paired_ratios, previous_results

    previous = previous_results("stack_tracing")
    where = f"pinned to CPU {cpus[-1]}" if pin else "unpinned"
    print(
        f"\n{NODES}-node transform chain through the services (SQLite), per execution; "
        f"{rounds} rounds of {executions} executions per mode, {where}\nratio: the median of "
        f"each round's time over the same round's 'off' (quartiles beside); ms: the best round"
    )
    results: dict[str, dict[str, Any]] = {}
    for mode, measured in runs.items():
        r: dict[str, Any] = {}
        for kind in ("wall", "cpu"):
            key = f"{kind}_ms_per_execution"
            paired = paired_ratios([m[key] for m in measured], [o[key] for o in runs["off"]])
            r[key] = min(m[key] for m in measured)
            r[f"ratio_{kind}"] = paired["median"]
            r[f"ratio_{kind}_quartiles"] = paired["quartiles"]
        results[mode] = r
        line = (
            f"  {mode:<8} cpu {r['ratio_cpu']:5.2f}x ({r['ratio_cpu_quartiles'][0]:.2f}-"
            f"{r['ratio_cpu_quartiles'][1]:.2f}) {r['cpu_ms_per_execution']:7.2f} ms   wall "
            f"{r['ratio_wall']:5.2f}x {r['wall_ms_per_execution']:7.2f} ms"
        )
        if previous.get(mode, {}).get("ratio_cpu"):
            line += f"  (previous run cpu {previous[mode]['ratio_cpu']:.2f}x)"
        print(line)
    keep_results("stack_tracing", results, rounds=rounds, executions=executions, pinned=bool(pin))


if __name__ == "__main__":
    main()

"""What telemetry costs per node and per RPC, off and on (a benchmark: prints, asserts no timing).

Each mode runs in a fresh process (the OpenTelemetry globals are set once per process):

    .venv/bin/python tests/unit/common/test_telemetry_overhead.py off
    .venv/bin/python tests/unit/common/test_telemetry_overhead.py on

``pytest -s tests/unit/common/test_telemetry_overhead.py`` prints both and the ratios. Times are
CPU time of the process (``process_time``: the gRPC server runs in the same process), because
wall time on a shared 2-core machine mostly measures the neighbours; compare ratios.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

NODES = 20_000
RPCS = 1_000


def _bench_nodes() -> dict[str, float]:
    from weft_common.telemetry_spans import execution_span, node_span, record_node_status

    def bare() -> None:
        for _ in range(NODES):
            pass

    def spans() -> None:
        with execution_span("exec-bench", "wf"):
            for i in range(NODES):
                with node_span("n", "transform", (("loop", i),), 1, execution_id="exec-bench"):
                    record_node_status("SUCCEEDED")

    out = {}
    for name, fn in (("bare_loop", bare), ("node_span", spans)):
        best = float("inf")
        for _ in range(3):
            t0 = time.process_time()
            fn()
            best = min(best, time.process_time() - t0)
        out[name + "_us"] = best / NODES * 1e6
    return out


async def _bench_rpcs() -> dict[str, float]:
    import grpc

    from weft_common.grpc_server import GrpcServer
    from weft_common.settings import CommonSettings
    from weft_common.telemetry_grpc import instrumented_channel

    async def echo(request: bytes, context: Any) -> bytes:
        return request

    settings = CommonSettings()
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = GrpcServer(
        settings=settings,
        service_names=["bench.Echo"],
        register=lambda s: s.add_generic_rpc_handlers((handler,)),
    )
    port = await server.start("127.0.0.1:0")
    try:
        async with instrumented_channel(f"127.0.0.1:{port}", settings) as channel:
            call = channel.unary_unary("/bench.Echo/Echo")
            for _ in range(100):  # warm up
                await call(b"x")
            best = float("inf")
            for _ in range(3):
                t0 = time.process_time()
                for _ in range(RPCS):
                    await call(b"x")
                best = min(best, time.process_time() - t0)
    finally:
        await server.stop(0)
    return {"unary_rpc_us": best / RPCS * 1e6}


def run(mode: str) -> dict[str, float]:
    if mode == "on":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        from weft_common._telemetry_state import flags

        class Dropping(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        # What setup_telemetry installs for OTLP, with an exporter that drops instead of sending.
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Dropping(), max_queue_size=100_000))
        trace.set_tracer_provider(provider)
        flags.tracing = True
    result = _bench_nodes()
    result.update(asyncio.run(_bench_rpcs()))
    return result


def test_print_telemetry_overhead() -> None:
    results = {}
    for mode in ("off", "on"):
        proc = subprocess.run(
            [sys.executable, __file__, mode], capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    off, on = results["off"], results["on"]
    print("\ntelemetry overhead, CPU us per op (best of 3; shared machine, noisy)")
    for key in off:
        print(
            f"  {key:16s} off {off[key]:9.2f}  on {on[key]:9.2f}  on/off {on[key] / off[key]:6.2f}x"
        )
    print(f"  node_span off costs {off['node_span_us'] - off['bare_loop_us']:.2f} us/node")
    print(f"  node_span on  costs {on['node_span_us'] - on['bare_loop_us']:.2f} us/node")
    assert set(off) == set(on) == {"bare_loop_us", "node_span_us", "unary_rpc_us"}


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "off")))

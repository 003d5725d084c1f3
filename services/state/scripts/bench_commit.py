"""Measure the state service alone: CommitStep latency through gRPC + PostgreSQL, commits and
executions per second with many in flight, and the service's own CPU time per commit (it runs as
``python -m weft_state`` in a child process, as deployed). Prints numbers; wall times are noisy
on a shared machine, the CPU per commit much less so.

    .venv/bin/python services/state/scripts/bench_commit.py [--steps 200] [--executions 200]

Creates (and drops) its own database ``weft_bench_<random>`` on 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import grpc
import psutil

from weft.state.v1 import state_pb2 as S
from weft.state.v1 import state_pb2_grpc
from weft.workflow.v1 import workflow_pb2 as W

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def commit(lease: S.Lease, version: int, i: int, *, status: int = 0) -> S.CommitStepRequest:
    node = f"n{i}"
    out = json.dumps({"value": i, "text": f"some output of node {i}"})
    return S.CommitStepRequest(
        lease=lease,
        expected_version=version,
        steps=[
            S.StepRecord(
                key=node,
                node_id=node,
                status=W.NODE_STATUS_SUCCEEDED,
                output_json=out,
                fired_handles=["out"],
            )
        ],
        node_logs=[
            W.NodeLog(
                node_id=node,
                node_type="transform",
                status=W.NODE_STATUS_SUCCEEDED,
                attempt=1,
                input_json=json.dumps({"i": i}),
                output_json=out,
            )
        ],
        events=[
            S.EventDraft(
                type="node:started", node_id=node, payload_json='{"nodeType":"transform"}'
            ),
            S.EventDraft(
                type="node:completed",
                node_id=node,
                payload_json=f'{{"nodeType":"transform","output":{out}}}',
            ),
        ],
        control=S.ControlState(status=status),
    )


async def run_execution(
    stub: state_pb2_grpc.StateServiceStub,
    wid: str,
    nodes: int,
    latencies: list[float] | None = None,
) -> None:
    created = await stub.CreateExecution(
        S.CreateExecutionRequest(
            workflow_id=wid, input_json="{}", claim_worker_id="bench", lease_ms=60_000
        )
    )
    lease, version = created.lease, 0
    for i in range(nodes):
        t0 = time.perf_counter()
        status = (
            W.EXECUTION_STATUS_RUNNING
            if i == 0
            else (W.EXECUTION_STATUS_SUCCEEDED if i == nodes - 1 else 0)
        )
        version = (await stub.CommitStep(commit(lease, version, i, status=status))).version
        if latencies is not None:
            latencies.append(time.perf_counter() - t0)


def start_service(database: str) -> tuple[subprocess.Popen[bytes], int]:
    env = {
        **os.environ,
        "WEFT_PORT": "0",
        "WEFT_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}",
        "WEFT_REDIS_URL": "redis://127.0.0.1:6379/0",
        "WEFT_REDIS_PREFIX": f"{database}:",
    }
    log = tempfile.NamedTemporaryFile(prefix="weft-state-bench-", suffix=".log", delete=False)
    profile = (
        ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]]
        if os.environ.get("BENCH_PROFILE")
        else []
    )
    proc = subprocess.Popen(
        [sys.executable, *profile, "-m", "weft_state"], env=env, stdout=log, stderr=log
    )
    deadline = time.monotonic() + 60
    while True:
        found = re.search(rb"StateService listening on port (\d+)", Path(log.name).read_bytes())
        if found:
            return proc, int(found.group(1))
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"the state service did not start: {Path(log.name).read_text()}")
        time.sleep(0.05)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--executions", type=int, default=200)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--in-flight", type=int, default=20)
    args = ap.parse_args()
    name = "weft_bench_" + secrets.token_hex(4)
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc, port = start_service(name)
        service = psutil.Process(proc.pid)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = state_pb2_grpc.StateServiceStub(channel)
            wid = "bench"
            await stub.RegisterWorkflow(
                S.RegisterWorkflowRequest(
                    definition=W.WorkflowDefinition(id=wid), dag=W.CompiledDag(workflow_id=wid)
                )
            )
            await run_execution(stub, wid, 20)  # warm-up
            lat: list[float] = []
            await run_execution(stub, wid, args.steps, lat)
            lat.sort()
            print(
                f"CommitStep chain of {args.steps}: median {statistics.median(lat) * 1000:.3f} ms, "
                f"p90 {lat[int(len(lat) * 0.9)] * 1000:.3f} ms, p99 {lat[int(len(lat) * 0.99)] * 1000:.3f} ms"
            )

            sem = asyncio.Semaphore(args.in_flight)

            async def one() -> None:
                async with sem:
                    await run_execution(stub, wid, args.nodes)

            t0, c0 = time.perf_counter(), sum(service.cpu_times()[:2])
            await asyncio.gather(*(one() for _ in range(args.executions)))
            dt, cpu = time.perf_counter() - t0, sum(service.cpu_times()[:2]) - c0
            print(
                f"{args.executions} executions of {args.nodes} commits, {args.in_flight} in flight: "
                f"{args.executions / dt:.1f} executions/s, {args.executions * args.nodes / dt:.0f} commits/s, "
                f"state service CPU {cpu / (args.executions * args.nodes) * 1000:.3f} ms "
                f"per commit; load average {os.getloadavg()[0]:.1f}"
            )
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=15)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())

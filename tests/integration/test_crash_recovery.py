"""Crash recovery: two executor processes on one state service (PostgreSQL + Redis); one of them is
killed with SIGKILL at random moments (and restarted) while 50 executions of a 20-node workflow with
HTTP side effects run. Every execution must finish with the right outputs, every event log must be
contiguous and well formed, and no side effect may be requested more than twice (the fake upstream
counts ``Idempotency-Key``s: a node that was running when its worker died runs once more, with the
same key)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from helpers.db import REDIS_URL, Backend, postgres_url, random_name
from integration.executor.effects_upstream import EffectsUpstream
from integration.executor.executor_support import (
    STATUS_NAMES,
    check_log,
    state_settings,
)

from weft.dagbuilder.v1 import dag_builder_pb2, dag_builder_pb2_grpc
from weft.executor.v1 import executor_pb2, executor_pb2_grpc
from weft.state.v1 import state_pb2, state_pb2_grpc
from weft_common import jsonutil
from weft_common.workflow import definition_to_proto_from_json
from weft_dag_builder.server import serve as serve_dag_builder
from weft_dag_builder.settings import DagBuilderSettings
from weft_state.server import serve as serve_state

# Under ~40 s on a quiet machine; the shared 2-core box can make it several times slower.
pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(300)]

EXECUTIONS = 50
MIN_KILLS = 3
MAX_EXECUTIONS = 200  # the bound on going on for kills (a victim that never restarts fails it)
HTTP_NODES = 9  # + 9 transforms + start + output = 20 nodes
HTTP_DELAY_MS = 100
LEASE_MS = 2500


def effects_workflow(base_url: str) -> dict[str, Any]:
    """start → (http → transform) x 9 → output: v ↦ ((v + 1) * 2) nine times."""
    nodes: list[dict[str, Any]] = [{"id": "start", "type": "start"}]
    edges: list[dict[str, Any]] = []
    previous, value = "start", "{{input.v}}"
    for i in range(1, HTTP_NODES + 1):
        nodes.append(
            {
                "id": f"h{i}",
                "type": "http",
                "config": {
                    "method": "POST",
                    "url": f"{base_url}/effect?ms={HTTP_DELAY_MS}",
                    "body": {"v": value},
                },
                "retry": {"maxAttempts": 3, "initialIntervalMs": 100},
            }
        )
        nodes.append({"id": f"t{i}", "type": "transform", "config": {"expression": f"h{i}.body.v * 2"}})
        edges += [{"source": previous, "target": f"h{i}"}, {"source": f"h{i}", "target": f"t{i}"}]
        previous, value = f"t{i}", f"{{{{t{i}}}}}"
    nodes.append({"id": "out", "type": "output", "config": {"value": value, "name": "result"}})
    edges.append({"source": previous, "target": "out"})
    return {"id": "effects", "nodes": nodes, "edges": edges}


def expected_result(v: int) -> int:
    for _ in range(HTTP_NODES):
        v = (v + 1) * 2
    return v


class ExecutorProcess:
    """``python -m weft_executor`` in a child process; its port is read from its log."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.env = env
        self.log_dir = log_dir
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        log_path = self.log_dir / f"{self.name}-{self.starts}.log"
        with open(log_path, "wb") as log_file:  # noqa: ASYNC230 - the child's log, opened once
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "weft_executor",
                env=self.env, stdout=log_file, stderr=log_file,
            )
        deadline = time.monotonic() + 30
        while True:
            match = re.search(rb"ExecutorService listening on port (\d+)", log_path.read_bytes())
            if match:
                self.port = int(match.group(1))
                return
            if self.proc.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not start:\n{log_path.read_text()}")
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def wait(self) -> None:
        if self.proc is not None:
            await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@pytest.fixture
async def crash_backend() -> AsyncIterator[Backend]:
    """A PostgreSQL database of this test's own (its workers must see only its executions)."""
    from helpers.db import create_postgres_database, drop_postgres_database, flush_redis_prefix

    name = await create_postgres_database(random_name("weft_crash_"))
    prefix = random_name("weft_crash_") + ":"
    yield Backend("postgres", postgres_url(name), REDIS_URL, prefix)
    await drop_postgres_database(name)
    await flush_redis_prefix(prefix)


async def test_kill_9_executors_mid_run(crash_backend: Backend, tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("WEFT_CRASH_SEED", "0")) or None)
    state = await serve_state(state_settings(crash_backend, claim_poll_ms=100))
    builder = await serve_dag_builder(DagBuilderSettings(port=0, grpc_shutdown_grace_s=0.5))
    env = {
        **os.environ,
        "WEFT_PORT": "0",
        "WEFT_STATE_ADDR": f"127.0.0.1:{state.port}",
        "WEFT_DAG_BUILDER_ADDR": f"127.0.0.1:{builder.port}",
        "WEFT_LEASE_MS": str(LEASE_MS),
        "WEFT_HEARTBEAT_MS": "500",
        "WEFT_HTTP_ALLOW_PRIVATE": "true",
        "WEFT_LOG_LEVEL": "INFO",
        "WEFT_GRPC_SHUTDOWN_GRACE_S": "1",
        "OTEL_SDK_DISABLED": "true",
    }
    victim = ExecutorProcess("victim", env, tmp_path)
    survivor = ExecutorProcess("survivor", env, tmp_path)
    channels: list[grpc.aio.Channel] = []

    def stub(port: int) -> executor_pb2_grpc.ExecutorServiceStub:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        return executor_pb2_grpc.ExecutorServiceStub(channel)

    state_channel = grpc.aio.insecure_channel(f"127.0.0.1:{state.port}")
    state_stub = state_pb2_grpc.StateServiceStub(state_channel)
    with EffectsUpstream() as upstream:
        try:
            await asyncio.gather(victim.start(), survivor.start())
            definition = definition_to_proto_from_json(effects_workflow(upstream.base_url))
            builder_channel = grpc.aio.insecure_channel(f"127.0.0.1:{builder.port}")
            channels.append(builder_channel)
            compiled = await dag_builder_pb2_grpc.DagBuilderServiceStub(builder_channel).CompileWorkflow(
                dag_builder_pb2.CompileWorkflowRequest(workflow=definition)
            )
            assert compiled.valid, compiled.diagnostics
            await state_stub.RegisterWorkflow(
                state_pb2.RegisterWorkflowRequest(definition=definition, dag=compiled.dag)
            )

            kills = 0

            async def killer() -> None:
                """SIGKILL the victim at random moments and restart it. Kills are at least a
                lease plus two seconds apart, so the runs one kill interrupts are taken over and
                re-run before the next kill (a node hit by two kills may rightly run 3 times)."""
                nonlocal kills
                await asyncio.sleep(rng.uniform(1.5, 3.0))
                while True:
                    victim.kill()
                    await victim.wait()
                    kills += 1
                    killed_at = time.monotonic()
                    await victim.start()
                    pause = killed_at + LEASE_MS / 1000 + rng.uniform(2.0, 3.0) - time.monotonic()
                    await asyncio.sleep(max(pause, 0))

            async def start_one(i: int) -> str:
                """Start through either executor; a start cut by a kill is retried with the same
                idempotency key, so it never makes a second execution."""
                request = executor_pb2.StartExecutionRequest(
                    workflow_id="effects",
                    input_json=jsonutil.dumps({"v": i}),
                    idempotency_key=f"crash-{i}",
                )
                for attempt in range(20):
                    target = victim if (i + attempt) % 2 == 0 else survivor
                    if not target.port or target.proc is None or target.proc.returncode is not None:
                        continue
                    try:
                        response = await stub(target.port).StartExecution(request, timeout=5)
                        return str(response.execution_id)
                    except grpc.aio.AioRpcError:
                        await asyncio.sleep(0.2)
                raise AssertionError(f"could not start execution {i}")

            killing = asyncio.create_task(killer())
            t0 = time.monotonic()
            # Starts at a steady rate, whatever the latency of each (a start may wait on a restart),
            # and go on past EXECUTIONS until MIN_KILLS kills have cut into running work: on a
            # slow or busy machine a restart takes longer, so fewer kills fit in a fixed run.
            starts = []
            while len(starts) < EXECUTIONS or (kills < MIN_KILLS and len(starts) < MAX_EXECUTIONS):
                starts.append(asyncio.create_task(start_one(len(starts))))
                await asyncio.sleep(0.3)
            ids = dict(enumerate(await asyncio.gather(*starts)))
            t_started = time.monotonic()
            # Wait for every execution to finish (kills go on while some still run). One
            # ListExecutions per poll: polling each execution would load the state service.
            by_id = {execution_id: i for i, execution_id in ids.items()}
            deadline = time.monotonic() + 120
            finished: dict[int, Any] = {}
            while len(finished) < len(ids):
                listed = await state_stub.ListExecutions(
                    state_pb2.ListExecutionsRequest(workflow_id="effects", limit=len(ids) * 2)
                )
                for execution in listed.executions:
                    if STATUS_NAMES[execution.status] in ("SUCCEEDED", "FAILED", "CANCELLED"):
                        finished[by_id[execution.execution_id]] = execution
                if len(finished) < len(ids) and time.monotonic() > deadline:
                    raise AssertionError(f"{len(ids) - len(finished)} executions never finished")
                await asyncio.sleep(0.5)
            elapsed = time.monotonic() - t0
            killing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await killing
            print(f"\nstarted in {t_started - t0:.1f}s, all finished after {elapsed:.1f}s")
        finally:
            await asyncio.gather(victim.stop(), survivor.stop())
            for channel in channels:
                await channel.close()

        counts = upstream.snapshot()
        assert upstream.missing_key == 0

    t_check = time.monotonic()
    try:
        assert kills >= MIN_KILLS, f"only {kills} kills happened"
        for i, execution in finished.items():
            assert STATUS_NAMES[execution.status] == "SUCCEEDED", (i, execution.error)
            assert jsonutil.loads(execution.outputs_json) == {"result": expected_result(i)}
            events = []
            async for item in state_stub.StreamEvents(
                state_pb2.StreamEventsRequest(execution_id=execution.execution_id, after_seq=0)
            ):
                events.append(jsonutil.loads(item.event.payload_json))
            check_log(events)
            completed = [e["nodeId"] for e in events if e["type"] == "node:completed"]
            assert len(completed) == 2 * HTTP_NODES + 2 and len(set(completed)) == len(completed)
            for n in range(1, HTTP_NODES + 1):
                assert 1 <= counts[f"{execution.execution_id}:h{n}"] <= 2
        assert max(counts.values()) <= 2
        repeated = sum(1 for c in counts.values() if c == 2)
        # The kills really interrupted running side effects (they were re-run after a take-over).
        assert repeated >= 1
        print(
            f"\n{len(ids)} executions, {kills} kills, {repeated} side effects re-run once, "
            f"none more; run {elapsed:.1f}s, checks {time.monotonic() - t_check:.1f}s"
        )
    finally:
        await state_channel.close()
        await builder.stop()
        await state.stop()

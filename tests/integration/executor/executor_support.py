"""The real services for executor tests, started in-process on free ports, and the small client
helpers the tests share (start, wait, read the event log)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from helpers.db import (
    REDIS_URL,
    Backend,
    check_redis,
    create_postgres_database,
    drop_postgres_database,
    flush_redis_prefix,
    postgres_url,
    random_name,
)

from weft.executor.v1 import executor_pb2, executor_pb2_grpc
from weft.state.v1 import state_pb2, state_pb2_grpc
from weft.workflow.v1 import workflow_pb2
from weft_common import jsonutil
from weft_common.workflow import definition_to_proto_from_json
from weft_dag_builder.server import DagBuilderService
from weft_dag_builder.server import serve as serve_dag_builder
from weft_dag_builder.settings import DagBuilderSettings
from weft_executor.server import ExecutorService
from weft_executor.server import serve as serve_executor
from weft_executor.settings import ExecutorSettings
from weft_state.server import RunningStateService
from weft_state.server import serve as serve_state
from weft_state.settings import StateSettings

__all__ = ["TERMINAL", "Backends", "Stack", "check_log", "outputs", "start_stack"]

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
TERMINAL_EVENTS = ("execution:completed", "execution:failed", "execution:cancelled")
STATUS_NAMES = {v: k.removeprefix("EXECUTION_STATUS_") for k, v in workflow_pb2.ExecutionStatus.items()}


def state_settings(backend: Backend, **overrides: Any) -> StateSettings:
    values: dict[str, Any] = {
        "port": 0,
        "database_url": backend.database_url,
        "redis_url": backend.redis_url,
        "redis_prefix": backend.redis_prefix,
        "stream_poll_ms": 300,
        "claim_poll_ms": 50,
        "resume_wait_ms": 3000,
        "db_pool_size": 10,
        "grpc_shutdown_grace_s": 0.5,
    }
    values.update(overrides)
    return StateSettings(**values)


def executor_settings(state_port: int, dag_port: int, **overrides: Any) -> ExecutorSettings:
    values: dict[str, Any] = {
        "port": 0,
        "state_addr": f"127.0.0.1:{state_port}",
        "dag_builder_addr": f"127.0.0.1:{dag_port}",
        "lease_ms": 3000,
        "heartbeat_ms": 300,
        "claim_poll_ms": 250,
        "http_allow_private": True,
        "grpc_shutdown_grace_s": 0.5,
    }
    values.update(overrides)
    return ExecutorSettings(**values)


@dataclass
class Stack:
    """A state service, a dag-builder and one or more executors, plus clients of them."""

    backend: Backend
    state: RunningStateService
    dag_builder: DagBuilderService
    executors: list[ExecutorService]
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state_stub = state_pb2_grpc.StateServiceStub(self._channel(self.state.port))
        self.executor_stubs = [
            executor_pb2_grpc.ExecutorServiceStub(self._channel(e.port)) for e in self.executors
        ]

    @property
    def executor(self) -> executor_pb2_grpc.ExecutorServiceStub:
        return self.executor_stubs[0]

    def _channel(self, port: int) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.channels.append(channel)
        return channel

    async def add_executor(self, **overrides: Any) -> executor_pb2_grpc.ExecutorServiceStub:
        service = await serve_executor(
            executor_settings(self.state.port, self.dag_builder.port, **overrides)
        )
        self.executors.append(service)
        stub = executor_pb2_grpc.ExecutorServiceStub(self._channel(service.port))
        self.executor_stubs.append(stub)
        return stub

    async def stop(self) -> None:
        for channel in self.channels:
            await channel.close()
        for executor in self.executors:
            await executor.stop()
        await self.dag_builder.stop()
        await self.state.stop()

    # -- client helpers ----------------------------------------------------------------------

    async def start(
        self,
        workflow: dict[str, Any] | None = None,
        input: Any = None,
        *,
        workflow_id: str = "",
        version: int = 0,
        idempotency_key: str = "",
        owner: str = "",
        via: int = 0,
    ) -> executor_pb2.StartExecutionResponse:
        request = executor_pb2.StartExecutionRequest(
            workflow_id=workflow_id,
            workflow_version=version,
            input_json=jsonutil.dumps(input if input is not None else {}),
            idempotency_key=idempotency_key,
            owner=owner,
        )
        if workflow is not None:
            request.workflow.CopyFrom(definition_to_proto_from_json(workflow))
        return await self.executor_stubs[via].StartExecution(request)

    async def register(self, workflow: dict[str, Any]) -> int:
        """Register a definition (compiled by the dag-builder) with the state service."""
        from weft.dagbuilder.v1 import dag_builder_pb2, dag_builder_pb2_grpc

        definition = definition_to_proto_from_json(workflow)
        builder = dag_builder_pb2_grpc.DagBuilderServiceStub(self._channel(self.dag_builder.port))
        compiled = await builder.CompileWorkflow(
            dag_builder_pb2.CompileWorkflowRequest(workflow=definition)
        )
        assert compiled.valid, compiled.diagnostics
        response = await self.state_stub.RegisterWorkflow(
            state_pb2.RegisterWorkflowRequest(definition=definition, dag=compiled.dag)
        )
        return int(response.version)

    async def execution(self, execution_id: str) -> workflow_pb2.Execution:
        response = await self.state_stub.GetExecution(
            state_pb2.GetExecutionRequest(execution_id=execution_id)
        )
        return response.execution

    async def wait_status(
        self, execution_id: str, *statuses: str, within: float = 20.0
    ) -> workflow_pb2.Execution:
        deadline = time.monotonic() + within
        while True:
            execution = await self.execution(execution_id)
            if STATUS_NAMES[execution.status] in statuses:
                return execution
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"execution {execution_id} is {STATUS_NAMES[execution.status]}, "
                    f"not {statuses}, after {within}s"
                )
            await asyncio.sleep(0.05)

    async def events(self, execution_id: str, after_seq: int = 0, via: int = 0) -> list[dict[str, Any]]:
        """The event log through ExecutorService.StreamExecutionEvents, until its terminal event."""
        stream = self.executor_stubs[via].StreamExecutionEvents(
            executor_pb2.StreamExecutionEventsRequest(execution_id=execution_id, after_seq=after_seq)
        )
        out = []
        async for item in stream:
            event = jsonutil.loads(item.event.payload_json)
            assert event["seq"] == item.event.seq
            out.append(event)
        return out

    async def node_logs(self, execution_id: str) -> list[workflow_pb2.NodeLog]:
        response = await self.state_stub.ListNodeLogs(
            state_pb2.ListNodeLogsRequest(execution_id=execution_id)
        )
        return list(response.nodes)


async def start_stack(backend: Backend, *, executors: int = 1, **executor_overrides: Any) -> Stack:
    state = await serve_state(state_settings(backend))
    dag_builder = await serve_dag_builder(DagBuilderSettings(port=0, grpc_shutdown_grace_s=0.5))
    services = [
        await serve_executor(executor_settings(state.port, dag_builder.port, **executor_overrides))
        for _ in range(executors)
    ]
    return Stack(backend, state, dag_builder, services)


class Backends:
    """Fresh backends for executor stacks, cleaned up at the end of the session."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self.tmp = tmp
        self.databases: list[str] = []
        self.prefixes: list[str] = []
        self.stacks: dict[str, Stack] = {}

    async def new(self, name: str) -> Backend:
        if name == "sqlite":
            path: Path = self.tmp.mktemp("executor-sqlite") / "weft.db"
            return Backend("sqlite", f"sqlite+aiosqlite:///{path}", "")
        try:
            await check_redis()
            database = await create_postgres_database(random_name("weft_exec_"))
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
        self.databases.append(database)
        prefix = random_name("weft_exec_") + ":"
        self.prefixes.append(prefix)
        return Backend("postgres", postgres_url(database), REDIS_URL, prefix)

    async def shared_stack(self, name: str) -> Stack:
        if name not in self.stacks:
            self.stacks[name] = await start_stack(await self.new(name))
        return self.stacks[name]

    async def close(self) -> None:
        for stack in self.stacks.values():
            await stack.stop()
        for database in self.databases:
            await drop_postgres_database(database)
        for prefix in self.prefixes:
            await flush_redis_prefix(prefix)


def outputs(execution: workflow_pb2.Execution) -> Any:
    return jsonutil.loads(execution.outputs_json)


def check_log(events: list[dict[str, Any]]) -> None:
    """SPEC section 5 invariants: seq 1..N with no gap, started first, one terminal event last,
    every node:started ended exactly once."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), [e["seq"] for e in events]
    assert events[0]["type"] == "execution:started"
    assert [e["type"] for e in events].count("execution:started") == 1
    assert events[-1]["type"] in TERMINAL_EVENTS
    assert sum(e["type"] in TERMINAL_EVENTS for e in events) == 1
    open_runs: dict[str, int] = {}
    for e in events:
        key = f"{e.get('nodeId')}@{e.get('scope')}"
        if e["type"] == "node:started":
            assert open_runs.get(key, 0) == 0, f"{key} started twice without an end"
            open_runs[key] = 1
        elif e["type"] in ("node:completed", "node:error", "node:cancelled"):
            assert open_runs.get(key) == 1, f"{key} ended without a start: {e}"
            open_runs[key] = 0
    assert not [k for k, v in open_runs.items() if v], f"never ended: {open_runs}"

"""Small in-memory fakes of the dag-builder, executor and state services, served by real grpc.aio
servers (the generated servicer base classes), so the gateway's HTTP layer is tested on its own.

The fake executor "runs" a workflow by walking its nodes in order: each node emits
``node:started`` / ``node:completed`` (``approval`` nodes park the execution until resumed,
``fail`` nodes fail it). Tests can also append events by hand (``FakeWorld.append``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from weft.dagbuilder.v1 import dag_builder_pb2, dag_builder_pb2_grpc
from weft.executor.v1 import executor_pb2, executor_pb2_grpc
from weft.state.v1 import state_pb2, state_pb2_grpc
from weft.workflow.v1 import workflow_pb2
from weft_common import jsonutil
from weft_common.errors import FailedPrecondition, InvalidArgument, NotFound
from weft_common.grpc_server import GrpcServer
from weft_common.settings import CommonSettings

TERMINAL = {"execution:completed", "execution:failed", "execution:cancelled"}
ST = workflow_pb2


def diagnostics_of(defn: workflow_pb2.WorkflowDefinition) -> list[workflow_pb2.Diagnostic]:
    """The fake's validation: one start node, known node types, edges between known nodes."""
    out = []
    ids = {n.id for n in defn.nodes}
    if sum(n.type == "start" for n in defn.nodes) != 1:
        out.append(ST.Diagnostic(code="START_COUNT", message="a workflow needs exactly one start node"))
    for n in defn.nodes:
        if n.type not in {"start", "transform", "approval", "output", "fail", "wait"}:
            out.append(ST.Diagnostic(code="UNKNOWN_TYPE", message=f"unknown type {n.type!r}", node_id=n.id))
    for i, e in enumerate(defn.edges):
        for end in (e.source, e.target):
            if end not in ids:
                out.append(ST.Diagnostic(code="UNKNOWN_NODE", message=f"edge names unknown node {end!r}",
                                         node_id=end, edge_id=e.id or f"e{i}"))
    return out


def diagnostics_details(diags: list[workflow_pb2.Diagnostic]) -> dict[str, Any]:
    return {"diagnostics": [json_format.MessageToDict(d) for d in diags]}


def now_ts() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


@dataclass
class FakeExecution:
    execution: workflow_pb2.Execution
    definition: workflow_pb2.WorkflowDefinition
    events: list[workflow_pb2.Event] = field(default_factory=list)
    logs: list[workflow_pb2.NodeLog] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    position: int = 0  # next node to run
    resumed: asyncio.Event = field(default_factory=asyncio.Event)
    resume_input: Any = None
    task: asyncio.Task[None] | None = None

    def has_events_after(self, seq: int) -> bool:
        return len(self.events) > seq


class FakeWorld:
    """The shared in-memory state behind the three fake services."""

    def __init__(self, node_delay_s: float = 0.01) -> None:
        self.workflows: dict[str, list[state_pb2.WorkflowVersion]] = {}
        self.executions: dict[str, FakeExecution] = {}
        self.node_delay_s = node_delay_s
        self.open_streams = 0
        self.stream_calls = 0
        self.idempotency: dict[tuple[str, str], str] = {}

    def visible(self, execution_id: str, owner: str) -> FakeExecution:
        ex = self.executions.get(execution_id)
        if ex is None or (owner and ex.execution.owner != owner):
            raise NotFound(f"execution {execution_id} not found")
        return ex

    async def append(self, ex: FakeExecution, etype: str, node_id: str = "", **payload: Any) -> None:
        seq = len(ex.events) + 1
        ts = now_ts()
        body = {"seq": seq, "type": etype, "executionId": ex.execution.execution_id,
                "timestamp": ts.ToJsonString(), "scope": []}
        if node_id:
            body["nodeId"] = node_id
        body.update(payload)
        ev = ST.Event(seq=seq, type=etype, execution_id=ex.execution.execution_id, timestamp=ts,
                      node_id=node_id, payload_json=jsonutil.dumps(body))
        async with ex.changed:
            ex.events.append(ev)
            ex.execution.last_seq = seq
            ex.changed.notify_all()

    async def run(self, ex: FakeExecution) -> None:
        """Walk the nodes in order; pause at approvals, fail at fail nodes."""
        e = ex.execution
        if not ex.events:
            e.status = ST.EXECUTION_STATUS_RUNNING
            e.started_at.CopyFrom(now_ts())
            await self.append(ex, "execution:started")
        outputs: dict[str, Any] = jsonutil.loads(e.outputs_json) or {}
        nodes = list(ex.definition.nodes)
        while ex.position < len(nodes):
            node = nodes[ex.position]
            config = json_format.MessageToDict(node.config)
            if node.type == "approval" and ex.resume_input is None:
                await self.append(ex, "node:started", node.id, nodeType="approval")
                e.status = ST.EXECUTION_STATUS_PAUSED
                e.paused_nodes.add(node_id=node.id, reason=config.get("reason", ""),
                                   input_schema_json=jsonutil.dumps(config.get("inputSchema")))
                await self.append(ex, "execution:paused")
                return
            started = now_ts()
            if node.type != "approval":
                await self.append(ex, "node:started", node.id, nodeType=node.type)
                await asyncio.sleep(float(config.get("delayS", self.node_delay_s)))
            if node.type == "fail":
                err = ST.ExecutionError(message=config.get("message", "failed"),
                                        code=config.get("code", "FAILED"), node_id=node.id)
                await self.append(ex, "node:error", node.id, error={"message": err.message,
                                                                    "code": err.code, "nodeId": node.id})
                ex.logs.append(ST.NodeLog(node_id=node.id, node_type=node.type, attempt=1,
                                          status=ST.NODE_STATUS_FAILED, error=err,
                                          started_at=started, finished_at=now_ts()))
                e.status = ST.EXECUTION_STATUS_FAILED
                e.error.CopyFrom(err)
                e.finished_at.CopyFrom(now_ts())
                await self.append(ex, "execution:failed", error={"message": err.message,
                                                                 "code": err.code, "nodeId": node.id})
                return
            output: Any = ex.resume_input if node.type == "approval" else config.get("value", node.id)
            ex.resume_input = None
            if node.type == "output":
                outputs[node.id] = output
            finished = now_ts()
            ex.logs.append(ST.NodeLog(
                node_id=node.id, node_type=node.type, attempt=1, status=ST.NODE_STATUS_SUCCEEDED,
                input_json="{}", output_json=jsonutil.dumps(output), started_at=started,
                finished_at=finished,
                duration_us=(finished.ToNanoseconds() - started.ToNanoseconds()) // 1000))
            await self.append(ex, "node:completed", node.id, nodeType=node.type, output=output)
            ex.position += 1
        e.status = ST.EXECUTION_STATUS_SUCCEEDED
        e.outputs_json = jsonutil.dumps(outputs)
        e.finished_at.CopyFrom(now_ts())
        await self.append(ex, "execution:completed", output=outputs)


class FakeDagBuilder(dag_builder_pb2_grpc.DagBuilderServiceServicer):
    async def ValidateWorkflow(self, request: Any, context: Any) -> Any:
        diags = diagnostics_of(request.workflow)
        return dag_builder_pb2.ValidateWorkflowResponse(valid=not diags, diagnostics=diags)

    async def CompileWorkflow(self, request: Any, context: Any) -> Any:
        diags = diagnostics_of(request.workflow)
        if diags:
            raise InvalidArgument("invalid workflow", details=diagnostics_details(diags))
        return dag_builder_pb2.CompileWorkflowResponse(
            valid=True, dag=ST.CompiledDag(workflow_id=request.workflow.id, start_node="start"))


class FakeState(state_pb2_grpc.StateServiceServicer):
    def __init__(self, world: FakeWorld) -> None:
        self.world = world

    async def RegisterWorkflow(self, request: Any, context: Any) -> Any:
        versions = self.world.workflows.setdefault(request.definition.id, [])
        wv = state_pb2.WorkflowVersion(workflow_id=request.definition.id, version=len(versions) + 1,
                                       definition=request.definition, dag=request.dag,
                                       owner=request.owner, created_at=now_ts())
        versions.append(wv)
        return state_pb2.RegisterWorkflowResponse(workflow_id=wv.workflow_id, version=wv.version)

    def _versions(self, workflow_id: str, owner: str) -> list[state_pb2.WorkflowVersion]:
        versions = [v for v in self.world.workflows.get(workflow_id, []) if not owner or v.owner == owner]
        if not versions:
            raise NotFound(f"workflow {workflow_id} not found")
        return versions

    async def GetWorkflow(self, request: Any, context: Any) -> Any:
        versions = self._versions(request.workflow_id, request.owner)
        if request.version:
            match = [v for v in versions if v.version == request.version]
            if not match:
                raise NotFound(f"workflow {request.workflow_id} has no version {request.version}")
            return state_pb2.GetWorkflowResponse(workflow=match[0])
        return state_pb2.GetWorkflowResponse(workflow=versions[-1])

    async def ListWorkflows(self, request: Any, context: Any) -> Any:
        out = []
        for wid in self.world.workflows:
            versions = [v for v in self.world.workflows[wid] if not request.owner or v.owner == request.owner]
            if versions:
                out.append(versions[-1])
        return state_pb2.ListWorkflowsResponse(workflows=out)

    async def GetExecution(self, request: Any, context: Any) -> Any:
        ex = self.world.visible(request.execution_id, request.owner)
        return state_pb2.GetExecutionResponse(execution=ex.execution)

    async def ListExecutions(self, request: Any, context: Any) -> Any:
        out = [x.execution for x in self.world.executions.values()
               if (not request.owner or x.execution.owner == request.owner)
               and (not request.workflow_id or x.execution.workflow_id == request.workflow_id)]
        return state_pb2.ListExecutionsResponse(executions=out[: request.limit or None])

    async def ListNodeLogs(self, request: Any, context: Any) -> Any:
        ex = self.world.visible(request.execution_id, request.owner)
        return state_pb2.ListNodeLogsResponse(nodes=ex.logs)

    async def StreamEvents(self, request: Any, context: Any) -> Any:
        ex = self.world.visible(request.execution_id, request.owner)
        self.world.open_streams += 1
        self.world.stream_calls += 1
        try:
            seq = request.after_seq
            while True:
                async with ex.changed:
                    await ex.changed.wait_for(partial(ex.has_events_after, seq))
                    batch = ex.events[seq:]
                for ev in batch:
                    yield state_pb2.StreamEventsResponse(event=ev)
                    seq = ev.seq
                    if ev.type in TERMINAL:
                        return
        finally:
            self.world.open_streams -= 1


class FakeExecutor(executor_pb2_grpc.ExecutorServiceServicer):
    def __init__(self, world: FakeWorld) -> None:
        self.world = world

    async def StartExecution(self, request: Any, context: Any) -> Any:
        w = self.world
        if request.idempotency_key and (request.owner, request.idempotency_key) in w.idempotency:
            return executor_pb2.StartExecutionResponse(
                execution_id=w.idempotency[(request.owner, request.idempotency_key)], existing=True)
        if request.HasField("workflow"):
            definition = request.workflow
            diags = diagnostics_of(definition)
            if diags:
                raise InvalidArgument("invalid workflow", details=diagnostics_details(diags))
        else:
            versions = [v for v in w.workflows.get(request.workflow_id, [])
                        if not request.owner or v.owner == request.owner]
            if not versions:
                raise NotFound(f"workflow {request.workflow_id} not found")
            definition = versions[-1].definition
        eid = uuid.uuid4().hex
        execution = ST.Execution(execution_id=eid, workflow_id=definition.id, owner=request.owner,
                                 status=ST.EXECUTION_STATUS_PENDING, input_json=request.input_json,
                                 created_at=now_ts())
        ex = FakeExecution(execution=execution, definition=definition)
        w.executions[eid] = ex
        if request.idempotency_key:
            w.idempotency[(request.owner, request.idempotency_key)] = eid
        ex.task = asyncio.create_task(w.run(ex))
        return executor_pb2.StartExecutionResponse(execution_id=eid)

    async def ResumeExecution(self, request: Any, context: Any) -> Any:
        ex = self.world.visible(request.execution_id, "")
        paused = [p for p in ex.execution.paused_nodes if p.node_id == request.node_id]
        if ex.execution.status != ST.EXECUTION_STATUS_PAUSED or not paused:
            raise FailedPrecondition(f"execution is not paused at node {request.node_id}")
        schema = jsonutil.loads(paused[0].input_schema_json) or {}
        value = jsonutil.loads(request.input_json)
        missing = [k for k in schema.get("required", []) if not isinstance(value, dict) or k not in value]
        if missing:
            raise InvalidArgument(f"resume input for {request.node_id}: missing {missing}")
        del ex.execution.paused_nodes[:]
        ex.execution.status = ST.EXECUTION_STATUS_RUNNING
        ex.resume_input = value
        await self.world.append(ex, "execution:resumed")
        ex.task = asyncio.create_task(self.world.run(ex))
        return executor_pb2.ResumeExecutionResponse()

    async def CancelExecution(self, request: Any, context: Any) -> Any:
        ex = self.world.visible(request.execution_id, "")
        if ex.task and not ex.task.done():
            ex.task.cancel()
        if ex.execution.status not in (ST.EXECUTION_STATUS_SUCCEEDED, ST.EXECUTION_STATUS_FAILED,
                                       ST.EXECUTION_STATUS_CANCELLED):
            ex.execution.status = ST.EXECUTION_STATUS_CANCELLED
            ex.execution.finished_at.CopyFrom(now_ts())
            await self.world.append(ex, "execution:cancelled")
        return executor_pb2.CancelExecutionResponse()


@dataclass
class FakeStack:
    world: FakeWorld
    servers: dict[str, GrpcServer]
    addrs: dict[str, str]

    async def stop(self) -> None:
        for s in self.servers.values():
            await s.stop(0)

    async def restart_state(self) -> None:
        """Stop the state service (open streams fail UNAVAILABLE) and serve it again on the
        same address, over the same data."""
        await self.servers["state_addr"].stop(0)
        server = GrpcServer(
            settings=CommonSettings(), service_names=["weft.state.v1.StateService"],
            register=lambda s: state_pb2_grpc.add_StateServiceServicer_to_server(FakeState(self.world), s))
        await server.start(self.addrs["state_addr"])
        self.servers["state_addr"] = server


async def start_fakes(node_delay_s: float = 0.01) -> FakeStack:
    world = FakeWorld(node_delay_s)
    settings = CommonSettings()
    specs = {
        "dag_builder_addr": ("weft.dagbuilder.v1.DagBuilderService",
                             lambda s: dag_builder_pb2_grpc.add_DagBuilderServiceServicer_to_server(FakeDagBuilder(), s)),
        "state_addr": ("weft.state.v1.StateService",
                       lambda s: state_pb2_grpc.add_StateServiceServicer_to_server(FakeState(world), s)),
        "executor_addr": ("weft.executor.v1.ExecutorService",
                          lambda s: executor_pb2_grpc.add_ExecutorServiceServicer_to_server(FakeExecutor(world), s)),
    }
    servers, addrs = {}, {}
    for key, (name, register) in specs.items():
        server = GrpcServer(settings=settings, service_names=[name], register=register)
        port = await server.start("127.0.0.1:0")
        servers[key] = server
        addrs[key] = f"127.0.0.1:{port}"
    return FakeStack(world=world, servers=servers, addrs=addrs)


def wait_until(predicate: Any, timeout: float = 5.0) -> Any:
    async def _wait() -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.01)

    return _wait()

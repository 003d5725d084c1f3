"""The state service through its gRPC stubs: health, every RPC, and status codes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers.db import (
    PG_ADMIN_DSN,
    Backend,
    create_postgres_database,
    drop_postgres_database,
    postgres_url,
)
from state_support import APPROVAL_SCHEMA, state_settings

from weft.state.v1 import state_pb2, state_pb2_grpc
from weft.workflow.v1 import workflow_pb2
from weft_common import jsonutil
from weft_state.server import RunningStateService, serve

WF = workflow_pb2
S = state_pb2


@pytest.fixture
async def stub(service: RunningStateService) -> AsyncIterator[state_pb2_grpc.StateServiceStub]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    try:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service="weft.state.v1.StateService"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        yield state_pb2_grpc.StateServiceStub(channel)
    finally:
        await channel.close()


def definition(workflow_id: str) -> WF.WorkflowDefinition:
    return json_format.ParseDict(
        {"id": workflow_id, "nodes": [{"id": "start", "type": "start"},
                                      {"id": "approve", "type": "approval", "config": {"reason": "ok?"}}],
         "edges": [{"source": "start", "target": "approve"}]},
        WF.WorkflowDefinition(),
    )


def dag(workflow_id: str, marker: str) -> WF.CompiledDag:
    return WF.CompiledDag(workflow_id=workflow_id, start_node="start", definition_hash=marker,
                          nodes=[WF.CompiledNode(id="start", type="start")])


def draft(etype: str, node: str = "", **payload: object) -> S.EventDraft:
    return S.EventDraft(type=etype, node_id=node, payload_json=jsonutil.dumps(payload) if payload else "")


async def codes(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value.code()


async def test_a_paused_execution_end_to_end(stub: state_pb2_grpc.StateServiceStub, backend: Backend) -> None:
    wid = f"grpc_{backend.name}_{id(stub)}"
    reg = await stub.RegisterWorkflow(S.RegisterWorkflowRequest(definition=definition(wid), dag=dag(wid, "v1"), owner="o"))
    assert (reg.workflow_id, reg.version) == (wid, 1)
    got = await stub.GetWorkflow(S.GetWorkflowRequest(workflow_id=wid, owner="o"))
    assert got.workflow.definition == definition(wid) and got.workflow.dag == dag(wid, "v1")
    assert await codes(stub.GetWorkflow(S.GetWorkflowRequest(workflow_id=wid, owner="other"))) == grpc.StatusCode.NOT_FOUND

    created = await stub.CreateExecution(S.CreateExecutionRequest(
        workflow_id=wid, input_json='{"orderId": 7}', owner="o", claim_worker_id="w1", lease_ms=30_000,
        idempotency_key="k1"))
    eid, lease = created.execution_id, created.lease
    assert not created.existing and lease.token and lease.worker_id == "w1"
    again = await stub.CreateExecution(S.CreateExecutionRequest(workflow_id=wid, owner="o", idempotency_key="k1"))
    assert again.existing and again.execution_id == eid and not again.HasField("lease")

    stream = stub.StreamEvents(S.StreamEventsRequest(execution_id=eid, owner="o"))
    loaded = await stub.LoadExecution(S.LoadExecutionRequest(lease=lease))
    assert loaded.dag == dag(wid, "v1") and loaded.version == 0

    c1 = await stub.CommitStep(S.CommitStepRequest(
        lease=lease, expected_version=0,
        events=[draft("execution:started"), draft("node:started", "start", nodeType="start"),
                draft("node:completed", "start", nodeType="start", output={"orderId": 7})],
        steps=[S.StepRecord(key="start", node_id="start", status=WF.NODE_STATUS_SUCCEEDED,
                            output_json='{"orderId": 7}', fired_handles=["out"])],
        node_logs=[WF.NodeLog(node_id="start", node_type="start", status=WF.NODE_STATUS_SUCCEEDED,
                              output_json='{"orderId": 7}', attempt=1)],
        control=S.ControlState(status=WF.EXECUTION_STATUS_RUNNING)))
    assert (c1.version, c1.last_seq) == (1, 3)
    assert await codes(stub.CommitStep(S.CommitStepRequest(
        lease=lease, expected_version=0, events=[draft("node:started", "x")]))) == grpc.StatusCode.ABORTED

    c2 = await stub.CommitStep(S.CommitStepRequest(
        lease=lease, expected_version=1,
        events=[draft("node:started", "approve", nodeType="approval"), draft("execution:paused")],
        node_logs=[WF.NodeLog(node_id="approve", node_type="approval", status=WF.NODE_STATUS_PAUSED)],
        control=S.ControlState(
            status=WF.EXECUTION_STATUS_PAUSED, release_lease=True,
            paused_nodes=[WF.PausedNode(node_id="approve", reason="ok?", input_schema_json=APPROVAL_SCHEMA)])))
    assert c2.last_seq == 5

    ex = (await stub.GetExecution(S.GetExecutionRequest(execution_id=eid, owner="o"))).execution
    assert ex.status == WF.EXECUTION_STATUS_PAUSED and ex.workflow_version == 1 and ex.last_seq == 5
    assert [p.node_id for p in ex.paused_nodes] == ["approve"] and ex.HasField("started_at")
    logs = (await stub.ListNodeLogs(S.ListNodeLogsRequest(execution_id=eid))).nodes
    assert [(n.node_id, n.status) for n in logs] == [("start", WF.NODE_STATUS_SUCCEEDED), ("approve", WF.NODE_STATUS_PAUSED)]

    bad = stub.EnqueueResume(S.EnqueueResumeRequest(execution_id=eid, node_id="approve", input_json='{"approved": 1}'))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await bad
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "is not of type 'boolean'" in info.value.details()
    assert await codes(stub.EnqueueResume(S.EnqueueResumeRequest(execution_id="nope", node_id="approve"))) == grpc.StatusCode.NOT_FOUND
    resume = await stub.EnqueueResume(S.EnqueueResumeRequest(execution_id=eid, node_id="approve", input_json='{"approved": true}'))
    assert await codes(stub.EnqueueResume(S.EnqueueResumeRequest(
        execution_id=eid, node_id="approve", input_json='{"approved": true}'))) == grpc.StatusCode.FAILED_PRECONDITION

    # A worker claims it because of the queued resume, and applies it.
    claimed: list[S.Lease] = []
    for _ in range(50):
        claimed = [x for x in (await stub.ClaimExecutions(S.ClaimExecutionsRequest(
            worker_id="w2", max=100, lease_ms=30_000, wait_ms=200))).leases if x.execution_id == eid]
        if claimed:
            break
    lease2 = claimed[0]
    loaded = await stub.LoadExecution(S.LoadExecutionRequest(lease=lease2))
    assert [r.resume_id for r in loaded.resumes] == [resume.resume_id] and loaded.version == 2
    assert [s.key for s in loaded.steps] == ["start"] and loaded.steps[0].fired_handles == ["out"]
    renew = await stub.RenewLeases(S.RenewLeasesRequest(worker_id="w2", leases=[lease2], lease_ms=30_000))
    assert list(renew.lost_execution_ids) == [] and list(renew.resumed_execution_ids) == [eid]
    renew = await stub.RenewLeases(S.RenewLeasesRequest(worker_id="w1", leases=[lease], lease_ms=30_000))
    assert list(renew.lost_execution_ids) == [eid]
    await stub.CommitStep(S.CommitStepRequest(
        lease=lease2, expected_version=2,
        events=[draft("execution:resumed"), draft("node:completed", "approve", output={"approved": True}),
                draft("execution:completed")],
        steps=[S.StepRecord(key="approve", node_id="approve", status=WF.NODE_STATUS_SUCCEEDED, output_json='{"approved": true}')],
        control=S.ControlState(status=WF.EXECUTION_STATUS_SUCCEEDED, outputs_json='{"ok": true}',
                               applied_resume_ids=[resume.resume_id],
                               token_usage=WF.TokenUsage(input_tokens=5, output_tokens=6))))

    events = [r.event async for r in stream]
    assert [e.seq for e in events] == list(range(1, 9))
    assert events[-1].type == "execution:completed" and events[2].node_id == "start"
    assert jsonutil.loads(events[2].payload_json)["output"] == {"orderId": 7}
    assert events[0].timestamp.seconds > 0 and events[0].execution_id == eid
    ex = (await stub.GetExecution(S.GetExecutionRequest(execution_id=eid))).execution
    assert ex.status == WF.EXECUTION_STATUS_SUCCEEDED and jsonutil.loads(ex.outputs_json) == {"ok": True}
    assert (ex.token_usage.input_tokens, ex.token_usage.output_tokens) == (5, 6) and ex.HasField("finished_at")
    listed = await stub.ListExecutions(S.ListExecutionsRequest(owner="o", workflow_id=wid))
    assert [e.execution_id for e in listed.executions] == [eid]
    assert await codes(stub.ListNodeLogs(S.ListNodeLogsRequest(execution_id=eid, owner="x"))) == grpc.StatusCode.NOT_FOUND


async def test_stream_unknown_execution_is_not_found(stub: state_pb2_grpc.StateServiceStub) -> None:
    stream = stub.StreamEvents(S.StreamEventsRequest(execution_id="nope"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stream:
            pass
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_inline_definition_and_cancel(stub: state_pb2_grpc.StateServiceStub) -> None:
    created = await stub.CreateExecution(S.CreateExecutionRequest(
        definition=definition("inline"), dag=dag("inline", "x"), input_json="{}"))
    assert not created.HasField("lease")
    stream = stub.StreamEvents(S.StreamEventsRequest(execution_id=created.execution_id))
    reply = await stub.RequestCancel(S.RequestCancelRequest(execution_id=created.execution_id, reason="r"))
    assert reply.status == WF.EXECUTION_STATUS_CANCELLED
    events = await asyncio.wait_for(_collect(stream), 10)
    assert [e.type for e in events] == ["execution:cancelled"]
    ex = (await stub.GetExecution(S.GetExecutionRequest(execution_id=created.execution_id))).execution
    assert ex.workflow_id == "inline" and ex.workflow_version == 0 and ex.error.code == "CANCELLED"


async def _read_all(call: Any) -> list[WF.Event]:
    out = []
    while (reply := await call.read()) is not grpc.aio.EOF:
        out.append(reply.event)
    return out


async def _collect(stream: object) -> list[WF.Event]:
    return [r.event async for r in stream]  # type: ignore[attr-defined]


async def test_lost_database_connections_are_unavailable_then_recover(postgres_backend: Backend) -> None:
    """PostgreSQL drops every connection (as in a restart): calls fail UNAVAILABLE (retryable),
    never INTERNAL, and the service recovers on its own."""
    name = await create_postgres_database()
    backend = dataclasses.replace(postgres_backend, database_url=postgres_url(name))
    service = await serve(state_settings(backend, port=0))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    try:
        stub = state_pb2_grpc.StateServiceStub(channel)
        created = await stub.CreateExecution(S.CreateExecutionRequest(
            definition=definition("pgdrop"), dag=dag("pgdrop", "x"), claim_worker_id="w"))
        version = 0
        for round_ in range(3):
            admin = await asyncpg.connect(PG_ADMIN_DSN)
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
            await admin.close()
            seen: list[grpc.StatusCode] = []
            for _ in range(20):  # what a worker does: retry UNAVAILABLE
                try:
                    reply = await stub.CommitStep(S.CommitStepRequest(
                        lease=created.lease, expected_version=version,
                        events=[draft("node:completed", f"n{round_}")]))
                    version = reply.version
                    break
                except grpc.aio.AioRpcError as exc:
                    seen.append(exc.code())
                    await asyncio.sleep(0.05)
            assert set(seen) <= {grpc.StatusCode.UNAVAILABLE}, seen
            ex = (await stub.GetExecution(S.GetExecutionRequest(execution_id=created.execution_id))).execution
            assert ex.last_seq == round_ + 1
    finally:
        await channel.close()
        await service.stop()
        await drop_postgres_database(name)


async def test_many_subscribers_and_clients_that_go_away(
    stub: state_pb2_grpc.StateServiceStub, service: RunningStateService
) -> None:
    """Several streams of one execution through gRPC each get every event; streams whose clients
    disconnect mid-way release their subscription."""
    created = await stub.CreateExecution(S.CreateExecutionRequest(
        definition=definition("subs"), dag=dag("subs", "x"), claim_worker_id="w", lease_ms=30_000))
    lease = created.lease
    eid = created.execution_id
    await stub.CommitStep(S.CommitStepRequest(lease=lease, expected_version=0, events=[draft("execution:started")]))
    full = [stub.StreamEvents(S.StreamEventsRequest(execution_id=eid)) for _ in range(5)]
    quitters = [stub.StreamEvents(S.StreamEventsRequest(execution_id=eid)) for _ in range(5)]
    for call in full + quitters:  # every stream has replayed and is tailing
        assert (await call.read()).event.seq == 1
    for call in quitters:
        call.cancel()
    subs = service.bus._subs  # type: ignore[attr-defined]
    for _ in range(100):  # the cancelled calls' servicer tasks end and unsubscribe
        if len(subs.get(eid, ())) == len(full):
            break
        await asyncio.sleep(0.05)
    assert len(subs.get(eid, ())) == len(full)
    for i in range(10):
        await stub.CommitStep(S.CommitStepRequest(
            lease=lease, expected_version=i + 1, events=[draft("node:completed", f"n{i}")]))
    await stub.CommitStep(S.CommitStepRequest(
        lease=lease, expected_version=11, events=[draft("execution:completed")],
        control=S.ControlState(status=WF.EXECUTION_STATUS_SUCCEEDED)))
    results = await asyncio.wait_for(asyncio.gather(*(_read_all(c) for c in full)), 20)
    assert all([e.seq for e in r] == list(range(2, 13)) for r in results)
    assert eid not in subs

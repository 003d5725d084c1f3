"""CommitSteps (cross-execution group commit) and CreateExecution(load=True), through gRPC on
both backends: every item is applied as CommitStep would apply it and answered on its own."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from google.protobuf import json_format
from helpers.db import Backend
from state_support import APPROVAL_SCHEMA

from weft.state.v1 import state_pb2, state_pb2_grpc
from weft.workflow.v1 import workflow_pb2
from weft_common import jsonutil

WF = workflow_pb2
S = state_pb2
Stub = state_pb2_grpc.StateServiceStub


def definition(workflow_id: str) -> WF.WorkflowDefinition:
    return json_format.ParseDict(
        {
            "id": workflow_id,
            "nodes": [
                {"id": "start", "type": "start"},
                {"id": "approve", "type": "approval", "config": {"reason": "ok?"}},
            ],
            "edges": [{"source": "start", "target": "approve"}],
        },
        WF.WorkflowDefinition(),
    )


def dag(workflow_id: str) -> WF.CompiledDag:
    return WF.CompiledDag(
        workflow_id=workflow_id,
        start_node="start",
        nodes=[WF.CompiledNode(id="start", type="start")],
    )


def draft(etype: str, node: str = "", **payload: object) -> S.EventDraft:
    return S.EventDraft(
        type=etype, node_id=node, payload_json=jsonutil.dumps(payload) if payload else ""
    )


def step(node: str, output: str = "{}") -> S.StepRecord:
    return S.StepRecord(
        key=node,
        node_id=node,
        status=WF.NODE_STATUS_SUCCEEDED,
        output_json=output,
        fired_handles=["out"],
    )


async def setup(stub: Stub, name: str, n: int) -> tuple[str, list[S.Lease]]:
    await stub.RegisterWorkflow(
        S.RegisterWorkflowRequest(definition=definition(name), dag=dag(name))
    )
    leases = []
    for _ in range(n):
        created = await stub.CreateExecution(
            S.CreateExecutionRequest(workflow_id=name, claim_worker_id="w1", lease_ms=60_000)
        )
        leases.append(created.lease)
    return name, leases


async def seqs(stub: Stub, execution_id: str) -> list[int]:
    """The seqs of the execution's event log, up to its last_seq."""
    last = (
        await stub.GetExecution(S.GetExecutionRequest(execution_id=execution_id))
    ).execution.last_seq
    out: list[int] = []
    if not last:
        return out
    async for item in stub.StreamEvents(S.StreamEventsRequest(execution_id=execution_id)):
        out.append(item.event.seq)
        if item.event.seq >= last:
            break
    return out


async def test_each_item_is_answered_on_its_own(stub: Stub, backend: Backend) -> None:
    _, (a, b, c, d) = await setup(stub, f"group_{backend.name}_own", 4)
    reply = await stub.CommitSteps(
        S.CommitStepsRequest(
            commits=[
                S.CommitStepRequest(
                    lease=a,
                    expected_version=0,
                    events=[draft("execution:started"), draft("node:started", "start")],
                    control=S.ControlState(status=WF.EXECUTION_STATUS_RUNNING),
                ),
                # A stale writer: refused, and nothing of it written.
                S.CommitStepRequest(
                    lease=b, expected_version=5, events=[draft("execution:started")]
                ),
                S.CommitStepRequest(
                    lease=c,
                    expected_version=0,
                    steps=[step("start", '{"x": 1}')],
                    node_logs=[
                        WF.NodeLog(
                            node_id="start",
                            node_type="start",
                            status=WF.NODE_STATUS_SUCCEEDED,
                            attempt=1,
                        )
                    ],
                    events=[draft("node:completed", "start", output={"x": 1})],
                ),
                # Parks a node: the general path, in the same call.
                S.CommitStepRequest(
                    lease=d,
                    expected_version=0,
                    events=[draft("execution:paused")],
                    control=S.ControlState(
                        status=WF.EXECUTION_STATUS_PAUSED,
                        release_lease=True,
                        paused_nodes=[
                            WF.PausedNode(
                                node_id="approve", reason="ok?", input_schema_json=APPROVAL_SCHEMA
                            )
                        ],
                    ),
                ),
            ]
        )
    )
    ra, rb, rc, rd = reply.outcomes
    assert (ra.response.version, ra.response.last_seq) == (1, 2)
    assert not rb.HasField("response") and rb.code == grpc.StatusCode.ABORTED.value[0]
    assert "stale version 5" in rb.message
    assert json.loads(rb.details_json) == {"reason": "STALE_VERSION", "version": 0}
    assert (rc.response.version, rc.response.last_seq) == (1, 1)
    assert (rd.response.version, rd.response.last_seq) == (1, 1)

    get = stub.GetExecution
    assert (await get(S.GetExecutionRequest(execution_id=b.execution_id))).execution.last_seq == 0
    paused = (await get(S.GetExecutionRequest(execution_id=d.execution_id))).execution
    assert paused.status == WF.EXECUTION_STATUS_PAUSED
    assert [p.node_id for p in paused.paused_nodes] == ["approve"]
    loaded = await stub.LoadExecution(S.LoadExecutionRequest(lease=c))
    assert [(s.key, s.output_json) for s in loaded.steps] == [("start", '{"x": 1}')]
    assert loaded.version == 1
    logs = (await stub.ListNodeLogs(S.ListNodeLogsRequest(execution_id=c.execution_id))).nodes
    assert [(n.node_id, n.status) for n in logs] == [("start", WF.NODE_STATUS_SUCCEEDED)]

    # The next group continues each log where it stopped; the lease released by the pause is
    # gone, so that item is refused (LEASE_LOST) without failing the others.
    reply = await stub.CommitSteps(
        S.CommitStepsRequest(
            commits=[
                S.CommitStepRequest(
                    lease=c, expected_version=1, events=[draft("node:started", "n")] * 3
                ),
                S.CommitStepRequest(
                    lease=d, expected_version=1, events=[draft("node:started", "n")]
                ),
                S.CommitStepRequest(
                    lease=a,
                    expected_version=1,
                    events=[draft("execution:completed")],
                    control=S.ControlState(status=WF.EXECUTION_STATUS_SUCCEEDED, outputs_json="{}"),
                ),
            ]
        )
    )
    rc, rd, ra = reply.outcomes
    assert (rc.response.version, rc.response.last_seq) == (2, 4)
    assert rd.code == grpc.StatusCode.ABORTED.value[0]
    assert json.loads(rd.details_json)["reason"] == "LEASE_LOST"
    assert (ra.response.version, ra.response.last_seq) == (2, 3)
    assert await seqs(stub, a.execution_id) == [1, 2, 3]
    assert await seqs(stub, c.execution_id) == [1, 2, 3, 4]
    done = (await get(S.GetExecutionRequest(execution_id=a.execution_id))).execution
    assert done.status == WF.EXECUTION_STATUS_SUCCEEDED and done.HasField("finished_at")


async def test_a_malformed_item_fails_alone_and_one_execution_twice_is_refused(
    stub: Stub, backend: Backend
) -> None:
    _, (a, b) = await setup(stub, f"group_{backend.name}_bad", 2)
    reply = await stub.CommitSteps(
        S.CommitStepsRequest(
            commits=[
                S.CommitStepRequest(
                    lease=a, expected_version=0, events=[S.EventDraft(node_id="x")]
                ),
                S.CommitStepRequest(
                    lease=b, expected_version=0, events=[draft("execution:started")]
                ),
            ]
        )
    )
    bad, ok = reply.outcomes
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "without a type" in bad.message
    assert (ok.response.version, ok.response.last_seq) == (1, 1)
    # A payload that is not a JSON object is refused when the event is composed: that item only.
    reply = await stub.CommitSteps(
        S.CommitStepsRequest(
            commits=[
                S.CommitStepRequest(
                    lease=b, expected_version=1, events=[draft("node:started", "n")]
                ),
                S.CommitStepRequest(
                    lease=a,
                    expected_version=0,
                    events=[S.EventDraft(type="node:started", payload_json="[1]")],
                ),
            ]
        )
    )
    ok, bad = reply.outcomes
    assert (ok.response.version, ok.response.last_seq) == (2, 2)
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "JSON object" in bad.message

    twice = S.CommitStepRequest(lease=a, expected_version=0, events=[draft("execution:started")])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CommitSteps(S.CommitStepsRequest(commits=[twice, twice]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        await stub.GetExecution(S.GetExecutionRequest(execution_id=a.execution_id))
    ).execution.last_seq == 0


async def test_a_group_the_database_refuses_is_committed_item_by_item(
    stub: Stub, backend: Backend
) -> None:
    """PostgreSQL refuses text with a NUL character: that fails the whole group transaction, so
    the items are committed one by one and only the bad one fails (SQLite stores it)."""
    _, (a, b, c) = await setup(stub, f"group_{backend.name}_nul", 3)
    reply = await stub.CommitSteps(
        S.CommitStepsRequest(
            commits=[
                S.CommitStepRequest(
                    lease=a, expected_version=0, events=[draft("execution:started")]
                ),
                S.CommitStepRequest(lease=b, expected_version=0, steps=[step("start", '"a\x00b"')]),
                S.CommitStepRequest(
                    lease=c, expected_version=0, events=[draft("execution:started")] * 2
                ),
            ]
        )
    )
    ra, rb, rc = reply.outcomes
    assert (ra.response.version, ra.response.last_seq) == (1, 1)
    assert (rc.response.version, rc.response.last_seq) == (1, 2)
    if backend.name == "postgres":
        assert not rb.HasField("response") and rb.code == grpc.StatusCode.INTERNAL.value[0]
        loaded = await stub.LoadExecution(S.LoadExecutionRequest(lease=b))
        assert loaded.version == 0 and not loaded.steps
    else:
        assert rb.response.version == 1


async def test_concurrent_groups_keep_every_log_contiguous(stub: Stub, backend: Backend) -> None:
    """Overlapping CommitSteps calls (each execution in one of them at a time, in different
    orders) and plain CommitStep calls: versions and seqs advance without a gap or a refusal."""
    _, leases = await setup(stub, f"group_{backend.name}_many", 6)
    version = {lease.execution_id: 0 for lease in leases}

    async def group(members: list[S.Lease], n_events: int) -> None:
        items = [
            S.CommitStepRequest(
                lease=m,
                expected_version=version[m.execution_id],
                events=[draft("node:started", f"n{i}") for i in range(n_events)],
            )
            for m in members
        ]
        reply = await stub.CommitSteps(S.CommitStepsRequest(commits=items))
        for m, outcome in zip(members, reply.outcomes, strict=True):
            assert outcome.HasField("response"), outcome.message
            version[m.execution_id] = outcome.response.version

    async def single(lease: S.Lease) -> None:
        reply = await stub.CommitStep(
            S.CommitStepRequest(
                lease=lease,
                expected_version=version[lease.execution_id],
                events=[draft("node:started", "s")],
            )
        )
        version[lease.execution_id] = reply.version

    commits = {lease.execution_id: 0 for lease in leases}
    events = dict(commits)
    for round_ in range(8):
        first, second = leases[:3], leases[3:]
        if round_ % 2:
            first, second = first[::-1], second[::-1]
        await asyncio.gather(group(first, round_ % 3 + 1), group(second, 2))
        for m in first:
            commits[m.execution_id] += 1
            events[m.execution_id] += round_ % 3 + 1
        for m in second:
            commits[m.execution_id] += 1
            events[m.execution_id] += 2
        lone = leases[round_ % 6]
        await single(lone)
        commits[lone.execution_id] += 1
        events[lone.execution_id] += 1
    for lease in leases:
        assert version[lease.execution_id] == commits[lease.execution_id]
        assert await seqs(stub, lease.execution_id) == list(
            range(1, events[lease.execution_id] + 1)
        )


async def test_create_can_answer_the_load(stub: Stub, backend: Backend) -> None:
    name = f"group_{backend.name}_load"
    await stub.RegisterWorkflow(
        S.RegisterWorkflowRequest(definition=definition(name), dag=dag(name))
    )
    created = await stub.CreateExecution(
        S.CreateExecutionRequest(
            workflow_id=name,
            input_json='{"k": 1}',
            claim_worker_id="w1",
            lease_ms=60_000,
            load=True,
        )
    )
    assert created.HasField("loaded")
    loaded = await stub.LoadExecution(S.LoadExecutionRequest(lease=created.lease))
    assert created.loaded == loaded
    assert loaded.execution.execution_id == created.execution_id and loaded.version == 0
    assert loaded.dag == dag(name) and loaded.execution.input_json == '{"k": 1}'
    # Without a lease (no claim) or without asking, nothing is loaded.
    plain = await stub.CreateExecution(S.CreateExecutionRequest(workflow_id=name, load=True))
    assert not plain.HasField("loaded") and not plain.HasField("lease")
    leased = await stub.CreateExecution(
        S.CreateExecutionRequest(workflow_id=name, claim_worker_id="w1")
    )
    assert not leased.HasField("loaded")

"""ExecutorService end to end, through gRPC, on the real state service (PostgreSQL + Redis and
SQLite) and the real dag-builder: start, events, pause/resume, cancel, idempotency, versions."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from executor_support import Stack, check_log, outputs

from weft.executor.v1 import executor_pb2
from weft_common import jsonutil
from weft_common.errors import DETAILS_KEY

LINEAR = {
    "id": "linear",
    "nodes": [
        {"id": "start", "type": "start"},
        {"id": "double", "type": "transform", "config": {"expression": "input.x * 2"}},
        {"id": "label", "type": "transform", "config": {"expression": "'x2=' & $string(double)"}},
        {"id": "out", "type": "output", "config": {"value": "{{label}}", "name": "result"}},
    ],
    "edges": [
        {"source": "start", "target": "double"},
        {"source": "double", "target": "label"},
        {"source": "label", "target": "out"},
    ],
}


def approval_workflow(workflow_id: str = "approval", marker: str = "approved") -> dict[str, Any]:
    """Acceptance case 14's workflow (with a marker in the output to tell versions apart)."""
    return {
        "id": workflow_id,
        "nodes": [
            {"id": "start", "type": "start"},
            {
                "id": "approve",
                "type": "approval",
                "config": {
                    "reason": "ok to ship?",
                    "inputSchema": {
                        "type": "object",
                        "required": ["approved"],
                        "properties": {"approved": {"type": "boolean"}},
                    },
                },
            },
            {
                "id": "gate",
                "type": "condition",
                "config": {"branches": [{"id": "yes", "when": "approve.approved = true"}, {"id": "else"}]},
            },
            {"id": "shipped", "type": "output", "config": {"value": marker + " by {{approve.by}}", "name": "decision"}},
            {"id": "held", "type": "output", "config": {"value": "rejected", "name": "decision_no"}},
        ],
        "edges": [
            {"source": "start", "target": "approve"},
            {"source": "approve", "target": "gate"},
            {"source": "gate", "target": "shipped", "sourceHandle": "condition:yes"},
            {"source": "gate", "target": "held", "sourceHandle": "condition:else"},
        ],
    }


WAIT_LONG = {
    "id": "slow",
    "nodes": [
        {"id": "start", "type": "start"},
        {"id": "nap", "type": "wait", "config": {"durationMs": 20000}},
        {"id": "out", "type": "output", "config": {"value": "woke"}},
    ],
    "edges": [{"source": "start", "target": "nap"}, {"source": "nap", "target": "out"}],
}


async def resume(stack: Stack, execution_id: str, node_id: str, value: Any, via: int = 0) -> None:
    await stack.executor_stubs[via].ResumeExecution(
        executor_pb2.ResumeExecutionRequest(
            execution_id=execution_id, node_id=node_id, input_json=jsonutil.dumps(value)
        )
    )


async def test_start_runs_and_commits_every_event(stack: Stack) -> None:
    started = await stack.start(LINEAR, {"x": 21})
    execution = await stack.wait_status(started.execution_id, "SUCCEEDED", "FAILED")
    assert outputs(execution) == {"result": "x2=42"}
    events = await stack.events(started.execution_id)
    check_log(events)
    assert [e["type"] for e in events] == [
        "execution:started",
        *["node:started", "node:completed"] * 4,
        "execution:completed",
    ]
    assert [e["nodeId"] for e in events if e["type"] == "node:completed"] == [
        "start", "double", "label", "out",
    ]
    logs = await stack.node_logs(started.execution_id)
    assert sorted(log.node_id for log in logs) == ["double", "label", "out", "start"]
    # A replay from the middle returns exactly the tail.
    tail = await stack.events(started.execution_id, after_seq=4)
    assert tail == events[4:]


async def test_failed_execution_names_the_node(stack: Stack) -> None:
    workflow = {
        "id": "fails",
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "boom", "type": "fail", "config": {"message": "no way", "code": "NOPE"}},
        ],
        "edges": [{"source": "start", "target": "boom"}],
    }
    started = await stack.start(workflow, {})
    execution = await stack.wait_status(started.execution_id, "FAILED", "SUCCEEDED")
    assert execution.error.node_id == "boom"
    assert execution.error.code == "NOPE"
    events = await stack.events(started.execution_id)
    check_log(events)
    assert events[-1]["type"] == "execution:failed"


async def test_approval_pause_then_resume_finishes(stack: Stack) -> None:
    """Acceptance case 14, in-process through the ExecutorService."""
    started = await stack.start(approval_workflow(), {})
    paused = await stack.wait_status(started.execution_id, "PAUSED")
    assert [p.node_id for p in paused.paused_nodes] == ["approve"]
    assert paused.paused_nodes[0].reason == "ok to ship?"

    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await resume(stack, started.execution_id, "approve", {"approved": "yes"})
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    await resume(stack, started.execution_id, "approve", {"approved": True, "by": "ops"})
    done = await stack.wait_status(started.execution_id, "SUCCEEDED", "FAILED")
    assert outputs(done) == {"decision": "approved by ops"}

    events = await stack.events(started.execution_id)
    check_log(events)
    types = [e["type"] for e in events]
    assert types.index("execution:paused") < types.index("execution:resumed")
    # The approval node starts when it parks and completes once, when resumed.
    approve = [
        e["type"] for e in events if e.get("nodeId") == "approve" and e["type"].startswith("node:")
    ]
    assert approve == ["node:started", "node:completed"]

    with pytest.raises(grpc.aio.AioRpcError) as again:
        await resume(stack, started.execution_id, "approve", {"approved": True, "by": "x"})
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_cancel_stops_a_running_execution(stack: Stack) -> None:
    started = await stack.start(WAIT_LONG, {})
    # Wait until the wait node is running.
    deadline = time.monotonic() + 10
    while True:
        execution = await stack.execution(started.execution_id)
        if execution.last_seq >= 2:
            break
        assert time.monotonic() < deadline, "the wait node never started"
        await asyncio.sleep(0.05)
    t0 = time.monotonic()
    await stack.executor.CancelExecution(
        executor_pb2.CancelExecutionRequest(execution_id=started.execution_id, reason="test")
    )
    execution = await stack.wait_status(started.execution_id, "CANCELLED", "SUCCEEDED", within=5)
    assert time.monotonic() - t0 < 3, "cancellation was not prompt"
    assert execution.finished_at.seconds > 0
    events = await stack.events(started.execution_id)
    check_log(events)
    assert [e["type"] for e in events][-2:] == ["node:cancelled", "execution:cancelled"]


async def test_cancel_a_paused_execution(stack: Stack) -> None:
    started = await stack.start(approval_workflow(), {})
    await stack.wait_status(started.execution_id, "PAUSED")
    await stack.executor.CancelExecution(
        executor_pb2.CancelExecutionRequest(execution_id=started.execution_id)
    )
    await stack.wait_status(started.execution_id, "CANCELLED", within=5)
    events = await stack.events(started.execution_id)
    check_log(events)


async def test_idempotency_key_returns_the_existing_execution(stack: Stack) -> None:
    key = f"order-{time.monotonic_ns()}"
    first = await stack.start(LINEAR, {"x": 1}, idempotency_key=key, owner="alice")
    second = await stack.start(LINEAR, {"x": 1}, idempotency_key=key, owner="alice")
    assert not first.existing
    assert second.existing
    assert second.execution_id == first.execution_id
    other_owner = await stack.start(LINEAR, {"x": 1}, idempotency_key=key, owner="bob")
    assert not other_owner.existing
    assert other_owner.execution_id != first.execution_id
    await stack.wait_status(first.execution_id, "SUCCEEDED")
    # The log shows one run only.
    events = await stack.events(first.execution_id)
    check_log(events)


async def test_version_pinning_end_to_end(stack: Stack) -> None:
    workflow_id = f"pinned_{time.monotonic_ns()}"
    v1 = await stack.register(approval_workflow(workflow_id, marker="v1"))
    on_v1 = await stack.start(workflow_id=workflow_id, input={})
    await stack.wait_status(on_v1.execution_id, "PAUSED")

    v2 = await stack.register(approval_workflow(workflow_id, marker="v2"))
    assert v2 == v1 + 1
    on_v2 = await stack.start(workflow_id=workflow_id, input={})
    explicit_v1 = await stack.start(workflow_id=workflow_id, version=v1, input={})
    for execution_id in (on_v1.execution_id, on_v2.execution_id, explicit_v1.execution_id):
        await stack.wait_status(execution_id, "PAUSED")
        await resume(stack, execution_id, "approve", {"approved": True, "by": "ops"})

    decisions = {}
    for name, started in (("v1", on_v1), ("v2", on_v2), ("explicit_v1", explicit_v1)):
        done = await stack.wait_status(started.execution_id, "SUCCEEDED", "FAILED")
        decisions[name] = outputs(done)["decision"]
        assert done.workflow_version == (v2 if name == "v2" else v1)
    # The execution paused on v1 finished on v1 although v2 was registered meanwhile.
    assert decisions == {"v1": "v1 by ops", "v2": "v2 by ops", "explicit_v1": "v1 by ops"}


async def test_invalid_workflow_is_invalid_argument_with_diagnostics(stack: Stack) -> None:
    workflow = {
        "id": "cyclic",
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "a", "type": "transform", "config": {"expression": "1"}},
            {"id": "b", "type": "transform", "config": {"expression": "2"}},
        ],
        "edges": [
            {"source": "start", "target": "a"},
            {"source": "a", "target": "b"},
            {"source": "b", "target": "a"},
        ],
    }
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.start(workflow, {})
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = dict(err.value.trailing_metadata() or ())
    diagnostics = jsonutil.loads(details[DETAILS_KEY])["diagnostics"]
    assert diagnostics
    assert {"a", "b"} & {d.get("nodeId") for d in diagnostics}


async def test_unknown_workflow_is_not_found(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.start(workflow_id="does_not_exist", input={})
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_stream_follows_a_live_execution(stack: Stack) -> None:
    """A stream opened before the execution moves on sees every event as it is committed."""
    started = await stack.start(approval_workflow(), {})
    await stack.wait_status(started.execution_id, "PAUSED")
    live = asyncio.create_task(stack.events(started.execution_id))
    await asyncio.sleep(0.2)
    await resume(stack, started.execution_id, "approve", {"approved": False})
    events = await asyncio.wait_for(live, timeout=15)
    check_log(events)
    assert events[-1]["type"] == "execution:completed"
    assert events[-1]["outputs"] == {"decision_no": "rejected"}

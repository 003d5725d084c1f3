"""The ``subworkflow`` node through the real services (state + dag-builder + executor, on
PostgreSQL + Redis and on SQLite): a child execution with its own event log, linked to the
parent; its outputs, failures, cancellation, the depth limit and a pause inside it."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from executor_support import STATUS_NAMES, Stack, check_log, outputs

from weft.executor.v1 import executor_pb2
from weft.state.v1 import state_pb2
from weft.workflow.v1 import workflow_pb2
from weft_common import jsonutil


def _id(prefix: str) -> str:
    """Workflow ids unique per test: the stacks are shared by the whole session."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def child_double(workflow_id: str) -> dict[str, Any]:
    return {
        "id": workflow_id,
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "double", "type": "transform", "config": {"expression": "input.x * 2"}},
            {"id": "out", "type": "output", "config": {"name": "doubled", "value": "{{double}}"}},
        ],
        "edges": [{"source": "start", "target": "double"}, {"source": "double", "target": "out"}],
    }


def child_failing(workflow_id: str) -> dict[str, Any]:
    return {
        "id": workflow_id,
        "nodes": [
            {"id": "start", "type": "start"},
            {
                "id": "explode",
                "type": "fail",
                "config": {"message": "boom {{start.x}}", "code": "BAD_THING"},
            },
        ],
        "edges": [{"source": "start", "target": "explode"}],
    }


def child_waiting(workflow_id: str, ms: int) -> dict[str, Any]:
    return {
        "id": workflow_id,
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "nap", "type": "wait", "config": {"durationMs": ms}},
            {"id": "out", "type": "output", "config": {"value": "woke"}},
        ],
        "edges": [{"source": "start", "target": "nap"}, {"source": "nap", "target": "out"}],
    }


def child_approval(workflow_id: str) -> dict[str, Any]:
    return {
        "id": workflow_id,
        "nodes": [
            {"id": "start", "type": "start"},
            {
                "id": "approve",
                "type": "approval",
                "config": {
                    "reason": "ok?",
                    "inputSchema": {
                        "type": "object",
                        "required": ["ok"],
                        "properties": {"ok": {"type": "boolean"}},
                    },
                },
            },
            {
                "id": "out",
                "type": "output",
                "config": {"name": "verdict", "value": "{{approve.ok}}"},
            },
        ],
        "edges": [{"source": "start", "target": "approve"}, {"source": "approve", "target": "out"}],
    }


def parent_of(
    workflow_id: str, child_id: str, *, with_error_edge: bool = False, version: int = 0
) -> dict[str, Any]:
    config: dict[str, Any] = {"workflowId": child_id, "input": {"x": "{{start.n}}"}}
    if version:
        config["version"] = version
    nodes: list[dict[str, Any]] = [
        {"id": "start", "type": "start"},
        {"id": "sub", "type": "subworkflow", "config": config},
        {"id": "out", "type": "output", "config": {"name": "result", "value": "{{sub}}"}},
    ]
    edges: list[dict[str, Any]] = [
        {"source": "start", "target": "sub"},
        {"source": "sub", "target": "out"},
    ]
    if with_error_edge:
        nodes.append(
            {
                "id": "handled",
                "type": "output",
                "config": {"name": "handled", "value": "{{sub.error}}"},
            }
        )
        edges.append({"source": "sub", "target": "handled", "sourceHandle": "error"})
    return {"id": workflow_id, "nodes": nodes, "edges": edges}


async def children_of(stack: Stack, workflow_id: str) -> list[workflow_pb2.Execution]:
    response = await stack.state_stub.ListExecutions(
        state_pb2.ListExecutionsRequest(workflow_id=workflow_id, limit=100)
    )
    return list(response.executions)


async def one_child(stack: Stack, workflow_id: str, within: float = 10.0) -> workflow_pb2.Execution:
    deadline = time.monotonic() + within
    while True:
        found = await children_of(stack, workflow_id)
        if found:
            assert len(found) == 1, [e.execution_id for e in found]
            return found[0]
        assert time.monotonic() < deadline, f"no execution of {workflow_id} appeared"
        await asyncio.sleep(0.05)


def node_event(events: list[dict[str, Any]], type_: str, node_id: str) -> dict[str, Any]:
    matches = [e for e in events if e["type"] == type_ and e.get("nodeId") == node_id]
    assert len(matches) == 1, (type_, node_id, [e["type"] for e in events])
    return matches[0]


async def test_child_outputs_become_the_node_output(stack: Stack) -> None:
    child_wf, parent_wf = _id("double"), _id("parent")
    await stack.register(child_double(child_wf))
    await stack.register(parent_of(parent_wf, child_wf))
    started = await stack.start(workflow_id=parent_wf, input={"n": 21})
    parent = await stack.wait_status(started.execution_id, *("SUCCEEDED", "FAILED"))
    assert STATUS_NAMES[parent.status] == "SUCCEEDED", parent.error
    assert outputs(parent) == {"result": {"doubled": 42}}

    child = await one_child(stack, child_wf)
    assert child.parent_execution_id == started.execution_id
    assert STATUS_NAMES[child.status] == "SUCCEEDED"
    assert outputs(child) == {"doubled": 42}
    assert jsonutil.loads(child.input_json) == {"x": 21}

    parent_events = await stack.events(started.execution_id)
    child_events = await stack.events(child.execution_id)
    check_log(parent_events)
    check_log(child_events)
    completed = node_event(parent_events, "node:completed", "sub")
    assert completed["childExecutionId"] == child.execution_id
    assert completed["output"] == {"doubled": 42}
    # Two event logs: the child's events are its own, not interleaved into the parent's.
    assert {e["executionId"] for e in parent_events} == {started.execution_id}
    assert {e["executionId"] for e in child_events} == {child.execution_id}
    logs = {n.node_id: n for n in await stack.node_logs(started.execution_id)}
    assert jsonutil.loads(logs["sub"].input_json)["childExecutionId"] == child.execution_id


async def test_a_child_started_here_runs_without_a_load_round_trip(
    stack: Stack, monkeypatch: Any
) -> None:
    """The executor that starts a child claims it in the CreateExecution call and gets what
    LoadExecution would answer in the same reply: the child's first run loads nothing."""
    loads: list[str] = []
    for service in stack.executors:
        client = service.clients.state
        real = client.load

        async def load(lease: state_pb2.Lease, real: Any = real) -> Any:
            loads.append(lease.execution_id)
            return await real(lease)

        monkeypatch.setattr(client, "load", load)
    child_wf, parent_wf = _id("double"), _id("parent")
    await stack.register(child_double(child_wf))
    await stack.register(parent_of(parent_wf, child_wf))
    started = await stack.start(workflow_id=parent_wf, input={"n": 4})
    parent = await stack.wait_status(started.execution_id, *("SUCCEEDED", "FAILED"))
    assert outputs(parent) == {"result": {"doubled": 8}}
    child = await one_child(stack, child_wf)
    assert child.execution_id not in loads, "the child was loaded with a LoadExecution call"


async def test_pinned_version_runs_that_version(stack: Stack) -> None:
    child_wf, parent_wf = _id("versioned"), _id("parent")
    v1 = await stack.register(child_double(child_wf))
    later = child_double(child_wf)
    later["nodes"][1]["config"]["expression"] = "input.x * 3"
    await stack.register(later)
    await stack.register(parent_of(parent_wf, child_wf, version=v1))
    started = await stack.start(workflow_id=parent_wf, input={"n": 5})
    parent = await stack.wait_status(started.execution_id, "SUCCEEDED", "FAILED")
    assert outputs(parent) == {"result": {"doubled": 10}}
    child = await one_child(stack, child_wf)
    assert child.workflow_version == v1


async def test_child_failure_routes_into_the_error_edge(stack: Stack) -> None:
    child_wf, parent_wf = _id("failing"), _id("parent")
    await stack.register(child_failing(child_wf))
    await stack.register(parent_of(parent_wf, child_wf, with_error_edge=True))
    started = await stack.start(workflow_id=parent_wf, input={"n": 7})
    parent = await stack.wait_status(started.execution_id, "SUCCEEDED", "FAILED")
    assert STATUS_NAMES[parent.status] == "SUCCEEDED", parent.error
    child = await one_child(stack, child_wf)
    assert STATUS_NAMES[child.status] == "FAILED"

    handled = outputs(parent)["handled"]
    assert handled["code"] == "SUBWORKFLOW_FAILED"
    assert handled["nodeId"] == "sub"
    assert child.execution_id in handled["message"] and "'explode'" in handled["message"]
    assert "boom 7" in handled["message"]
    assert handled["details"]["childExecutionId"] == child.execution_id
    assert handled["details"]["error"]["code"] == "BAD_THING"
    assert handled["details"]["error"]["nodeId"] == "explode"

    parent_events = await stack.events(started.execution_id)
    check_log(parent_events)
    check_log(await stack.events(child.execution_id))
    error_event = node_event(parent_events, "node:error", "sub")
    assert error_event["error"]["details"]["childExecutionId"] == child.execution_id
    assert [e["nodeId"] for e in parent_events if e["type"] == "node:skipped"] == ["out"]


async def test_unrouted_child_failure_fails_the_parent(stack: Stack) -> None:
    child_wf, parent_wf = _id("failing"), _id("parent")
    await stack.register(child_failing(child_wf))
    await stack.register(parent_of(parent_wf, child_wf))
    started = await stack.start(workflow_id=parent_wf, input={"n": 1})
    parent = await stack.wait_status(started.execution_id, "SUCCEEDED", "FAILED")
    assert STATUS_NAMES[parent.status] == "FAILED"
    assert parent.error.code == "SUBWORKFLOW_FAILED"
    assert parent.error.node_id == "sub"


async def test_unknown_workflow_fails_the_node(stack: Stack) -> None:
    parent_wf = _id("parent")
    missing = _id("nowhere")
    await stack.register(parent_of(parent_wf, missing, with_error_edge=True))
    started = await stack.start(workflow_id=parent_wf, input={"n": 1})
    parent = await stack.wait_status(started.execution_id, "SUCCEEDED", "FAILED")
    handled = outputs(parent)["handled"]
    assert handled["code"] == "SUBWORKFLOW_NOT_FOUND"
    assert missing in handled["message"]
    check_log(await stack.events(started.execution_id))


async def test_cancelling_the_parent_cancels_its_running_child(stack: Stack) -> None:
    child_wf, parent_wf = _id("sleepy"), _id("parent")
    await stack.register(child_waiting(child_wf, 15_000))
    await stack.register(parent_of(parent_wf, child_wf))
    started = await stack.start(workflow_id=parent_wf, input={"n": 1})
    child = await one_child(stack, child_wf)
    await stack.wait_status(child.execution_id, "RUNNING")
    await stack.wait_status(started.execution_id, "RUNNING")
    await stack.executor.CancelExecution(
        executor_pb2.CancelExecutionRequest(execution_id=started.execution_id, reason="stop all")
    )
    await stack.wait_status(started.execution_id, "CANCELLED", within=5)
    await stack.wait_status(child.execution_id, "CANCELLED", within=5)
    check_log(await stack.events(started.execution_id))
    check_log(await stack.events(child.execution_id))


async def test_self_recursive_workflow_stops_at_the_depth_limit(stack: Stack) -> None:
    recur = _id("recur")
    await stack.register(
        {
            "id": recur,
            "nodes": [
                {"id": "start", "type": "start"},
                {
                    "id": "again",
                    "type": "subworkflow",
                    "config": {"workflowId": recur, "input": {"n": "{{start.n}}"}},
                },
            ],
            "edges": [{"source": "start", "target": "again"}],
        }
    )
    started = await stack.start(workflow_id=recur, input={"n": 0})
    top = await stack.wait_status(started.execution_id, "SUCCEEDED", "FAILED", within=60)
    assert STATUS_NAMES[top.status] == "FAILED"
    assert top.error.code == "SUBWORKFLOW_DEPTH"
    assert top.error.node_id == "again"
    limit = stack.executors[0].settings.max_subworkflow_depth
    executions = await children_of(stack, recur)
    # The top-level execution and one child per level down to the limit, and no more.
    assert len(executions) == limit + 1
    assert {STATUS_NAMES[e.status] for e in executions} == {"FAILED"}
    parents = {e.parent_execution_id for e in executions}
    [deepest] = [e for e in executions if e.execution_id not in parents]
    assert deepest.error.code == "SUBWORKFLOW_DEPTH"
    assert f"would nest sub-workflows {limit + 1} deep (limit {limit})" in deepest.error.message
    for execution in executions:
        check_log(await stack.events(execution.execution_id))


async def test_pause_inside_the_child_pauses_the_parent(stack: Stack) -> None:
    child_wf, parent_wf = _id("approving"), _id("parent")
    await stack.register(child_approval(child_wf))
    await stack.register(parent_of(parent_wf, child_wf))
    started = await stack.start(workflow_id=parent_wf, input={"n": 1})
    parent = await stack.wait_status(started.execution_id, "PAUSED", "FAILED", "SUCCEEDED")
    assert STATUS_NAMES[parent.status] == "PAUSED", parent.error
    child = await one_child(stack, child_wf)
    child = await stack.wait_status(child.execution_id, "PAUSED")
    [paused] = parent.paused_nodes
    assert paused.node_id == "sub"
    assert paused.reason == (
        f"waiting for child {child.execution_id}: resume node 'approve' of execution {child.execution_id}"
    )
    # The parked parent holds no worker and no lease while it waits.
    assert [n.node_id for n in child.paused_nodes] == ["approve"]

    await stack.executor.ResumeExecution(
        executor_pb2.ResumeExecutionRequest(
            execution_id=child.execution_id,
            node_id="approve",
            input_json=jsonutil.dumps({"ok": True}),
        )
    )
    child = await stack.wait_status(child.execution_id, "SUCCEEDED", "FAILED")
    assert outputs(child) == {"verdict": True}
    parent = await stack.wait_status(started.execution_id, "SUCCEEDED", "FAILED", within=15)
    assert STATUS_NAMES[parent.status] == "SUCCEEDED", parent.error
    assert outputs(parent) == {"result": {"verdict": True}}

    parent_events = await stack.events(started.execution_id)
    child_events = await stack.events(child.execution_id)
    check_log(parent_events)
    check_log(child_events)
    types = [e["type"] for e in parent_events]
    assert types.count("execution:paused") == 1 and types.count("execution:resumed") == 1
    assert (
        node_event(parent_events, "node:completed", "sub")["childExecutionId"] == child.execution_id
    )


async def test_cancelling_a_paused_parent_cancels_its_paused_child(stack: Stack) -> None:
    child_wf, parent_wf = _id("approving"), _id("parent")
    await stack.register(child_approval(child_wf))
    await stack.register(parent_of(parent_wf, child_wf))
    started = await stack.start(workflow_id=parent_wf, input={"n": 1})
    await stack.wait_status(started.execution_id, "PAUSED")
    child = await one_child(stack, child_wf)
    await stack.wait_status(child.execution_id, "PAUSED")
    await stack.executor.CancelExecution(
        executor_pb2.CancelExecutionRequest(execution_id=started.execution_id, reason="nope")
    )
    await stack.wait_status(started.execution_id, "CANCELLED", within=5)
    await stack.wait_status(child.execution_id, "CANCELLED", within=5)
    check_log(await stack.events(started.execution_id))
    check_log(await stack.events(child.execution_id))


async def test_cancelling_a_paused_child_fails_the_waiting_node(stack: Stack) -> None:
    child_wf, parent_wf = _id("approving"), _id("parent")
    await stack.register(child_approval(child_wf))
    await stack.register(parent_of(parent_wf, child_wf, with_error_edge=True))
    started = await stack.start(workflow_id=parent_wf, input={"n": 1})
    await stack.wait_status(started.execution_id, "PAUSED")
    child = await one_child(stack, child_wf)
    await stack.wait_status(child.execution_id, "PAUSED")
    await stack.executor.CancelExecution(
        executor_pb2.CancelExecutionRequest(execution_id=child.execution_id, reason="not needed")
    )
    parent = await stack.wait_status(started.execution_id, "SUCCEEDED", "FAILED", within=15)
    handled = outputs(parent)["handled"]
    assert handled["code"] == "SUBWORKFLOW_CANCELLED"
    assert handled["details"]["childExecutionId"] == child.execution_id
    check_log(await stack.events(started.execution_id))
    check_log(await stack.events(child.execution_id))


async def test_pause_two_levels_down_points_at_the_grandchild(stack: Stack) -> None:
    inner_wf, middle_wf, top_wf = _id("approving"), _id("middle"), _id("top")
    await stack.register(child_approval(inner_wf))
    middle = parent_of(middle_wf, inner_wf)
    middle["nodes"][1]["config"]["input"] = {"x": "{{start.x}}"}
    await stack.register(middle)
    await stack.register(parent_of(top_wf, middle_wf))
    started = await stack.start(workflow_id=top_wf, input={"n": 3})
    top = await stack.wait_status(started.execution_id, "PAUSED", "FAILED", "SUCCEEDED")
    assert STATUS_NAMES[top.status] == "PAUSED", top.error
    inner = await one_child(stack, inner_wf)
    mid = await one_child(stack, middle_wf)
    assert inner.parent_execution_id == mid.execution_id
    assert mid.parent_execution_id == started.execution_id
    # The user is told where to act: the innermost execution and node.
    assert top.paused_nodes[0].reason == (
        f"waiting for child {inner.execution_id}: resume node 'approve' of execution {inner.execution_id}"
    )
    await stack.executor.ResumeExecution(
        executor_pb2.ResumeExecutionRequest(
            execution_id=inner.execution_id,
            node_id="approve",
            input_json=jsonutil.dumps({"ok": False}),
        )
    )
    top = await stack.wait_status(started.execution_id, "SUCCEEDED", "FAILED", within=15)
    assert outputs(top) == {"result": {"result": {"verdict": False}}}
    for execution_id in (started.execution_id, mid.execution_id, inner.execution_id):
        check_log(await stack.events(execution_id))


async def test_children_in_parallel_branches_pause_and_resume_independently(stack: Stack) -> None:
    child_wf, parent_wf = _id("approving"), _id("fanout")
    await stack.register(child_approval(child_wf))
    await stack.register(
        {
            "id": parent_wf,
            "nodes": [
                {"id": "start", "type": "start"},
                {"id": "fan", "type": "parallel", "config": {"kind": "count", "count": 3}},
                {
                    "id": "sub",
                    "type": "subworkflow",
                    "parent": "fan",
                    "config": {"workflowId": child_wf, "input": {"x": "{{parallel.index}}"}},
                },
                {
                    "id": "out",
                    "type": "output",
                    "config": {"name": "all", "value": "{{fan.results}}"},
                },
            ],
            "edges": [{"source": "start", "target": "fan"}, {"source": "fan", "target": "out"}],
        }
    )
    started = await stack.start(workflow_id=parent_wf, input={})
    parent = await stack.wait_status(started.execution_id, "PAUSED", "FAILED", "SUCCEEDED")
    assert STATUS_NAMES[parent.status] == "PAUSED", parent.error
    assert sorted(p.scope[0].index for p in parent.paused_nodes) == [0, 1, 2]
    children = await children_of(stack, child_wf)
    assert len(children) == 3
    by_index = {jsonutil.loads(c.input_json)["x"]: c.execution_id for c in children}
    for index in (2, 0, 1):
        await stack.wait_status(by_index[index], "PAUSED")
        await stack.executor.ResumeExecution(
            executor_pb2.ResumeExecutionRequest(
                execution_id=by_index[index],
                node_id="approve",
                input_json=jsonutil.dumps({"ok": index != 1}),
            )
        )
    parent = await stack.wait_status(started.execution_id, "SUCCEEDED", "FAILED", within=20)
    assert outputs(parent) == {"all": [{"verdict": True}, {"verdict": False}, {"verdict": True}]}
    check_log(await stack.events(started.execution_id))
    for child_id in by_index.values():
        check_log(await stack.events(child_id))


async def test_retry_starts_a_new_child(stack: Stack) -> None:
    child_wf, parent_wf = _id("failing"), _id("parent")
    await stack.register(child_failing(child_wf))
    parent = parent_of(parent_wf, child_wf)
    parent["nodes"][1]["retry"] = {"maxAttempts": 2, "initialIntervalMs": 10}
    await stack.register(parent)
    started = await stack.start(workflow_id=parent_wf, input={"n": 1})
    done = await stack.wait_status(started.execution_id, "SUCCEEDED", "FAILED")
    assert done.error.code == "SUBWORKFLOW_FAILED"
    children = await children_of(stack, child_wf)
    assert len(children) == 2
    events = await stack.events(started.execution_id)
    check_log(events)
    [retrying] = [e for e in events if e["type"] == "node:retrying"]
    assert retrying["error"]["details"]["childExecutionId"] in {c.execution_id for c in children}


async def _three_levels(stack: Stack, inner: dict[str, Any]) -> tuple[str, str, str]:
    """top -> middle -> inner; returns the three workflow ids."""
    inner_wf, middle_wf, top_wf = inner["id"], _id("middle"), _id("top")
    await stack.register(inner)
    middle = parent_of(middle_wf, inner_wf)
    await stack.register(middle)
    await stack.register(parent_of(top_wf, middle_wf))
    return top_wf, middle_wf, inner_wf


async def test_cancel_reaches_grandchildren_paused(stack: Stack) -> None:
    top_wf, middle_wf, inner_wf = await _three_levels(stack, child_approval(_id("approving")))
    started = await stack.start(workflow_id=top_wf, input={"n": 1})
    await stack.wait_status(started.execution_id, "PAUSED")
    mid = await one_child(stack, middle_wf)
    inner = await one_child(stack, inner_wf)
    await stack.wait_status(inner.execution_id, "PAUSED")
    await stack.executor.CancelExecution(
        executor_pb2.CancelExecutionRequest(execution_id=started.execution_id, reason="all of it")
    )
    for execution_id in (started.execution_id, mid.execution_id, inner.execution_id):
        await stack.wait_status(execution_id, "CANCELLED", within=5)
        check_log(await stack.events(execution_id))


async def test_cancel_reaches_grandchildren_running(stack: Stack) -> None:
    top_wf, middle_wf, inner_wf = await _three_levels(stack, child_waiting(_id("sleepy"), 15_000))
    started = await stack.start(workflow_id=top_wf, input={"n": 1})
    inner = await one_child(stack, inner_wf)
    await stack.wait_status(inner.execution_id, "RUNNING")
    mid = await one_child(stack, middle_wf)
    await stack.executor.CancelExecution(
        executor_pb2.CancelExecutionRequest(execution_id=started.execution_id, reason="all of it")
    )
    for execution_id in (started.execution_id, mid.execution_id, inner.execution_id):
        await stack.wait_status(execution_id, "CANCELLED", within=8)
        check_log(await stack.events(execution_id))


async def test_node_timeout_cancels_its_child(stack: Stack) -> None:
    child_wf, parent_wf = _id("sleepy"), _id("parent")
    await stack.register(child_waiting(child_wf, 15_000))
    parent = parent_of(parent_wf, child_wf, with_error_edge=True)
    parent["nodes"][1]["timeoutMs"] = 700
    await stack.register(parent)
    started = await stack.start(workflow_id=parent_wf, input={"n": 1})
    done = await stack.wait_status(started.execution_id, "SUCCEEDED", "FAILED", within=10)
    assert outputs(done)["handled"]["code"] == "TIMEOUT"
    child = await one_child(stack, child_wf)
    await stack.wait_status(child.execution_id, "CANCELLED", within=5)
    check_log(await stack.events(started.execution_id))
    check_log(await stack.events(child.execution_id))

"""Sub-workflows across worker changes: a parent whose worker goes away while it waits for its
child is taken over and joins the same child; a parent parked on a child (paused, or running
longer than the in-place wait) holds no worker and is woken by the state service when the child
ends (PostgreSQL + Redis and SQLite)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from effects_upstream import EffectsUpstream
from executor_support import STATUS_NAMES, Backends, Stack, check_log, outputs, start_stack
from test_subworkflow import _id, child_approval, child_waiting, children_of, one_child, parent_of

from weft.executor.v1 import executor_pb2
from weft_common import jsonutil


@pytest.fixture(scope="module")
def upstream() -> Iterator[EffectsUpstream]:
    with EffectsUpstream() as fake:
        yield fake


@pytest.fixture(params=["postgres", "sqlite"])
async def two_workers(
    request: pytest.FixtureRequest, executor_backends: Backends
) -> AsyncIterator[Stack]:
    stack = await start_stack(
        await executor_backends.new(request.param),
        executors=2,
        lease_ms=1500,
        heartbeat_ms=250,
        durable_wait_threshold_ms=1000,
    )
    yield stack
    await stack.stop()


async def test_parent_taken_over_joins_the_same_child(two_workers: Stack) -> None:
    stack = two_workers
    child_wf, parent_wf = _id("sleepy"), _id("parent")
    await stack.register(child_waiting(child_wf, 900))
    await stack.register(parent_of(parent_wf, child_wf))
    started = await stack.start(workflow_id=parent_wf, input={"n": 1}, via=0)
    child = await one_child(stack, child_wf)
    await stack.wait_status(child.execution_id, "RUNNING")
    first = stack.executors[0]
    assert first.worker.holds(started.execution_id)
    # The parent's worker goes away while its node waits for the child in place: the child is
    # left alone (not cancelled), and the other worker finishes both.
    await first.stop()
    parent = await stack.wait_status(started.execution_id, "SUCCEEDED", "FAILED", within=20)
    assert STATUS_NAMES[parent.status] == "SUCCEEDED", parent.error
    assert outputs(parent) == {"result": {"out": "woke"}}
    executions = await children_of(stack, child_wf)
    assert [e.execution_id for e in executions] == [child.execution_id]
    assert STATUS_NAMES[executions[0].status] == "SUCCEEDED"
    check_log(await stack.events(started.execution_id, via=1))
    check_log(await stack.events(child.execution_id, via=1))


def child_slow_http(workflow_id: str, url: str) -> dict[str, Any]:
    return {
        "id": workflow_id,
        "nodes": [
            {"id": "start", "type": "start"},
            {
                "id": "call",
                "type": "http",
                "config": {"method": "POST", "url": url, "body": {"v": 1}},
            },
            {"id": "out", "type": "output", "config": {"value": "{{call.body.v}}"}},
        ],
        "edges": [{"source": "start", "target": "call"}, {"source": "call", "target": "out"}],
    }


async def test_parent_parks_while_a_long_child_runs_and_wakes_when_it_ends(
    two_workers: Stack, upstream: EffectsUpstream
) -> None:
    stack = two_workers
    child_wf, parent_wf = _id("slow"), _id("parent")
    # The child runs longer than durable_wait_threshold_ms (1 s): the parent stops waiting in
    # place and parks; the state service wakes it in the transaction that ends the child.
    await stack.register(child_slow_http(child_wf, f"{upstream.base_url}/effect?ms=2500"))
    await stack.register(parent_of(parent_wf, child_wf))
    started = await stack.start(workflow_id=parent_wf, input={"n": 1}, via=0)
    parent = await stack.wait_status(started.execution_id, "PAUSED", "FAILED", "SUCCEEDED")
    assert STATUS_NAMES[parent.status] == "PAUSED", parent.error
    child = await one_child(stack, child_wf)
    assert STATUS_NAMES[child.status] == "RUNNING"
    [paused] = parent.paused_nodes
    assert paused.reason == f"waiting for child {child.execution_id} (status RUNNING)"
    child = await stack.wait_status(child.execution_id, "SUCCEEDED", "FAILED", within=20)
    assert STATUS_NAMES[child.status] == "SUCCEEDED", child.error
    parent = await stack.wait_status(started.execution_id, "SUCCEEDED", "FAILED", within=20)
    assert STATUS_NAMES[parent.status] == "SUCCEEDED", parent.error
    assert outputs(parent) == {"result": {"out": 2}}
    check_log(await stack.events(started.execution_id))
    check_log(await stack.events(child.execution_id))


async def test_parked_parent_and_child_need_no_worker_until_resumed(two_workers: Stack) -> None:
    stack = two_workers
    child_wf, parent_wf = _id("approving"), _id("parent")
    await stack.register(child_approval(child_wf))
    await stack.register(parent_of(parent_wf, child_wf))
    started = await stack.start(workflow_id=parent_wf, input={"n": 1}, via=0)
    await stack.wait_status(started.execution_id, "PAUSED")
    child = await one_child(stack, child_wf)
    await stack.wait_status(child.execution_id, "PAUSED")
    # Both are parked: the worker that ran them goes away; the other one carries on.
    await stack.executors[0].stop()
    await stack.executor_stubs[1].ResumeExecution(
        executor_pb2.ResumeExecutionRequest(
            execution_id=child.execution_id,
            node_id="approve",
            input_json=jsonutil.dumps({"ok": True}),
        )
    )
    parent = await stack.wait_status(started.execution_id, "SUCCEEDED", "FAILED", within=20)
    assert STATUS_NAMES[parent.status] == "SUCCEEDED", parent.error
    assert outputs(parent) == {"result": {"verdict": True}}
    check_log(await stack.events(started.execution_id, via=1))
    check_log(await stack.events(child.execution_id, via=1))

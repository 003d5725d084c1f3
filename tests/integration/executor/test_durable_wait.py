"""Durable ``wait`` nodes through the real services (PostgreSQL + Redis, and SQLite): a wait longer
than ``durable_wait_threshold_ms`` parks the execution with a ``wake_at``, releases the worker, and
the worker that claims it back once it is due completes the wait and finishes the execution,
with no loop of claims and ``execution:paused`` events (SPEC section 3 ``wait``, issue 5)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from executor_support import Backends, Stack, check_log, outputs, start_stack

from weft.executor.v1 import executor_pb2
from weft.state.v1 import state_pb2
from weft.workflow.v1 import workflow_pb2
from weft_common import jsonutil

THRESHOLD_MS = 300


@pytest.fixture(params=["postgres", "sqlite"], scope="module")
async def durable_stack(
    request: pytest.FixtureRequest, executor_backends: Backends
) -> AsyncIterator[Stack]:
    """A stack of its own whose executor parks any wait longer than 300 ms."""
    stack = await start_stack(
        await executor_backends.new(request.param), durable_wait_threshold_ms=THRESHOLD_MS
    )
    yield stack
    await stack.stop()


def nap_then(*nodes: dict[str, Any], duration_ms: int) -> dict[str, Any]:
    chain = [{"id": "nap", "type": "wait", "config": {"durationMs": duration_ms}}, *nodes]
    ids = ["start", *(n["id"] for n in chain)]
    return {
        "id": "durable-nap",
        "nodes": [{"id": "start", "type": "start"}, *chain],
        "edges": [{"source": a, "target": b} for a, b in itertools.pairwise(ids)],
    }


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


async def paused_events_after(stack: Stack, execution_id: str, seconds: float) -> int:
    """``execution:paused`` events in the committed log, counted after ``seconds``."""
    await asyncio.sleep(seconds)
    last_seq = (await stack.execution(execution_id)).last_seq
    count = 0
    stream = stack.state_stub.StreamEvents(
        state_pb2.StreamEventsRequest(execution_id=execution_id, after_seq=0)
    )
    async for item in stream:
        count += item.event.type == "execution:paused"
        if item.event.seq >= last_seq:
            break
    stream.cancel()
    return count


async def test_durable_wait_parks_then_wakes_on_time_and_succeeds(durable_stack: Stack) -> None:
    stack = durable_stack
    workflow = nap_then(
        {"id": "out", "type": "output", "config": {"name": "waited", "value": "{{nap.waitedMs}}"}},
        duration_ms=1500,
    )
    t0 = time.time()
    started = await stack.start(workflow, {})
    paused = await stack.wait_status(started.execution_id, "PAUSED", "SUCCEEDED", "FAILED")
    assert paused.status == workflow_pb2.EXECUTION_STATUS_PAUSED, paused
    [node] = paused.paused_nodes
    assert node.node_id == "nap" and node.HasField("wake_at")
    wake_at = node.wake_at.ToDatetime().timestamp()
    assert t0 + 1.4 <= wake_at <= time.time() + 1.6

    done = await stack.wait_status(started.execution_id, "SUCCEEDED", "FAILED", within=15)
    assert done.status == workflow_pb2.EXECUTION_STATUS_SUCCEEDED, done
    assert time.time() >= wake_at
    waited = outputs(done)["waited"]
    assert 1500 <= waited < 15_000

    events = await stack.events(started.execution_id)
    check_log(events)
    assert types(events).count("execution:paused") == 1
    assert types(events)[-5:] == [
        "execution:resumed", "node:completed", "node:started", "node:completed",
        "execution:completed",
    ]
    nap_done = next(e for e in events if e["type"] == "node:completed" and e["nodeId"] == "nap")
    assert nap_done["output"] == {"waitedMs": waited}


async def test_durable_wait_not_yet_due_stays_parked_without_claims(durable_stack: Stack) -> None:
    """A parked wait far from due is not claimable: one ``execution:paused``, nothing after it."""
    stack = durable_stack
    workflow = nap_then({"id": "out", "type": "output", "config": {"value": "woke"}},
                        duration_ms=60_000)
    started = await stack.start(workflow, {})
    await stack.wait_status(started.execution_id, "PAUSED")
    assert await paused_events_after(stack, started.execution_id, 1.5) == 1
    execution = await stack.execution(started.execution_id)
    assert execution.status == workflow_pb2.EXECUTION_STATUS_PAUSED
    await stack.executor.CancelExecution(
        executor_pb2.CancelExecutionRequest(execution_id=started.execution_id, reason="done")
    )
    await stack.wait_status(started.execution_id, "CANCELLED", within=10)


async def test_an_approval_after_a_woken_wait_does_not_keep_the_old_wake_up(
    durable_stack: Stack,
) -> None:
    """After the wait woke, the next pause (an approval, no wake-up of its own) must not leave
    the old, past ``wake_at`` behind: that would make the execution claimable over and over."""
    stack = durable_stack
    workflow = nap_then(
        {"id": "ok", "type": "approval", "config": {"reason": "go?"}},
        {"id": "out", "type": "output", "config": {"name": "by", "value": "{{ok.by}}"}},
        duration_ms=1000,
    )
    started = await stack.start(workflow, {})
    execution_id = started.execution_id
    deadline = time.monotonic() + 15
    while True:
        execution = await stack.wait_status(execution_id, "PAUSED", within=15)
        if [p.node_id for p in execution.paused_nodes] == ["ok"]:
            break
        assert time.monotonic() < deadline, "the approval never parked"
        await asyncio.sleep(0.05)
    [node] = execution.paused_nodes
    assert not node.HasField("wake_at")
    assert await paused_events_after(stack, execution_id, 1.5) == 2

    await stack.executor.ResumeExecution(
        executor_pb2.ResumeExecutionRequest(
            execution_id=execution_id, node_id="ok", input_json=jsonutil.dumps({"by": "ada"})
        )
    )
    done = await stack.wait_status(execution_id, "SUCCEEDED", "FAILED", within=15)
    assert outputs(done) == {"by": "ada"}
    events = await stack.events(execution_id)
    check_log(events)
    assert types(events).count("execution:paused") == 2
    assert types(events).count("execution:resumed") == 2


async def test_a_resumed_execution_reads_running_until_it_pauses_or_ends(stack: Stack) -> None:
    """After a resume the execution is RUNNING again (GET shows it; and a worker dying from here
    on leaves a RUNNING execution whose expired lease lets another worker take it)."""
    workflow = {
        "id": "approve-then-work",
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "ok", "type": "approval", "config": {"reason": "go?"}},
            {"id": "work", "type": "wait", "config": {"durationMs": 1500}},
            {"id": "out", "type": "output", "config": {"value": "{{ok.by}}"}},
        ],
        "edges": [
            {"source": "start", "target": "ok"},
            {"source": "ok", "target": "work"},
            {"source": "work", "target": "out"},
        ],
    }
    started = await stack.start(workflow, {})
    execution_id = started.execution_id
    await stack.wait_status(execution_id, "PAUSED", within=15)
    await stack.executor.ResumeExecution(
        executor_pb2.ResumeExecutionRequest(
            execution_id=execution_id, node_id="ok", input_json=jsonutil.dumps({"by": "ada"})
        )
    )
    running = await stack.wait_status(execution_id, "RUNNING", "SUCCEEDED", "FAILED", within=10)
    assert running.status == workflow_pb2.EXECUTION_STATUS_RUNNING, running
    assert not running.paused_nodes
    done = await stack.wait_status(execution_id, "SUCCEEDED", "FAILED", within=15)
    assert outputs(done) == {"out": "ada"}
    events = await stack.events(execution_id)
    check_log(events)
    assert types(events).count("execution:resumed") == 1

"""Several workers on one state service: hand-over of paused executions, and fencing of a worker
that stalled past its lease (its late commit is refused, the new holder finishes the run)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from effects_upstream import EffectsUpstream
from executor_support import Backends, Stack, check_log, outputs, start_stack
from test_executor_service import approval_workflow, resume


@pytest.fixture(scope="module")
def upstream() -> AsyncIterator[EffectsUpstream]:
    with EffectsUpstream() as fake:
        yield fake


async def test_resume_is_taken_by_another_worker(two_workers: Stack) -> None:
    stack = two_workers
    started = await stack.start(approval_workflow(), {}, via=0)
    await stack.wait_status(started.execution_id, "PAUSED")
    # The worker that ran it goes away; the paused execution holds no worker anyway.
    await stack.executors[0].stop()
    t0 = time.monotonic()
    await resume(stack, started.execution_id, "approve", {"approved": True, "by": "b"}, via=1)
    done = await stack.wait_status(started.execution_id, "SUCCEEDED", "FAILED", within=10)
    resumed_after = time.monotonic() - t0
    assert outputs(done) == {"decision": "approved by b"}
    check_log(await stack.events(started.execution_id, via=1))
    print(f"resume on another worker finished after {resumed_after * 1000:.0f} ms")


async def test_stalled_worker_is_fenced_and_the_run_taken_over(
    two_workers: Stack, upstream: EffectsUpstream
) -> None:
    stack = two_workers
    workflow = {
        "id": "effect",
        "nodes": [
            {"id": "start", "type": "start"},
            {
                "id": "charge",
                "type": "http",
                "config": {
                    "method": "POST",
                    "url": f"{upstream.base_url}/effect?ms=5000",
                    "body": {"v": "{{input.v}}"},
                },
            },
            {"id": "out", "type": "output", "config": {"value": "{{charge.body.v}}"}},
        ],
        "edges": [{"source": "start", "target": "charge"}, {"source": "charge", "target": "out"}],
    }
    started = await stack.start(workflow, {"v": 41}, via=0)
    execution_id = started.execution_id
    # StartExecution runs the new execution on the executor that received the call.
    first, second = stack.executors
    assert first.worker.holds(execution_id)
    deadline = time.monotonic() + 10
    while not upstream.snapshot()[f"{execution_id}:charge"]:
        assert time.monotonic() < deadline, "the http node never ran"
        await asyncio.sleep(0.02)
    # The first worker stalls: no heartbeats, no claims. Its lease expires; the second takes over.
    for task in first.worker._tasks:
        task.cancel()
    deadline = time.monotonic() + 4.5
    while not second.worker.holds(execution_id):
        assert time.monotonic() < deadline, "nobody took over the expired lease"
        await asyncio.sleep(0.02)
    done = await stack.wait_status(execution_id, "SUCCEEDED", "FAILED", within=20)
    assert outputs(done) == {"out": 42}
    # The stalled run's late commit was refused: it stops without writing anything.
    deadline = time.monotonic() + 5
    while first.worker.holds(execution_id):
        assert time.monotonic() < deadline, "the stalled worker kept running the execution"
        await asyncio.sleep(0.05)
    events = await stack.events(execution_id, via=1)
    check_log(events)
    assert [e["nodeId"] for e in events if e["type"] == "node:completed"] == ["start", "charge", "out"]
    # The side effect was requested again by the new holder, with the same idempotency key.
    assert upstream.snapshot()[f"{execution_id}:charge"] == 2
    assert second.worker.running_count == 0


async def test_graceful_stop_hands_running_executions_over_at_once(
    executor_backends: Backends,
) -> None:
    """A worker stopped with SIGTERM gives its leases back: another worker continues the runs
    from their last commit right away, not after the lease expiry."""
    stack = await start_stack(
        await executor_backends.new("postgres"), executors=2, lease_ms=20_000, heartbeat_ms=500
    )
    try:
        workflow = {
            "id": "nap",
            "nodes": [
                {"id": "start", "type": "start"},
                {"id": "first", "type": "transform", "config": {"expression": "input.n + 1"}},
                {"id": "nap", "type": "wait", "config": {"durationMs": 1500}},
                {"id": "out", "type": "output", "config": {"value": "{{first}}"}},
            ],
            "edges": [
                {"source": "start", "target": "first"},
                {"source": "first", "target": "nap"},
                {"source": "nap", "target": "out"},
            ],
        }
        started = await stack.start(workflow, {"n": 1}, via=0)
        execution_id = started.execution_id
        leaving, _staying = stack.executors
        assert leaving.worker.holds(execution_id)
        deadline = time.monotonic() + 10
        while (await stack.execution(execution_id)).last_seq < 6:  # the wait node has started
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        t0 = time.monotonic()
        await leaving.stop()
        stack.executors.remove(leaving)
        done = await stack.wait_status(execution_id, "SUCCEEDED", "FAILED", within=15)
        handed_over_in = time.monotonic() - t0
        assert outputs(done) == {"out": 2}
        # Well under the 20 s lease: the lease was released, not left to expire.
        assert handed_over_in < 10, handed_over_in
        events = await stack.events(execution_id, via=1)
        check_log(events)
        assert [e["nodeId"] for e in events if e["type"] == "node:completed"] == [
            "start", "first", "nap", "out",
        ]
    finally:
        await stack.stop()


def branch_and_park(nap_ms: int) -> dict[str, Any]:
    """Two branches: one parks on an approval, the other naps; the execution keeps running."""
    return {
        "id": "branch_and_park",
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "approve", "type": "approval", "config": {"reason": "go?"}},
            {"id": "approved", "type": "output", "config": {"value": "{{approve.by}}"}},
            {"id": "nap", "type": "wait", "config": {"durationMs": nap_ms}},
            {"id": "napped", "type": "output", "config": {"value": "done"}},
        ],
        "edges": [
            {"source": "start", "target": "approve"},
            {"source": "approve", "target": "approved"},
            {"source": "start", "target": "nap"},
            {"source": "nap", "target": "napped"},
        ],
    }


async def _parked_while_running(stack: Stack, execution_id: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        events = [e for e in await _log_so_far(stack, execution_id)]
        if any(e["type"] == "node:started" and e.get("nodeId") == "approve" for e in events) and any(
            e["type"] == "node:started" and e.get("nodeId") == "nap" for e in events
        ):
            return
        assert time.monotonic() < deadline, "the branches never started"
        await asyncio.sleep(0.05)


async def _log_so_far(stack: Stack, execution_id: str) -> list[dict[str, Any]]:
    from weft.state.v1 import state_pb2
    from weft_common import jsonutil

    last = (await stack.execution(execution_id)).last_seq
    out: list[dict[str, Any]] = []
    if not last:
        return out
    stream = stack.state_stub.StreamEvents(state_pb2.StreamEventsRequest(execution_id=execution_id))
    async for item in stream:
        out.append(jsonutil.loads(item.event.payload_json))
        if item.event.seq >= last:
            stream.cancel()
            break
    return out


@pytest.mark.parametrize("via", [0, 1], ids=["same-worker", "other-worker"])
async def test_resume_reaches_a_running_execution(two_workers: Stack, via: int) -> None:
    """A resume for an execution still running (another branch busy) is applied by the running
    engine: at once on the worker that received it, or at the next heartbeat of the worker that
    runs it. The execution never pauses."""
    stack = two_workers
    started = await stack.start(branch_and_park(3000), {}, via=0)
    execution_id = started.execution_id
    assert stack.executors[0].worker.holds(execution_id)
    await _parked_while_running(stack, execution_id)
    await resume(stack, execution_id, "approve", {"by": "ops"}, via=via)
    done = await stack.wait_status(execution_id, "SUCCEEDED", "FAILED", within=15)
    assert outputs(done) == {"approved": "ops", "napped": "done"}
    events = await stack.events(execution_id)
    check_log(events)
    types = [e["type"] for e in events]
    assert "execution:paused" not in types
    completed = [e["nodeId"] for e in events if e["type"] == "node:completed"]
    # Applied while the nap was still running, by the worker that ran the execution all along.
    assert completed.index("approve") < completed.index("nap")
    assert not stack.executors[1].worker.holds(execution_id)

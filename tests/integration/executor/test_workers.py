"""Several workers on one state service: hand-over of paused executions, and fencing of a worker
that stalled past its lease (its late commit is refused, the new holder finishes the run)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from effects_upstream import EffectsUpstream
from executor_support import Backends, Stack, check_log, outputs, start_stack
from test_executor_service import approval_workflow, resume


@pytest.fixture(params=["postgres", "sqlite"])
async def two_workers(
    request: pytest.FixtureRequest, executor_backends: Backends
) -> AsyncIterator[Stack]:
    stack = await start_stack(
        await executor_backends.new(request.param), executors=2, lease_ms=1500, heartbeat_ms=250
    )
    yield stack
    await stack.stop()


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
        leaving, staying = stack.executors
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

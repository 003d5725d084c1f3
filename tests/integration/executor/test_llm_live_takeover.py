"""The live lane across a take-over, with real services (PostgreSQL + Redis, and SQLite): a worker
streaming an ``llm`` answer live stalls past its lease; another worker takes the execution over
and runs the node again. A subscriber that followed the stream throughout saw every seq once, in
order, and no seq it saw came to mean another event: where the log differs from what it saw, it
saw a live chunk of the stalled run and the log holds a placeholder chunk of the same node (the
text of chunks that were never committed is lost with their worker, their seqs are not reused)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from executor_support import Stack, check_log, outputs
from helpers.fake_openai import FakeOpenAI, Reply

from weft.state.v1 import state_pb2
from weft_common import jsonutil
from weft_executor.journal import LIVE_WINDOW


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def llm_workflow(fake: FakeOpenAI) -> dict[str, Any]:
    return {
        "id": "live_takeover",
        "nodes": [
            {"id": "start", "type": "start"},
            {
                "id": "chat",
                "type": "llm",
                "config": {"baseUrl": fake.base_url, "model": "m", "apiKey": "k", "prompt": "hi"},
            },
            {"id": "out", "type": "output", "config": {"value": "{{chat.content}}"}},
        ],
        "edges": [{"source": "start", "target": "chat"}, {"source": "chat", "target": "out"}],
    }


async def test_a_take_over_never_reuses_a_seq_a_subscriber_saw_live(
    two_workers: Stack, fake: FakeOpenAI
) -> None:
    stack = two_workers
    fake.reset()
    slow = [f"s{i} " for i in range(400)]  # 8 s at 20 ms: still streaming when it is taken over
    again = ["r0 ", "r1 ", "r2 "]
    fake.script(Reply(chunks=slow, usage=(3, 400), chunk_delay_s=0.02), Reply(chunks=again))
    started = await stack.start(llm_workflow(fake), {}, via=0)
    eid = started.execution_id
    first, second = stack.executors
    assert first.worker.holds(eid)

    seen: list[dict[str, Any]] = []

    async def follow() -> None:
        stream = stack.state_stub.StreamEvents(state_pb2.StreamEventsRequest(execution_id=eid))
        async for item in stream:
            seen.append(jsonutil.loads(item.event.payload_json))

    follower = asyncio.create_task(follow())
    deadline = time.monotonic() + 20
    while sum(e["type"] == "stream:chunk" for e in seen) < 20:
        assert time.monotonic() < deadline, "no chunks reached the subscriber"
        await asyncio.sleep(0.02)
    # The first worker stalls (no heartbeats, no claims) while its node streams on; its lease
    # expires and the second worker takes the execution over.
    for task in first.worker._tasks:
        task.cancel()
    deadline = time.monotonic() + 10
    while not second.worker.holds(eid):
        assert time.monotonic() < deadline, "nobody took over the expired lease"
        await asyncio.sleep(0.02)
    done = await stack.wait_status(eid, "SUCCEEDED", "FAILED", within=30)
    assert outputs(done) == {"out": "".join(again)}
    await asyncio.wait_for(follower, 20)

    log = await stack.events(eid, via=1)
    check_log(log)
    assert [e["seq"] for e in seen] == [e["seq"] for e in log]  # every seq once, in order
    placeholders = [e["seq"] for e in log if e.get("placeholder")]
    assert len(placeholders) == LIVE_WINDOW
    assert placeholders == list(range(placeholders[0], placeholders[0] + LIVE_WINDOW))
    differ = [g["seq"] for g, s in zip(seen, log, strict=True) if g != s]
    print(f"placeholders {placeholders[0]}..{placeholders[-1]}; seen live, then filled: {differ}")
    for got, stored in zip(seen, log, strict=True):
        if got != stored:
            # Only a live chunk of the stalled run whose commit never came: the same seq is a
            # placeholder chunk of the same node in the log.
            assert stored.get("placeholder") is True, (got, stored)
            assert got["type"] == "stream:chunk" and got["nodeId"] == "chat"
            assert got["content"] in slow
    chunks = [e["content"] for e in log if e["type"] == "stream:chunk" and e["content"]]
    assert chunks[-len(again) :] == again  # the new run's answer follows the placeholders
    assert chunks[: -len(again)] == slow[: len(chunks) - len(again)]  # committed before the stall

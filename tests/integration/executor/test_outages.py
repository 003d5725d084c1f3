"""Outages under load: Redis going away mid-run loses no event on live streams; the database going
away mid-run (connections dropped, new ones refused, then back) does not lose executions.

PostgreSQL and Redis are shared with other engineers on this machine, so the outages are made by
a TCP proxy between the state service and the real server (``tcp_proxy.TcpProxy``), which drops
every connection and refuses new ones exactly as a stopped server would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from executor_support import Backends, check_log, outputs, start_stack
from tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres


def waits_chain(n: int, ms: int) -> dict[str, Any]:
    """start → w0 → ... → w{n-1} → out, each wait ``ms`` long: a run that lasts n * ms."""
    nodes: list[dict[str, Any]] = [{"id": "start", "type": "start"}]
    edges = []
    previous = "start"
    for i in range(n):
        nodes.append({"id": f"w{i}", "type": "wait", "config": {"durationMs": ms}})
        edges.append({"source": previous, "target": f"w{i}"})
        previous = f"w{i}"
    nodes.append({"id": "out", "type": "output", "config": {"value": "{{input.tag}}"}})
    edges.append({"source": previous, "target": "out"})
    return {"id": "waits", "nodes": nodes, "edges": edges}


@pytest.fixture
async def redis_proxy() -> AsyncIterator[TcpProxy]:
    with TcpProxy("127.0.0.1", 6379) as proxy:
        yield proxy


@pytest.fixture
async def postgres_proxy() -> AsyncIterator[TcpProxy]:
    with TcpProxy("127.0.0.1", 5432) as proxy:
        yield proxy


async def test_redis_down_mid_run_streams_still_deliver_every_event(
    executor_backends: Backends, redis_proxy: TcpProxy
) -> None:
    backend = await executor_backends.new("postgres")
    backend = dataclasses.replace(backend, redis_url=f"redis://127.0.0.1:{redis_proxy.port}/0")
    stack = await start_stack(backend)
    try:
        ids = [
            (await stack.start(waits_chain(8, 250), {"tag": f"run{i}"})).execution_id
            for i in range(5)
        ]
        # Live subscribers from the start, on every execution.
        live = [asyncio.create_task(stack.events(execution_id)) for execution_id in ids]
        await asyncio.sleep(0.8)
        redis_proxy.cut()
        # A subscriber that arrives while Redis is down.
        late = asyncio.create_task(stack.events(ids[0]))
        streams = await asyncio.wait_for(asyncio.gather(*live, late), timeout=30)
        for i, execution_id in enumerate(ids):
            done = await stack.wait_status(execution_id, "SUCCEEDED", "FAILED")
            assert outputs(done) == {"out": f"run{i}"}
            events = streams[i]
            check_log(events)
            assert events[-1]["type"] == "execution:completed"
            assert len(events) == done.last_seq
        assert streams[-1] == streams[0]
    finally:
        redis_proxy.restore()
        await stack.stop()


@pytest.mark.parametrize("outage_s", [1.5, 4.5], ids=["shorter-than-lease", "longer-than-lease"])
async def test_database_down_mid_run_executions_finish(
    executor_backends: Backends, postgres_proxy: TcpProxy, outage_s: float
) -> None:
    """Short outage: commits are retried under the same lease. Longer than the lease: the worker
    lets go of its executions (it can no longer prove it holds them) and claims them again once
    the database is back; they resume from their last commit."""
    backend = await executor_backends.new("postgres")
    backend = dataclasses.replace(
        backend, database_url=backend.database_url.replace(":5432/", f":{postgres_proxy.port}/")
    )
    stack = await start_stack(backend, lease_ms=3000, heartbeat_ms=300)
    try:
        ids = [
            (await stack.start(waits_chain(10, 200), {"tag": f"run{i}"})).execution_id
            for i in range(6)
        ]
        live = [asyncio.create_task(stack.events(execution_id)) for execution_id in ids]
        await asyncio.sleep(0.7)
        postgres_proxy.cut()
        await asyncio.sleep(outage_s)
        postgres_proxy.restore()
        t0 = time.monotonic()
        streams = await asyncio.wait_for(asyncio.gather(*live), timeout=40)
        for i, execution_id in enumerate(ids):
            done = await stack.wait_status(execution_id, "SUCCEEDED", "FAILED", within=30)
            assert outputs(done) == {"out": f"run{i}"}, done.error
            check_log(streams[i])
            assert [e["nodeId"] for e in streams[i] if e["type"] == "node:completed"] == [
                "start", *[f"w{n}" for n in range(10)], "out",
            ]
        print(f"all finished {time.monotonic() - t0:.1f}s after the database came back")
    finally:
        postgres_proxy.restore()
        await stack.stop()

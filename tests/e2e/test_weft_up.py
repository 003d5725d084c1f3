"""`weft up` stops cleanly on Ctrl-C/SIGTERM, and a restart finds every execution where it was:
paused ones still paused and resumable, interrupted ones finished from their last commit."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest
from helpers.db import REDIS_URL

from .weft_up import WeftUp

APPROVAL = {
    "id": "restart_approval",
    "nodes": [
        {"id": "start", "type": "start"},
        {"id": "approve", "type": "approval", "config": {
            "reason": "ship?", "inputSchema": {"type": "object", "required": ["ok"]}}},
        {"id": "out", "type": "output", "config": {"value": "{{approve.ok}}"}},
    ],
    "edges": [{"source": "start", "target": "approve"}, {"source": "approve", "target": "out"}],
}

SLOW = {
    "id": "restart_slow",
    "nodes": [
        {"id": "start", "type": "start"},
        {"id": "each", "type": "loop", "config": {"kind": "for", "count": 6}},
        {"id": "tick", "type": "wait", "parent": "each", "config": {"durationMs": 400}},
        {"id": "out", "type": "output", "config": {"value": "{{each.results}}"}},
    ],
    "edges": [{"source": "start", "target": "each"}, {"source": "each", "target": "out"}],
}


async def status(c: httpx.AsyncClient, eid: str) -> dict:
    resp = await c.get(f"/v1/executions/{eid}")
    assert resp.status_code == 200, resp.text
    return resp.json()


async def wait_for(c: httpx.AsyncClient, eid: str, wanted: set[str], within: float = 60) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        body = await status(c, eid)
        if body["status"] in wanted:
            return body
        assert loop.time() < deadline, f"{eid} stayed {body['status']}, wanted {wanted}"
        await asyncio.sleep(0.1)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_restart_on_sqlite(tmp_path: Path, sig: int) -> None:
    await restart_scenario(tmp_path, sig, {})


@pytest.mark.timeout(300)
async def test_restart_on_postgres_and_redis(tmp_path: Path, postgres_database_url: str, redis_prefix: str) -> None:
    env = {"WEFT_DATABASE_URL": postgres_database_url, "WEFT_REDIS_URL": REDIS_URL,
           "WEFT_REDIS_PREFIX": redis_prefix}
    await restart_scenario(tmp_path, signal.SIGTERM, env)


async def restart_scenario(tmp_path: Path, sig: int, env: dict[str, str]) -> None:
    """Paused, finished and mid-run executions; stop with ``sig``; restart on the same data."""
    first = await WeftUp(tmp_path, env=env).start()
    if env:
        assert "events redis" in first.log.read_text() and "postgresql+asyncpg" in first.log.read_text()
    async with httpx.AsyncClient(base_url=first.url, timeout=30) as c:
        paused = (await c.post("/v1/executions", json={"workflow": APPROVAL, "input": {}})).json()["executionId"]
        await wait_for(c, paused, {"PAUSED"})
        done = (await c.post("/v1/executions", json={"workflow": APPROVAL, "input": {}})).json()["executionId"]
        await wait_for(c, done, {"PAUSED"})
        r = await c.post(f"/v1/executions/{done}/resume", json={"nodeId": "approve", "input": {"ok": 1}})
        assert r.status_code == 202
        await wait_for(c, done, {"SUCCEEDED"})
        slow = (await c.post("/v1/executions", json={"workflow": SLOW, "input": {}})).json()["executionId"]
        await wait_for(c, slow, {"RUNNING"})
        await asyncio.sleep(0.6)  # a tick or so committed; the rest is still to run
        before = await status(c, slow)
    assert await first.stop(sig) == 0, first.log.read_text()
    assert "stopping" in first.log.read_text()

    second = await WeftUp(tmp_path, port=first.port, env=env).start()
    try:
        async with httpx.AsyncClient(base_url=second.url, timeout=30) as c:
            assert (await status(c, done))["outputs"] == {"out": 1}
            still = await status(c, paused)
            assert still["status"] == "PAUSED"
            assert [p["nodeId"] for p in still["pausedNodes"]] == ["approve"]
            bad = await c.post(f"/v1/executions/{paused}/resume", json={"nodeId": "approve", "input": {}})
            assert bad.status_code == 422
            ok = await c.post(f"/v1/executions/{paused}/resume", json={"nodeId": "approve", "input": {"ok": 2}})
            assert ok.status_code == 202
            assert (await wait_for(c, paused, {"SUCCEEDED", "FAILED"}))["outputs"] == {"out": 2}
            # The interrupted run is picked up again from its last commit and finishes.
            finished = await wait_for(c, slow, {"SUCCEEDED", "FAILED"}, within=90)
            assert finished["status"] == "SUCCEEDED", finished
            assert len(finished["outputs"]["out"]) == 6
            assert finished["lastSeq"] > before["lastSeq"]
            # Its event log is still one gap-free sequence across the restart.
            async with c.stream("GET", f"/v1/executions/{slow}/stream") as resp:
                ids = [int(line[4:]) async for line in resp.aiter_lines() if line.startswith("id: ")]
            assert ids == list(range(1, len(ids) + 1))
    finally:
        assert await second.stop() == 0, second.log.read_text()[-8000:]

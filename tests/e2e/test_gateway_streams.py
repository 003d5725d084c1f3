"""SSE fan-out on the real stack: 200 clients on one execution all get every event, and a client
that stops reading holds up neither the execution nor the other clients."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest

from weft_cli.stack import EmbeddedStack

pytestmark = pytest.mark.timeout(300)

APPROVAL = {
    "id": "fanout_streams",
    "nodes": [
        {"id": "start", "type": "start"},
        {"id": "approve", "type": "approval", "config": {"reason": "go"}},
        {"id": "each", "type": "loop", "config": {"kind": "for", "count": 5}},
        {"id": "step", "type": "transform", "parent": "each", "config": {"expression": "loop.index"}},
        {"id": "out", "type": "output", "config": {"value": "{{each.results}}"}},
    ],
    "edges": [{"source": "start", "target": "approve"}, {"source": "approve", "target": "each"},
              {"source": "each", "target": "out"}],
}

# ~1000 events, half of them carrying ~1.5 KB: far more than the socket buffers of a client that
# never reads.
CHATTY = {
    "id": "chatty",
    "nodes": [
        {"id": "start", "type": "start"},
        {"id": "each", "type": "loop", "config": {"kind": "for", "count": 500}},
        {"id": "blob", "type": "transform", "parent": "each",
         "config": {"expression": "$join([1..400].$string($), ',')"}},
        {"id": "out", "type": "output", "config": {"value": "{{each.results[0]}}"}},
    ],
    "edges": [{"source": "start", "target": "each"}, {"source": "each", "target": "out"}],
}


async def wait_status(api: httpx.AsyncClient, eid: str, wanted: set[str], within: float = 120) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        body = (await api.get(f"/v1/executions/{eid}")).json()
        if body["status"] in wanted:
            return body
        assert loop.time() < deadline, f"stayed {body['status']}"
        await asyncio.sleep(0.05)


async def test_two_hundred_streams_on_one_execution(stack: EmbeddedStack, api: httpx.AsyncClient) -> None:
    eid = (await api.post("/v1/executions", json={"workflow": APPROVAL, "input": {}})).json()["executionId"]
    await wait_status(api, eid, {"PAUSED"})
    paused_seen = 0
    limits = httpx.Limits(max_connections=250, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=stack.url, limits=limits, timeout=120) as many:

        async def follow() -> list[int]:
            nonlocal paused_seen
            seqs: list[int] = []
            async with many.stream("GET", f"/v1/executions/{eid}/stream") as resp:
                assert resp.status_code == 200
                async for line in resp.aiter_lines():
                    if line.startswith("data: "):
                        event = json.loads(line[6:])
                        seqs.append(event["seq"])
                        if event["type"] == "execution:paused":
                            paused_seen += 1
            return seqs

        tasks = [asyncio.create_task(follow()) for _ in range(200)]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while paused_seen < 200:  # every client has caught up to the pause: now go live
            assert loop.time() < deadline, f"only {paused_seen} of 200 streams caught up"
            await asyncio.sleep(0.05)
        r = await api.post(f"/v1/executions/{eid}/resume", json={"nodeId": "approve", "input": {}})
        assert r.status_code == 202
        results = await asyncio.gather(*tasks)
    last = (await wait_status(api, eid, {"SUCCEEDED"}))["lastSeq"]
    assert last > 10
    assert all(seqs == list(range(1, last + 1)) for seqs in results), [len(s) for s in results]


async def test_a_client_that_stops_reading_holds_up_nothing(stack: EmbeddedStack, api: httpx.AsyncClient) -> None:
    eid = (await api.post("/v1/executions", json={"workflow": CHATTY, "input": {}})).json()["executionId"]
    stalled = socket.create_connection(("127.0.0.1", stack.http_port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(f"GET /v1/executions/{eid}/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
    try:
        done = await wait_status(api, eid, {"SUCCEEDED", "FAILED"}, within=180)
        assert done["status"] == "SUCCEEDED", done
        # Another client still gets the whole log at full speed.
        async with api.stream("GET", f"/v1/executions/{eid}/stream") as resp:
            ids = [int(line[4:]) async for line in resp.aiter_lines() if line.startswith("id: ")]
        assert ids == list(range(1, done["lastSeq"] + 1))
        assert len(ids) > 1000
    finally:
        stalled.close()
    assert (await api.get("/readyz")).status_code == 200

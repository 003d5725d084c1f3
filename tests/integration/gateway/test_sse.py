"""SSE over real HTTP: framing, replay (Last-Event-ID, ?after), heartbeats, pauses, streaming
the run that an execute call starts, disconnecting clients and many concurrent clients."""

from __future__ import annotations

import asyncio
import json

import httpx

from .fakes import FakeStack, wait_until
from .sse_client import frames, read_events
from .workflows import APPROVAL, linear

TERMINAL = {"execution:completed", "execution:failed", "execution:cancelled"}


async def run_to_end(client: httpx.AsyncClient, workflow: dict) -> str:
    eid = (await client.post("/v1/executions", json={"workflow": workflow, "input": {}})).json()["executionId"]
    for _ in range(500):
        if (await client.get(f"/v1/executions/{eid}")).json()["status"] in ("SUCCEEDED", "FAILED"):
            return eid
        await asyncio.sleep(0.01)
    raise AssertionError("execution did not finish")


async def test_stream_frames_a_finished_log_and_ends(client: httpx.AsyncClient) -> None:
    eid = await run_to_end(client, linear())
    async with client.stream("GET", f"/v1/executions/{eid}/stream") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = await read_events(resp)
    assert [e["data"]["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all(e["id"] == str(e["data"]["seq"]) for e in events)
    assert all(e["event"] == e["data"]["type"] for e in events)
    assert events[0]["event"] == "execution:started"
    assert events[-1]["event"] == "execution:completed"
    assert [e["data"].get("nodeId") for e in events if e["event"] == "node:completed"] == ["start", "work", "out"]


async def test_replay_from_last_event_id_and_after(client: httpx.AsyncClient) -> None:
    eid = await run_to_end(client, linear())
    async with client.stream("GET", f"/v1/executions/{eid}/stream") as resp:
        full = await read_events(resp)
    k = 3
    async with client.stream("GET", f"/v1/executions/{eid}/stream", headers={"Last-Event-ID": str(k)}) as resp:
        tail = await read_events(resp)
    assert [e["data"]["seq"] for e in tail] == [e["data"]["seq"] for e in full[k:]]
    async with client.stream("GET", f"/v1/executions/{eid}/stream", params={"after": k + 1}) as resp:
        tail2 = await read_events(resp)
    assert [e["data"]["seq"] for e in tail2] == [e["data"]["seq"] for e in full[k + 1:]]
    # The header wins over the query (a browser reconnect keeps the original URL).
    async with client.stream("GET", f"/v1/executions/{eid}/stream?after=1",
                             headers={"Last-Event-ID": str(len(full) - 1)}) as resp:
        last = await read_events(resp)
    assert [e["event"] for e in last] == ["execution:completed"]
    bad = await client.get(f"/v1/executions/{eid}/stream", headers={"Last-Event-ID": "abc"})
    assert bad.status_code == 400
    assert bad.headers["content-type"].startswith("application/problem+json")


async def test_stream_stays_open_across_a_pause_with_heartbeats(client: httpx.AsyncClient) -> None:
    eid = (await client.post("/v1/executions", json={"workflow": APPROVAL, "input": {}})).json()["executionId"]
    seen: list[dict] = []
    heartbeats = 0
    async with client.stream("GET", f"/v1/executions/{eid}/stream") as resp:
        async for frame in frames(resp):
            if "comment" in frame:
                heartbeats += 1
                if heartbeats == 3:  # idle while paused: heartbeats keep coming (every 0.2 s here)
                    r = await client.post(f"/v1/executions/{eid}/resume",
                                          json={"nodeId": "approve", "input": {"approved": True}})
                    assert r.status_code == 202
                continue
            seen.append(frame)
    types = [f["event"] for f in seen]
    assert "execution:paused" in types and "execution:resumed" in types
    assert types.index("execution:paused") < types.index("execution:resumed")
    assert types[-1] == "execution:completed"
    assert heartbeats >= 3
    assert [f["data"]["seq"] for f in seen] == list(range(1, len(seen) + 1))


async def test_execute_with_accept_event_stream_streams_the_run(client: httpx.AsyncClient) -> None:
    await client.post("/v1/workflows", json=linear("streamed"))
    async with client.stream("POST", "/v1/workflows/streamed/execute", json={"input": {}},
                             headers={"Accept": "text/event-stream"}) as resp:
        assert resp.status_code == 200
        eid = resp.headers["weft-execution-id"]
        events = await read_events(resp)
    assert events[0]["event"] == "execution:started"
    assert events[-1]["event"] == "execution:completed"
    assert all(e["data"]["executionId"] == eid for e in events)
    async with client.stream("POST", "/v1/executions", json={"workflow": linear(), "input": {}},
                             headers={"Accept": "text/event-stream"}) as resp:
        assert resp.status_code == 200
        inline = await read_events(resp)
    assert [e["event"] for e in inline] == [e["event"] for e in events]


async def test_data_is_the_event_json_verbatim(client: httpx.AsyncClient, fakes: FakeStack) -> None:
    eid = await run_to_end(client, linear())
    async with client.stream("GET", f"/v1/executions/{eid}/stream") as resp:
        raw = (await resp.aread()).decode()
    stored = [ev.payload_json for ev in fakes.world.executions[eid].events]
    data_lines = [line[len("data: "):] for line in raw.split("\n") if line.startswith("data: ")]
    assert data_lines == stored
    assert json.loads(data_lines[0])["type"] == "execution:started"


async def test_disconnecting_client_releases_the_upstream_stream(client: httpx.AsyncClient, fakes: FakeStack) -> None:
    eid = (await client.post("/v1/executions", json={"workflow": APPROVAL, "input": {}})).json()["executionId"]
    async with client.stream("GET", f"/v1/executions/{eid}/stream") as resp:
        async for frame in frames(resp):
            if frame.get("event") == "execution:paused":
                break  # leave mid-stream while the execution is parked
        assert fakes.world.open_streams == 1
    await wait_until(lambda: fakes.world.open_streams == 0)
    # The gateway is still fine, and another client gets the whole log.
    r = await client.post(f"/v1/executions/{eid}/resume", json={"nodeId": "approve", "input": {"approved": True}})
    assert r.status_code == 202
    async with client.stream("GET", f"/v1/executions/{eid}/stream") as resp:
        events = await read_events(resp)
    assert events[-1]["event"] == "execution:completed"


async def test_two_hundred_concurrent_streams_get_every_event(client: httpx.AsyncClient, fakes: FakeStack, gateway) -> None:
    eid = (await client.post("/v1/executions", json={"workflow": APPROVAL, "input": {}})).json()["executionId"]
    limits = httpx.Limits(max_connections=250, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.port}", limits=limits, timeout=60) as many:

        async def follow() -> list[int]:
            async with many.stream("GET", f"/v1/executions/{eid}/stream") as resp:
                return [e["data"]["seq"] for e in await read_events(resp)]

        tasks = [asyncio.create_task(follow()) for _ in range(200)]
        await wait_until(lambda: fakes.world.open_streams == 200, timeout=60)
        r = await client.post(f"/v1/executions/{eid}/resume", json={"nodeId": "approve", "input": {"approved": True}})
        assert r.status_code == 202
        results = await asyncio.gather(*tasks)
    total = len(fakes.world.executions[eid].events)
    assert all(seqs == list(range(1, total + 1)) for seqs in results)


async def test_stream_survives_a_state_service_restart(client: httpx.AsyncClient, fakes: FakeStack) -> None:
    eid = (await client.post("/v1/executions", json={"workflow": APPROVAL, "input": {}})).json()["executionId"]
    seen: list[int] = []
    async with client.stream("GET", f"/v1/executions/{eid}/stream") as resp:
        async for frame in frames(resp):
            if "data" not in frame:
                continue
            seen.append(frame["data"]["seq"])
            if frame["event"] == "execution:paused":
                await fakes.restart_state()  # the upstream stream breaks under the client
                r = await client.post(f"/v1/executions/{eid}/resume",
                                      json={"nodeId": "approve", "input": {"approved": True}})
                assert r.status_code == 202
    # The gateway re-attached after the last seq it sent: no gap, no duplicate.
    assert seen == list(range(1, len(fakes.world.executions[eid].events) + 1))
    assert fakes.world.stream_calls >= 2

"""A real browser follows an execution with its own ``EventSource`` through the gateway and gets
every event in order, including across a connection the network dropped mid-run (the browser
reconnects by itself with ``Last-Event-ID``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from weft_cli.stack import EmbeddedStack

from .browser import DroppingProxy, PageServer, headless_chromium

WORKFLOW = {
    "id": "browser_e2e",
    "nodes": [
        {"id": "start", "type": "start"},
        {"id": "prepare", "type": "transform", "config": {"expression": "'ready'"}},
        {"id": "check", "type": "transform", "config": {"expression": "prepare & '!'"}},
        {"id": "approve", "type": "approval", "config": {"reason": "go on?"}},
        {"id": "each", "type": "loop", "config": {"kind": "for", "count": 3}},
        {"id": "tick", "type": "wait", "parent": "each", "config": {"durationMs": 50}},
        {"id": "out", "type": "output", "config": {"value": "{{each.results}}"}},
    ],
    "edges": [
        {"source": "start", "target": "prepare"}, {"source": "prepare", "target": "check"},
        {"source": "check", "target": "approve"}, {"source": "approve", "target": "each"},
        {"source": "each", "target": "out"},
    ],
}


async def _until(predicate, within: float, what: str) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.timeout(900)  # the first run may install chromium (scripts/install-browser.sh)
async def test_browser_eventsource_gets_every_event_across_a_reconnect(
    stack: EmbeddedStack, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    started = await api.post("/v1/executions", json={"workflow": WORKFLOW, "input": {}})
    assert started.status_code == 202, started.text
    eid = started.json()["executionId"]

    async with DroppingProxy(stack.http_port, cut_after=3) as proxy:
        stream_url = f"http://127.0.0.1:{proxy.port}/v1/executions/{eid}/stream"
        with PageServer() as page:
            async with headless_chromium(f"{page.url}/?stream={quote(stream_url)}", tmp_path / "profile"):
                # The first connection is cut after 3 events; the browser reconnects by itself.
                await _until(lambda: proxy.connections >= 2 and any(
                    p.get("type") == "execution:paused" for p in page.progress), 60, "the reconnect and the pause")
                resumed = await api.post(f"/v1/executions/{eid}/resume", json={"nodeId": "approve", "input": {"ok": True}})
                assert resumed.status_code == 202, resumed.text
                await asyncio.get_running_loop().run_in_executor(None, page.got_result.wait, 120)
            result = page.result

    if result is None:
        status = (await api.get(f"/v1/executions/{eid}")).json()
        raise AssertionError(f"the page never reported its events: execution {status['status']}, "
                             f"page progress {page.progress[-3:]}, connections {proxy.connections}")
    async with api.stream("GET", f"/v1/executions/{eid}/stream") as resp:
        log = [line.split(": ", 1)[1] async for line in resp.aiter_lines() if line.startswith("event: ")]
    seen = result["seen"]
    assert [e["seq"] for e in seen] == list(range(1, len(log) + 1)), seen
    assert [e["type"] for e in seen] == log
    assert all(e["id"] == str(e["seq"]) and e["dataType"] == e["type"] for e in seen)
    assert seen[-1]["type"] == "execution:completed"
    assert result["opens"] == 2
    # The browser's reconnect carried the id of the last event it had, and got exactly the rest.
    reconnect_head = proxy.requests[1].decode("latin-1").lower()
    last_before = result["idsBeforeReconnect"][0]
    assert f"last-event-id: {last_before}" in reconnect_head

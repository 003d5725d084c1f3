"""An ``llm`` node through the whole stack (gateway → dag-builder → executor → state, in this
process) on both backends: chunks reach an SSE client in order, a client that drops mid-answer
and reconnects with ``Last-Event-ID`` gets exactly the chunks it missed, and token usage lands in
the node log."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers.db import (
    REDIS_URL,
    check_redis,
    create_postgres_database,
    drop_postgres_database,
    flush_redis_prefix,
    postgres_url,
    random_name,
)
from helpers.fake_openai import FakeOpenAI, Reply
from httpx_sse import EventSource

from weft_cli.stack import EmbeddedStack, start_stack


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
async def stack(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedStack]:
    data: Path = tmp_path_factory.mktemp("weft-llm")
    extra: dict[str, Any] = {}
    db = ""
    prefix = ""
    if request.param == "postgres":
        await check_redis()
        db = await create_postgres_database()
        prefix = random_name("weft-llm-test:")
        extra = {"database_url": postgres_url(db), "redis_url": REDIS_URL,
                 "redis_prefix": prefix}
    running = await start_stack(http_port=0, data_dir=data, http_allow_private=True, **extra)
    try:
        yield running
    finally:
        await running.stop()
        if db:
            await drop_postgres_database(db)
            await flush_redis_prefix(prefix)


def workflow(fake: FakeOpenAI) -> dict[str, Any]:
    return {"id": "llm_gateway", "nodes": [
        {"id": "start", "type": "start"},
        {"id": "chat", "type": "llm", "config": {
            "baseUrl": fake.base_url, "model": "fake-model", "apiKey": "k",
            "prompt": "count for me"}},
        {"id": "answer", "type": "output", "config": {"value": "{{chat.content}}"}}],
        "edges": [{"source": "start", "target": "chat"}, {"source": "chat", "target": "answer"}]}


async def read_events(client: httpx.AsyncClient, url: str, *, headers: dict[str, str],
                      stop_after_chunks: int | None = None) -> list[tuple[int, str, dict[str, Any]]]:
    out: list[tuple[int, str, dict[str, Any]]] = []
    chunks = 0
    async with client.stream("GET", url, headers={"Accept": "text/event-stream", **headers}) \
            as resp:
        assert resp.status_code == 200
        async for sse in EventSource(resp).aiter_sse():
            if not sse.id and not sse.data:
                continue  # a `retry:` hint, not an event
            out.append((int(sse.id), sse.event, json.loads(sse.data)))
            if sse.event == "stream:chunk":
                chunks += 1
                if stop_after_chunks is not None and chunks == stop_after_chunks:
                    break  # the client goes away mid-answer
    return out


async def test_chunks_replay_after_a_reconnect_and_usage_is_logged(
    fake: FakeOpenAI, stack: EmbeddedStack
) -> None:
    words = [f"n{i} " for i in range(120)]
    fake.reset()
    fake.script(Reply(chunks=words, usage=(11, 120), chunk_delay_s=0.003))
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as client:
        resp = await client.post("/v1/executions", json={"workflow": workflow(fake), "input": {}},
                                 headers={"Accept": "application/json"})
        assert resp.status_code == 202, resp.text
        eid = resp.json()["executionId"]
        url = f"/v1/executions/{eid}/stream"

        first = await read_events(client, url, headers={}, stop_after_chunks=30)
        last_id = first[-1][0]
        rest = await read_events(client, url, headers={"Last-Event-ID": str(last_id)})
        full = await read_events(client, url, headers={})

        seqs = [s for s, _, _ in first + rest]
        assert seqs == list(range(1, len(seqs) + 1))  # no gap, no duplicate at the seam
        assert [e[:2] for e in first + rest] == [e[:2] for e in full]
        got = [d["content"] for _, t, d in first + rest if t == "stream:chunk"]
        assert got == words
        assert rest[-1][1] == "execution:completed"

        status = (await client.get(f"/v1/executions/{eid}")).json()
        assert status["status"] == "SUCCEEDED"
        assert status["outputs"] == {"answer": "".join(words)}
        nodes = (await client.get(f"/v1/executions/{eid}/nodes")).json()
        (chat,) = [n for n in nodes if n["nodeId"] == "chat"]
        # The API shows `estimated` only when the counts were estimated.
        assert chat["tokenUsage"] == {"inputTokens": 11, "outputTokens": 120}
        assert "apiKey" not in json.dumps(chat["input"])
        assert status["tokenUsage"] == {"inputTokens": 11, "outputTokens": 120}


async def test_estimated_usage_is_marked_in_the_node_log(
    fake: FakeOpenAI, stack: EmbeddedStack
) -> None:
    fake.reset()
    fake.script(Reply(chunks=["Hello", " world"], usage=None))
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as client:
        async with client.stream("POST", "/v1/executions",
                                 json={"workflow": workflow(fake), "input": {}},
                                 headers={"Accept": "text/event-stream"}) as resp:
            assert resp.status_code == 200
            events = [(sse.event, json.loads(sse.data))
                      async for sse in EventSource(resp).aiter_sse() if sse.data]
        assert [d["content"] for t, d in events if t == "stream:chunk"] == ["Hello", " world"]
        eid = events[0][1]["executionId"]
        nodes = (await client.get(f"/v1/executions/{eid}/nodes")).json()
        (chat,) = [n for n in nodes if n["nodeId"] == "chat"]
        # "Hello world" is 2 cl100k tokens; the prompt is 1 user message of 3 tokens: 3+1+3+3.
        assert chat["tokenUsage"] == {"inputTokens": 10, "outputTokens": 2, "estimated": True}

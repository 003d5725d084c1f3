"""An ``llm`` node through the whole stack (gateway → dag-builder → executor → state, in this
process) on both backends: chunks reach an SSE client in order, a client that drops mid-answer
and reconnects with ``Last-Event-ID`` gets exactly the chunks it missed, and token usage lands in
the node log."""

from __future__ import annotations

import asyncio
import json
import threading
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
async def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[EmbeddedStack]:
    data: Path = tmp_path_factory.mktemp("weft-llm")
    extra: dict[str, Any] = {}
    db = ""
    prefix = ""
    if request.param == "postgres":
        await check_redis()
        db = await create_postgres_database()
        prefix = random_name("weft-llm-test:")
        extra = {"database_url": postgres_url(db), "redis_url": REDIS_URL, "redis_prefix": prefix}
    running = await start_stack(http_port=0, data_dir=data, http_allow_private=True, **extra)
    try:
        yield running
    finally:
        await running.stop()
        if db:
            await drop_postgres_database(db)
            await flush_redis_prefix(prefix)


def workflow(fake: FakeOpenAI) -> dict[str, Any]:
    return {
        "id": "llm_gateway",
        "nodes": [
            {"id": "start", "type": "start"},
            {
                "id": "chat",
                "type": "llm",
                "config": {
                    "baseUrl": fake.base_url,
                    "model": "fake-model",
                    "apiKey": "k",
                    "prompt": "count for me",
                },
            },
            {"id": "answer", "type": "output", "config": {"value": "{{chat.content}}"}},
        ],
        "edges": [{"source": "start", "target": "chat"}, {"source": "chat", "target": "answer"}],
    }


async def read_events(
    client: httpx.AsyncClient,
    url: str,
    *,
    headers: dict[str, str],
    stop_after_chunks: int | None = None,
) -> list[tuple[int, str, dict[str, Any]]]:
    out: list[tuple[int, str, dict[str, Any]]] = []
    chunks = 0
    async with client.stream(
        "GET", url, headers={"Accept": "text/event-stream", **headers}
    ) as resp:
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
        resp = await client.post(
            "/v1/executions",
            json={"workflow": workflow(fake), "input": {}},
            headers={"Accept": "application/json"},
        )
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
        async with client.stream(
            "POST",
            "/v1/executions",
            json={"workflow": workflow(fake), "input": {}},
            headers={"Accept": "text/event-stream"},
        ) as resp:
            assert resp.status_code == 200
            events = [
                (sse.event, json.loads(sse.data))
                async for sse in EventSource(resp).aiter_sse()
                if sse.data
            ]
        assert [d["content"] for t, d in events if t == "stream:chunk"] == ["Hello", " world"]
        eid = events[0][1]["executionId"]
        nodes = (await client.get(f"/v1/executions/{eid}/nodes")).json()
        (chat,) = [n for n in nodes if n["nodeId"] == "chat"]
        # "Hello world" is 2 cl100k tokens; the prompt is 1 user message of 3 tokens: 3+1+3+3.
        assert chat["tokenUsage"] == {"inputTokens": 10, "outputTokens": 2, "estimated": True}


# --- the live lane: chunks reach subscribers before their (coalesced) commit ----------------------


def _chunk_texts(req: Any) -> list[str]:
    return [json.loads(e.payload_json)["content"] for e in req.events if e.type == "stream:chunk"]


async def _committed_seqs(stack: EmbeddedStack, eid: str) -> set[int]:
    store = dict(stack.services)["state"].store  # type: ignore[attr-defined]
    events, _, _ = await store.read_events(eid, 0, limit=100_000)
    return {e.seq for e in events}


async def test_live_chunks_reach_clients_before_their_commit_and_reconnects_replay_them(
    fake: FakeOpenAI, stack: EmbeddedStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commits whose chunks all went out on the live lane are held back: a client still gets
    those chunks (so they came before their commit); a client reconnecting with Last-Event-ID set
    to a chunk that is not committed yet gets what it missed once the commits land, with no gap
    and no duplicate; and the log read back from the database is exactly what the clients saw
    (ids, types, JSON)."""
    from weft_state import commits
    from weft_state import stream as state_stream

    live: set[str] = set()
    real_publish = state_stream.publish_live

    def spy_publish(store: Any, eid: str, items: Any) -> None:
        live.update(json.loads(d.payload_json)["content"] for _, d in items)
        real_publish(store, eid, items)

    gate = asyncio.Event()
    held: list[list[str]] = []
    real_commit = commits.commit_step

    async def hold(req: Any) -> None:
        texts = _chunk_texts(req)
        if not texts or gate.is_set():
            return
        # The live publish of a commit's last chunks may arrive just after the commit: wait for
        # it while some of them went live (none after 0.1 s: chunks that do not go live).
        for i in range(100):
            if set(texts) <= live:
                held.append(texts)
                await gate.wait()
                return
            if i >= 5 and not set(texts) & live:
                return
            await asyncio.sleep(0.02)

    async def gated_commit(store: Any, req: Any) -> Any:
        await hold(req)
        return await real_commit(store, req)

    monkeypatch.setattr(state_stream, "publish_live", spy_publish)
    monkeypatch.setattr(commits, "commit_step", gated_commit)
    if hasattr(commits, "commit_steps"):  # the cross-execution group commit
        real_commit_steps = commits.commit_steps

        async def gated_commit_steps(store: Any, reqs: Any) -> Any:
            for req in reqs:
                await hold(req)
            return await real_commit_steps(store, reqs)

        monkeypatch.setattr(commits, "commit_steps", gated_commit_steps)

    # Fewer than LIVE_WINDOW chunks: with their commits held, all but the first few go live.
    # They start once client A follows the stream (chunks live before it subscribed would reach
    # it only from the log, i.e. after their held commits).
    words = [f"w{i} " for i in range(50)]
    following = threading.Event()
    fake.reset()
    fake.script(Reply(chunks=words, usage=(3, 50), chunk_delay_s=0.01, start_after=following))
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as client:
        resp = await client.post(
            "/v1/executions",
            json={"workflow": workflow(fake), "input": {}},
            headers={"Accept": "application/json"},
        )
        assert resp.status_code == 202, resp.text
        eid = resp.json()["executionId"]
        url = f"/v1/executions/{eid}/stream"
        seen: list[tuple[int, str, str]] = []  # (id, event, data) as the clients got them
        before_commit: list[int] = []  # chunk ids a client got while they were not committed

        async def follow(headers: dict[str, str], until: Any) -> None:
            async with client.stream(
                "GET", url, headers={"Accept": "text/event-stream", **headers}
            ) as r:
                assert r.status_code == 200
                async for sse in EventSource(r).aiter_sse():
                    if not sse.id:
                        continue
                    following.set()
                    seen.append((int(sse.id), sse.event, sse.data))
                    if (
                        sse.event == "stream:chunk"
                        and not gate.is_set()
                        and int(sse.id) not in await _committed_seqs(stack, eid)
                    ):
                        before_commit.append(int(sse.id))
                    if until():
                        return

        # Client A goes away after a few chunks that are not committed yet...
        await follow({}, lambda: len(before_commit) >= 5)
        cut = seen[-1][0]
        assert cut in before_commit
        # ...and B reconnects from there while those chunks are still not committed. What went
        # out live while nobody listened comes from the log once it is committed.
        rest = asyncio.ensure_future(
            follow({"Last-Event-ID": str(cut)}, lambda: seen[-1][1] == "execution:completed")
        )
        # The provider sends its last chunk (well within CommitStep's 10 s deadline, which the
        # held commits must not reach), then the live lane gets a moment to deliver it.
        for _ in range(250):
            if rest.done() or (fake.requests and fake.requests[-1].finished):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        assert not rest.done()
        committed = await _committed_seqs(stack, eid)
        assert not committed & set(before_commit)  # their commits are still held back
        assert held, "no commit was held back: chunks did not go out on the live lane"
        gate.set()
        await rest

        ids = [s for s, _, _ in seen]
        assert ids == list(range(1, len(ids) + 1))  # no gap, no duplicate, across reconnects
        assert [json.loads(d)["content"] for _, t, d in seen if t == "stream:chunk"] == words
        replay: list[tuple[int, str, str]] = []
        async with client.stream("GET", url, headers={"Accept": "text/event-stream"}) as r:
            async for sse in EventSource(r).aiter_sse():
                if sse.id:
                    replay.append((int(sse.id), sse.event, sse.data))
        assert replay == seen  # live copies are byte for byte the committed events
        status = (await client.get(f"/v1/executions/{eid}")).json()
        assert status["status"] == "SUCCEEDED"
        assert status["outputs"] == {"answer": "".join(words)}


async def test_chunk_persistence_is_coalesced(
    fake: FakeOpenAI, stack: EmbeddedStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """400 chunks back to back cost a handful of commits (every 50 ms or 32 chunks), not 400,
    and an SSE client still gets every one, in order."""
    from weft_state import commits

    chunk_commits: list[int] = []
    real_commit = commits.commit_step

    async def counting_commit(store: Any, req: Any) -> Any:
        texts = _chunk_texts(req)
        if texts:
            chunk_commits.append(len(texts))
        return await real_commit(store, req)

    monkeypatch.setattr(commits, "commit_step", counting_commit)
    words = [f"b{i} " for i in range(400)]
    fake.reset()
    fake.script(Reply(chunks=words, usage=(3, 400)))
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as client:
        async with client.stream(
            "POST",
            "/v1/executions",
            json={"workflow": workflow(fake), "input": {}},
            headers={"Accept": "text/event-stream"},
        ) as resp:
            assert resp.status_code == 200
            events = [
                (int(sse.id), sse.event, json.loads(sse.data))
                async for sse in EventSource(resp).aiter_sse()
                if sse.id
            ]
    assert [d["content"] for _, t, d in events if t == "stream:chunk"] == words
    assert [s for s, _, _ in events] == list(range(1, len(events) + 1))
    assert sum(chunk_commits) == len(words)
    print(f"{len(words)} chunks -> {len(chunk_commits)} commits holding chunks: {chunk_commits}")
    assert len(chunk_commits) <= len(words) // 4, chunk_commits

"""The ``llm`` node inside the real engine (in-memory store): chunks become ``stream:chunk``
events in order and are persisted in batches, retries happen only before the first chunk,
Retry-After is honoured within the retry policy, a broken stream is routable with its partial
content, cancellation hangs up on the provider, and acceptance case 17 passes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from helpers.engine import fake_upstream, load_case, play_case, run_json, start_json
from helpers.fake_openai import FakeOpenAI, Reply


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(fake: FakeOpenAI) -> None:
    fake.reset()


def llm_workflow(fake: FakeOpenAI, *, retry: dict[str, Any] | None = None,
                 error_edge: bool = False, **config: Any) -> dict[str, Any]:
    chat: dict[str, Any] = {"id": "chat", "type": "llm", "config": {
        "baseUrl": fake.base_url, "model": "fake-model", "apiKey": "k",
        "prompt": "say {{start.word}}", **config}}
    if retry:
        chat["retry"] = retry
    nodes = [{"id": "start", "type": "start"}, chat,
             {"id": "answer", "type": "output", "config": {"value": "{{chat}}"}}]
    edges = [{"source": "start", "target": "chat"}, {"source": "chat", "target": "answer"}]
    if error_edge:
        nodes.append({"id": "salvage", "type": "output", "config": {
            "value": {"partial": "{{chat.error.details.partialContent}}",
                      "code": "{{chat.error.code}}"}}})
        edges.append({"source": "chat", "sourceHandle": "error", "target": "salvage"})
    return {"id": "llm_wf", "nodes": nodes, "edges": edges}


def chunk_contents(run: Any) -> list[str]:
    return [e["content"] for e in run.events if e["type"] == "stream:chunk"]


async def test_acceptance_case_17_in_memory() -> None:
    with fake_upstream() as url:
        (run,) = await play_case(load_case("17", url), url)
    assert run.outcome.outputs["answer"]["content"] == "Hello world"
    (log,) = [n for n in run.store.node_logs if n.node_id == "chat"]
    assert log.token_usage == {"inputTokens": 7, "outputTokens": 2, "estimated": False}
    assert run.store.control.token_usage == {"inputTokens": 7, "outputTokens": 2}


async def test_two_thousand_chunks_are_in_order_and_persisted_in_batches(
    fake: FakeOpenAI,
) -> None:
    words = [f"t{i} " for i in range(2000)]
    fake.script(Reply(chunks=words, usage=(9, 2000)))
    run = await run_json(llm_workflow(fake), {"word": "many"}, event_flush_ms=20)
    assert run.outcome is not None and run.outcome.status == "SUCCEEDED"
    assert chunk_contents(run) == words
    types = run.types
    last_chunk = len(types) - 1 - types[::-1].index("stream:chunk")
    assert types[last_chunk + 1] == "stream:done"
    assert types.index("node:completed", last_chunk) > last_chunk
    # Every chunk is durable, yet the store saw a few dozen writes, not one per chunk.
    writes = run.store.commits
    print(f"2000 chunks -> {writes} store writes")
    assert writes < 200, writes


async def test_retries_only_before_the_first_chunk(fake: FakeOpenAI) -> None:
    fake.script(Reply(status=500), Reply(chunks=["fine"]))
    run = await run_json(llm_workflow(fake, retry={"maxAttempts": 3, "initialIntervalMs": 10}),
                         {"word": "x"})
    assert run.outcome is not None and run.outcome.status == "SUCCEEDED"
    assert run.node_events("chat") == ["node:started", "node:retrying", "stream:chunk",
                                       "stream:done", "node:completed"]
    assert chunk_contents(run) == ["fine"]
    assert len(fake.requests) == 2


async def test_401_is_not_retried(fake: FakeOpenAI) -> None:
    fake.script(Reply(status=401), Reply(status=401), Reply(status=401))
    run = await run_json(llm_workflow(fake, retry={"maxAttempts": 3, "initialIntervalMs": 10}),
                         {"word": "x"})
    assert run.outcome is not None and run.outcome.status == "FAILED"
    assert run.outcome.error is not None
    assert (run.outcome.error["code"], run.outcome.error["nodeId"]) == ("LLM_AUTH", "chat")
    assert len(fake.requests) == 1


async def test_429_waits_for_retry_after_within_the_policy(fake: FakeOpenAI) -> None:
    fake.script(Reply(status=429, retry_after="1"), Reply(chunks=["ok"]))
    run = await run_json(llm_workflow(fake, retry={"maxAttempts": 2, "initialIntervalMs": 10}),
                         {"word": "x"})
    assert run.outcome is not None and run.outcome.status == "SUCCEEDED"
    (retrying,) = [e for e in run.events if e["type"] == "node:retrying"]
    assert retrying["delayMs"] == 1000
    first, second = fake.requests
    assert second.started_at - first.started_at >= 0.95


async def test_retry_after_is_capped_by_max_interval(fake: FakeOpenAI) -> None:
    fake.script(Reply(status=429, retry_after="30"), Reply(chunks=["ok"]))
    run = await run_json(llm_workflow(fake, retry={"maxAttempts": 2, "initialIntervalMs": 10,
                                                   "maxIntervalMs": 50}), {"word": "x"})
    assert run.outcome is not None and run.outcome.status == "SUCCEEDED"
    (retrying,) = [e for e in run.events if e["type"] == "node:retrying"]
    assert retrying["delayMs"] == 50


async def test_a_broken_stream_is_routable_with_its_partial_content(fake: FakeOpenAI) -> None:
    fake.script(Reply(chunks=["half ", "an ", "answer"], drop_after=2), Reply(chunks=["again"]))
    run = await run_json(llm_workflow(fake, error_edge=True,
                                      retry={"maxAttempts": 3, "initialIntervalMs": 10}),
                         {"word": "x"})
    assert run.outcome is not None and run.outcome.status == "SUCCEEDED"
    assert run.outcome.outputs == {"salvage": {"partial": "half an ",
                                               "code": "LLM_STREAM_BROKEN"}}
    assert len(fake.requests) == 1  # never retried once chunks went out
    assert chunk_contents(run) == ["half ", "an "]
    assert run.node_events("chat") == ["node:started", "stream:chunk", "stream:chunk",
                                       "node:error"]


async def test_timeout_after_the_first_chunk_is_not_retried(fake: FakeOpenAI) -> None:
    fake.script(Reply(chunks=["a", "b"], stall_after=1), Reply(chunks=["second"]))
    wf = llm_workflow(fake, retry={"maxAttempts": 3, "initialIntervalMs": 10})
    wf["nodes"][1]["timeoutMs"] = 300
    run = await run_json(wf, {"word": "x"})
    assert run.outcome is not None and run.outcome.status == "FAILED"
    assert run.outcome.error is not None and run.outcome.error["nodeId"] == "chat"
    assert len(fake.requests) == 1
    assert chunk_contents(run) == ["a"]
    assert await asyncio.to_thread(fake.wait_for_disconnect, 0, 10.0)


async def test_cancelling_the_execution_hangs_up_on_the_provider(fake: FakeOpenAI) -> None:
    fake.script(Reply(chunks=["x", "y"], stall_after=1))
    run = start_json(llm_workflow(fake), {"word": "x"})
    for _ in range(1000):  # until the first chunk is durable: the stream is open and stalled
        if chunk_contents(run):
            break
        await asyncio.sleep(0.01)
    assert chunk_contents(run) == ["x"]
    run.handle.cancel("user cancelled")
    outcome = await run.wait()
    assert outcome.status == "CANCELLED"
    assert await asyncio.to_thread(fake.wait_for_disconnect, 0, 10.0)
    assert run.node_events("chat")[-1] == "node:cancelled"


async def test_execution_token_totals_add_up_across_llm_nodes(fake: FakeOpenAI) -> None:
    # Two parallel calls (their completions may share one commit) and a third, estimated one.
    def chat(node_id: str) -> dict[str, Any]:
        return {"id": node_id, "type": "llm", "config": {
            "baseUrl": fake.base_url, "model": "m", "apiKey": "k", "prompt": "hello"}}

    fake.responder = lambda body: Reply(chunks=["Hello", " world"], usage=(7, 2))
    fake.script(Reply(), Reply(), Reply(chunks=["Hello", " world"], usage=None))
    wf = {"id": "tokens", "nodes": [
        {"id": "start", "type": "start"}, chat("a"), chat("b"), chat("c"),
        {"id": "done", "type": "output", "config": {"value": "{{c.usage}}"}}],
        "edges": [{"source": "start", "target": "a"}, {"source": "start", "target": "b"},
                  {"source": "a", "target": "c"}, {"source": "b", "target": "c"},
                  {"source": "c", "target": "done"}]}
    run = await run_json(wf, {})
    assert run.outcome is not None and run.outcome.status == "SUCCEEDED", run.outcome
    estimated = run.outcome.outputs["done"]
    assert estimated["estimated"] is True
    want = {"inputTokens": 14 + estimated["inputTokens"], "outputTokens": 4 + 2,
            "estimated": True}
    assert run.store.control.token_usage == want
    assert run.outcome.token_usage == {"inputTokens": want["inputTokens"], "outputTokens": 6}

"""The chat client on its own: read timeouts, odd but valid provider replies, SSE framing."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from helpers.fake_openai import FakeOpenAI, Reply

from weft_executor.handlers.base import NodeFailure
from weft_executor.llm.client import chat
from weft_executor.llm.config import ChatRequest


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def request(base_url: str, *, stream: bool = True) -> ChatRequest:
    return ChatRequest(base_url=base_url, model="m", api_key="k",
                       messages=({"role": "user", "content": "hi"},), stream=stream)


async def test_silence_after_the_first_chunk_is_a_broken_stream(fake: FakeOpenAI) -> None:
    fake.reset()
    fake.script(Reply(chunks=["a", "b"], stall_after=1))
    got: list[str] = []
    async with httpx.AsyncClient() as http:
        with pytest.raises(NodeFailure) as info:
            await chat(http, request(fake.base_url), node_id="n", on_delta=got.append,
                       read_timeout_s=0.3)
    assert got == ["a"]
    assert info.value.code == "LLM_STREAM_BROKEN"
    assert info.value.details == {"partialContent": "a"}
    assert "ReadTimeout" in info.value.message


async def test_silence_before_the_first_chunk_is_retryable(fake: FakeOpenAI) -> None:
    fake.reset()
    fake.script(Reply(chunks=["a"], stall_after=0))
    async with httpx.AsyncClient() as http:
        with pytest.raises(NodeFailure) as info:
            await chat(http, request(fake.base_url), node_id="n", read_timeout_s=0.3)
    assert (info.value.code, info.value.retryable) == ("LLM_CONNECTION", True)


async def test_a_server_that_ignores_stream_still_yields_one_chunk() -> None:
    # A JSON body instead of SSE (some gateways drop `stream`): the content is one chunk.
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={
            "model": "m2", "choices": [{"message": {"content": "whole"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1}})

    got: list[str] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        result = await chat(http, request("http://llm.test/v1"), node_id="n", on_delta=got.append)
    assert got == ["whole"]
    assert (result.content, result.model, result.usage) == ("whole", "m2", result.usage)
    assert result.usage is not None and result.usage.output_tokens == 1


async def test_sse_framing_comments_crlf_and_multiline_events() -> None:
    body = (
        b": keep-alive comment\r\n\r\n"
        b'data: {"model":"x","choices":[{"delta":{"content":"A"}}]}\r\n\r\n'
        b"event: message\n"
        b'data: {"choices":[{"delta":\n'
        b'data: {"content":"B"}}]}\n\n'
        b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    got: list[str] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        result = await chat(http, request("http://llm.test/v1"), node_id="n", on_delta=got.append)
    assert got == ["A", "B"]
    assert (result.content, result.finish_reason, result.model) == ("AB", "stop", "x")
    assert result.usage is None


async def test_an_error_event_mid_stream_is_a_broken_stream() -> None:
    body = (b'data: {"choices":[{"delta":{"content":"par"}}]}\n\n'
            b'data: {"error":{"message":"overloaded"}}\n\n')

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(NodeFailure) as info:
            await chat(http, request("http://llm.test/v1"), node_id="n")
    assert info.value.code == "LLM_STREAM_BROKEN"
    assert "overloaded" in info.value.message
    assert info.value.details == {"partialContent": "par"}


async def test_a_200_that_is_not_a_completion_is_upstream() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"<html>proxy login</html>",
                              headers={"content-type": "text/html"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(NodeFailure) as info:
            await chat(http, request("http://llm.test/v1", stream=False), node_id="n")
    assert (info.value.code, info.value.retryable) == ("LLM_UPSTREAM", True)


async def test_a_server_rejecting_stream_options_is_asked_again_without_them() -> None:
    bodies: list[dict[str, object]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        body = json.loads(req.content)
        bodies.append(body)
        if "stream_options" in body:
            return httpx.Response(400, json={"error": {
                "message": "Unrecognized request argument supplied: stream_options"}})
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=(
            b'data: {"choices":[{"delta":{"content":"ok"},"finish_reason":"stop"}]}\n\n'
            b"data: [DONE]\n\n"))

    got: list[str] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        result = await chat(http, request("http://llm.test/v1"), node_id="n", on_delta=got.append)
    assert [("stream_options" in b) for b in bodies] == [True, False]
    assert got == ["ok"] and result.usage is None  # the handler estimates it


async def test_other_400s_are_not_asked_again() -> None:
    calls = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(400, json={"error": {"message": "max_tokens is too large"}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(NodeFailure) as info:
            await chat(http, request("http://llm.test/v1"), node_id="n")
    assert (info.value.code, calls) == ("LLM_BAD_REQUEST", 1)

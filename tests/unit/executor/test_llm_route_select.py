"""``router`` with ``mode: "llm"``: the model picks a route; its answer is validated."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from helpers.fake_openai import FakeOpenAI, Reply

from weft_common.compiled import CompiledNode
from weft_executor.handlers.base import NodeContext, NodeFailure
from weft_executor.llm.route_select import (
    choose_route,
    parse_route_answer,
    routing_instructions,
    select_route_with_llm,
)
from weft_executor.resolve import ReferenceResolver
from weft_executor.settings import ExecutorSettings

ROUTES = [
    {"id": "billing", "description": "Invoices, refunds and payments"},
    {"id": "tech", "description": "Bugs, errors and outages"},
    {"id": "other"},
]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(fake: FakeOpenAI) -> None:
    fake.reset()


def router_ctx(fake: FakeOpenAI, **extra: Any) -> NodeContext:
    config: dict[str, Any] = {
        "mode": "llm",
        "routes": ROUTES,
        "baseUrl": fake.base_url,
        "model": "router-model",
        "apiKey": "{{env.LLM_KEY}}",
        "prompt": "{{start.message}}",
    }
    config.update(extra)
    roots = {"start": {"message": "I was charged twice, {{env.LLM_KEY}}"}}
    resolver = ReferenceResolver(
        roots.__getitem__, execution_id="e", env_allow=("LLM_",), environ={"LLM_KEY": "sk-router"}
    )
    return NodeContext(
        execution_id="e",
        node=CompiledNode(id="triage", type="router", config=config),
        scope=(),
        attempt=1,
        resolver=resolver,
        idempotency_key="k",
        emit_chunk=lambda _t: None,
        services=SimpleNamespace(
            settings=ExecutorSettings.model_construct(http_allow_private=True)
        ),
    )


async def test_the_model_picks_a_route_from_the_descriptions(fake: FakeOpenAI) -> None:
    fake.script(Reply(chunks=['{"route": "billing"}'], usage=(40, 6)))
    choice = await choose_route(router_ctx(fake))
    assert choice.route == "billing"
    assert choice.usage.to_json() == {"inputTokens": 40, "outputTokens": 6, "estimated": False}
    body = fake.requests[0].body
    assert "stream" not in body  # a single, non-streamed answer
    assert body["temperature"] == 0
    system, user = body["messages"]
    assert system["role"] == "system"
    assert '- "billing": Invoices, refunds and payments' in system["content"]
    assert '- "other"' in system["content"]
    assert '{"route": "<route id>"}' in system["content"]
    # The input is rendered once: template text inside the input is not rendered again.
    assert user == {"role": "user", "content": "I was charged twice, {{env.LLM_KEY}}"}
    assert fake.requests[0].headers["authorization"] == "Bearer sk-router"


async def test_select_route_with_llm_returns_the_id_and_accepts_a_code_fence(
    fake: FakeOpenAI,
) -> None:
    fake.script(Reply(chunks=['```json\n{"route": "tech"}\n```']))
    assert await select_route_with_llm(router_ctx(fake)) == "tech"


async def test_extra_system_instructions_are_appended(fake: FakeOpenAI) -> None:
    fake.script(Reply(chunks=['{"route": "other"}']))
    await select_route_with_llm(router_ctx(fake, system="Prefer tech when unsure."))
    system = fake.requests[0].body["messages"][0]["content"]
    assert system.startswith("You are the router")
    assert system.endswith("Prefer tech when unsure.")


async def test_an_unknown_route_is_route_unknown(fake: FakeOpenAI) -> None:
    fake.script(Reply(chunks=['{"route": "sales"}']))
    with pytest.raises(NodeFailure) as info:
        await select_route_with_llm(router_ctx(fake))
    err = info.value
    assert err.code == "ROUTE_UNKNOWN"
    assert "'sales'" in err.message and "'triage'" in err.message
    assert err.details == {"answer": '{"route": "sales"}', "routes": ["billing", "tech", "other"]}


async def test_malformed_json_is_route_unknown(fake: FakeOpenAI) -> None:
    fake.script(Reply(chunks=["I think billing fits best."]))
    with pytest.raises(NodeFailure) as info:
        await select_route_with_llm(router_ctx(fake))
    assert info.value.code == "ROUTE_UNKNOWN"
    assert info.value.details is not None
    assert info.value.details["answer"] == "I think billing fits best."


async def test_a_provider_error_keeps_its_llm_code(fake: FakeOpenAI) -> None:
    fake.script(Reply(status=429, retry_after="1"))
    with pytest.raises(NodeFailure) as info:
        await select_route_with_llm(router_ctx(fake))
    assert (info.value.code, info.value.details) == ("LLM_RATE_LIMITED", {"retryAfterMs": 1000})


async def test_routes_are_required(fake: FakeOpenAI) -> None:
    with pytest.raises(NodeFailure) as info:
        await select_route_with_llm(router_ctx(fake, routes=[]))
    assert info.value.code == "CONFIG_INVALID"
    assert fake.requests == []


@pytest.mark.parametrize(
    ("answer", "route"),
    [
        ('{"route": "tech"}', "tech"),
        ('  {"route":"other"}\n', "other"),
        ('```\n{"route": "billing"}\n```', "billing"),
    ],
)
def test_parse_route_answer_accepts(answer: str, route: str) -> None:
    assert parse_route_answer("r", answer, ["billing", "tech", "other"]) == route


@pytest.mark.parametrize(
    "answer",
    ["tech", '{"route": "Tech"}', '{"route": 1}', '["tech"]', '{"choice": "tech"}', "", "{"],
)
def test_parse_route_answer_rejects(answer: str) -> None:
    with pytest.raises(NodeFailure) as info:
        parse_route_answer("r", answer, ["billing", "tech", "other"])
    assert info.value.code == "ROUTE_UNKNOWN"


def test_instructions_list_every_route_id_as_json() -> None:
    text = routing_instructions([("a", "first"), ('we"ird', "")])
    assert '- "a": first' in text
    assert '- "we\\"ird"' in text
    assert 'exactly one of: "a", "we\\"ird"' in text

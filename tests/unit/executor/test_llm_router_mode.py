"""The ``router`` node in ``mode: "llm"``, end to end through its handler and validation."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from helpers.fake_openai import FakeOpenAI, Reply

from weft_common.compiled import CompiledNode
from weft_common.workflow import definition_from_json
from weft_dag_builder.compiler import validate_workflow
from weft_executor.handlers import HANDLERS
from weft_executor.handlers.base import NodeContext, NodeFailure
from weft_executor.resolve import ReferenceResolver
from weft_executor.settings import ExecutorSettings


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def router_config(fake: FakeOpenAI) -> dict[str, Any]:
    return {
        "mode": "llm",
        "routes": [
            {"id": "refund", "description": "The customer wants money back"},
            {"id": "other", "description": "Anything else"},
        ],
        "baseUrl": fake.base_url,
        "model": "m",
        "apiKey": "{{env.LLM_KEY}}",
        "prompt": "{{start.text}}",
    }


def ctx_for(config: dict[str, Any]) -> NodeContext:
    resolver = ReferenceResolver(
        {"start": {"text": "please refund me"}}.__getitem__,
        execution_id="e",
        env_allow=("LLM_KEY",),
        environ={"LLM_KEY": "sk-hidden-key"},
    )
    return NodeContext(
        execution_id="e",
        node=CompiledNode(id="pick", type="router", config=config),
        scope=(),
        attempt=1,
        resolver=resolver,
        idempotency_key="k",
        emit_chunk=lambda _t: None,
        services=SimpleNamespace(
            settings=ExecutorSettings.model_construct(http_allow_private=True)
        ),
    )


async def test_router_handler_fires_the_route_the_model_picked(fake: FakeOpenAI) -> None:
    fake.reset()
    fake.script(Reply(chunks=['{"route": "refund"}'], usage=(30, 5)))
    result = await HANDLERS["router"].execute(ctx_for(router_config(fake)))
    assert result.output == {"route": "refund"}
    assert result.handles == ("route:refund",)
    assert result.token_usage == {"inputTokens": 30, "outputTokens": 5, "estimated": False}
    assert result.input is not None and "apiKey" not in result.input
    assert "sk-hidden-key" not in repr(result.input)
    assert fake.requests[0].body["messages"][-1] == {"role": "user", "content": "please refund me"}


async def test_router_handler_unknown_answer_is_a_routable_failure(fake: FakeOpenAI) -> None:
    fake.reset()
    fake.script(Reply(chunks=['{"route": "escalate"}']))
    with pytest.raises(NodeFailure) as info:
        await HANDLERS["router"].execute(ctx_for(router_config(fake)))
    assert info.value.code == "ROUTE_UNKNOWN"
    assert info.value.to_error("pick")["details"]["answer"] == '{"route": "escalate"}'


def _workflow(router: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "wf",
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "pick", "type": "router", "config": router},
            {"id": "a", "type": "output", "config": {"value": 1}},
            {"id": "b", "type": "output", "config": {"value": 2}},
        ],
        "edges": [
            {"source": "start", "target": "pick"},
            {"source": "pick", "sourceHandle": "route:refund", "target": "a"},
            {"source": "pick", "sourceHandle": "route:other", "target": "b"},
        ],
    }


def test_an_llm_router_validates_without_select(fake: FakeOpenAI) -> None:
    diags = validate_workflow(definition_from_json(_workflow(router_config(fake))))
    assert diags == []


def test_an_llm_router_needs_a_model_and_an_input(fake: FakeOpenAI) -> None:
    cfg = router_config(fake)
    del cfg["model"], cfg["prompt"]
    diags = validate_workflow(definition_from_json(_workflow(cfg)))
    fields = {(d.node_id, d.field) for d in diags}
    assert ("pick", "config.model") in fields
    assert ("pick", "config.messages") in fields


def test_an_expression_router_still_needs_select(fake: FakeOpenAI) -> None:
    cfg = {"routes": [{"id": "refund"}, {"id": "other"}]}
    diags = validate_workflow(definition_from_json(_workflow(cfg)))
    assert any(d.node_id == "pick" and d.field == "config.select" for d in diags)

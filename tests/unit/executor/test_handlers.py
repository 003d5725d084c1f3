"""Handlers run directly: a NodeContext over a ReferenceResolver and a dict of roots."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

import weft_executor.handlers  # noqa: F401  (registers the built-in handlers)
from weft_common.compiled import CompiledNode
from weft_executor.handlers.base import HANDLERS, NodeContext, NodeFailure, NodeResult
from weft_executor.resolve import ReferenceResolver
from weft_executor.settings import ExecutorSettings


def ctx_for(
    node_type: str,
    config: dict[str, Any] | None = None,
    roots: dict[str, Any] | None = None,
    *,
    node_id: str = "n",
    settings: ExecutorSettings | None = None,
    **fields: Any,
) -> NodeContext:
    data = dict(roots or {})

    def lookup(name: str) -> Any:
        return data[name]

    resolver = ReferenceResolver(lookup, execution_id="ex-1", env_allow=())
    return NodeContext(
        execution_id="ex-1",
        node=CompiledNode(id=node_id, type=node_type, config=config or {}),
        scope=(),
        attempt=1,
        resolver=resolver,
        idempotency_key=f"ex-1:{node_id}",
        emit_chunk=lambda _c: None,
        services=SimpleNamespace(settings=settings) if settings else None,
        **fields,
    )


async def run(ctx: NodeContext) -> NodeResult:
    return await HANDLERS[ctx.node.type].execute(ctx)


def test_all_builtin_types_are_registered() -> None:
    for t in (
        "start",
        "transform",
        "condition",
        "router",
        "http",
        "wait",
        "approval",
        "setVariable",
        "output",
        "fail",
    ):
        assert t in HANDLERS, t
        assert HANDLERS[t].type == t


# ------------------------------------------------------------------- start


async def test_start_outputs_the_input() -> None:
    res = await run(ctx_for("start", roots={"input": {"orderId": 7}}))
    assert res.output == {"orderId": 7}
    assert res.handles == ("out",)


async def test_start_prefers_the_input_the_engine_hands_in_extras() -> None:
    res = await run(ctx_for("start", extras={"input": {"a": 1}}))
    assert res.output == {"a": 1}


async def test_start_validates_against_the_input_schema_and_names_the_field() -> None:
    schema = {
        "type": "object",
        "required": ["orderId"],
        "properties": {"orderId": {"type": "integer"}},
    }
    ok = await run(
        ctx_for("start", roots={"input": {"orderId": 1}}, extras={"input_schema": schema})
    )
    assert ok.output == {"orderId": 1}
    with pytest.raises(NodeFailure) as missing:
        await run(ctx_for("start", roots={"input": {}}, extras={"input_schema": schema}))
    assert missing.value.code == "INPUT_INVALID" and "orderId" in missing.value.message
    assert missing.value.retryable is False
    with pytest.raises(NodeFailure) as wrong:
        await run(ctx_for("start", {"inputSchema": schema}, roots={"input": {"orderId": "x"}}))
    assert wrong.value.code == "INPUT_INVALID" and "$.orderId" in wrong.value.message


# -------------------------------------------------------------- transform


async def test_transform_evaluates_its_expression() -> None:
    res = await run(ctx_for("transform", {"expression": "start.x + 1"}, {"input": {"x": 3}}))
    assert res.output == 4 and type(res.output) is int


async def test_transform_without_expression_names_the_field() -> None:
    with pytest.raises(NodeFailure) as info:
        await run(ctx_for("transform", {}, node_id="t1"))
    assert info.value.code == "CONFIG_INVALID"
    assert "t1" in info.value.message and "expression" in info.value.message


# -------------------------------------------------------------- condition

BRANCHES = {
    "branches": [
        {"id": "big", "when": "start.total > 100"},
        {"id": "mid", "when": "start.total > 10"},
        {"id": "else"},
    ]
}


@pytest.mark.parametrize(("total", "branch"), [(150, "big"), (50, "mid"), (5, "else")])
async def test_condition_fires_the_first_true_branch_or_else(total: int, branch: str) -> None:
    res = await run(ctx_for("condition", BRANCHES, {"input": {"total": total}}))
    assert res.output == {"branch": branch}
    assert res.handles == (f"condition:{branch}",)


async def test_condition_else_is_a_fallback_even_when_listed_first() -> None:
    config = {"branches": [{"id": "else"}, {"id": "yes", "when": "true"}]}
    res = await run(ctx_for("condition", config))
    assert res.output == {"branch": "yes"}


async def test_condition_with_no_true_branch_and_no_else_fires_nothing() -> None:
    config = {"branches": [{"id": "a", "when": "false"}, {"id": "b", "when": "0"}]}
    res = await run(ctx_for("condition", config))
    assert res.output == {"branch": None}
    assert res.handles == ()


async def test_condition_uses_jsonata_truthiness_and_absent_roots() -> None:
    config = {
        "branches": [
            {"id": "ran", "when": "$exists(maybe)"},
            {"id": "empty", "when": "''"},
            {"id": "list", "when": "start.items"},
        ]
    }
    res = await run(ctx_for("condition", config, {"input": {"items": [1]}}))
    assert res.output == {"branch": "list"}


# ----------------------------------------------------------------- router

ROUTES = {
    "routes": [{"id": "a"}, {"id": "b", "description": "B"}, {"id": "c"}],
    "select": "start.kind",
}


async def test_router_fires_the_selected_route() -> None:
    res = await run(ctx_for("router", ROUTES, {"input": {"kind": "b"}}))
    assert res.output == {"route": "b"}
    assert res.handles == ("route:b",)


async def test_router_unknown_route_fails_with_route_unknown() -> None:
    with pytest.raises(NodeFailure) as info:
        await run(ctx_for("router", ROUTES, {"input": {"kind": "zzz"}}, node_id="pick"))
    err = info.value
    assert err.code == "ROUTE_UNKNOWN" and err.retryable is False
    assert "zzz" in err.message and "pick" in err.message
    with pytest.raises(NodeFailure):
        await run(ctx_for("router", ROUTES, {"input": {}}))


# -------------------------------------------------------- output, variables, fail


async def test_output_renders_its_value_and_reports_its_name() -> None:
    res = await run(ctx_for("output", {"value": "{{b}}"}, {"b": 8}, node_id="out"))
    assert res.output == 8
    assert res.input == {"name": "out", "value": 8}
    named = await run(ctx_for("output", {"value": "n={{b}}", "name": "total"}, {"b": 8}))
    assert named.output == "n=8" and named.input["name"] == "total"


async def test_set_variable_assigns_rendered_values() -> None:
    config = {"assign": {"count": "{{var.count}}", "label": "c={{var.count}}", "fixed": [1]}}
    res = await run(ctx_for("setVariable", config, {"var": {"count": 2}}))
    assert res.output == {"count": 2, "label": "c=2", "fixed": [1]}
    assert res.variables == res.output


async def test_set_variable_needs_assignments() -> None:
    with pytest.raises(NodeFailure) as info:
        await run(ctx_for("setVariable", {"assign": {}}))
    assert info.value.code == "CONFIG_INVALID"


async def test_fail_raises_with_message_and_code() -> None:
    with pytest.raises(NodeFailure) as info:
        await run(
            ctx_for(
                "fail", {"message": "kaput {{start.id}}", "code": "E_TEST"}, {"input": {"id": 9}}
            )
        )
    assert (info.value.message, info.value.code, info.value.retryable) == (
        "kaput 9",
        "E_TEST",
        False,
    )
    with pytest.raises(NodeFailure) as default:
        await run(ctx_for("fail", {"message": "kaput"}))
    assert default.value.code == "FAIL"
    assert default.value.to_error("boom") == {"message": "kaput", "code": "FAIL", "nodeId": "boom"}


# ------------------------------------------------------------------- wait


async def test_short_wait_sleeps_and_reports_the_time_waited() -> None:
    started = time.perf_counter()
    res = await run(ctx_for("wait", {"durationMs": 120}))
    elapsed = (time.perf_counter() - started) * 1000
    assert res.pause is None
    assert 120 <= res.output["waitedMs"] <= elapsed + 5
    assert elapsed >= 115


async def test_short_wait_is_cancellable() -> None:
    task = asyncio.create_task(run(ctx_for("wait", {"durationMs": 20_000})))
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.perf_counter() - started < 1


async def test_long_wait_parks_durably_and_finishes_on_resume() -> None:
    settings = ExecutorSettings.model_construct(durable_wait_threshold_ms=1000)
    before = time.time()
    res = await run(ctx_for("wait", {"durationMs": 60_000}, settings=settings))
    assert res.pause is not None
    assert res.pause.wake_at is not None
    assert before + 60 <= res.pause.wake_at <= time.time() + 60
    # Resumed after the wake time: the engine passes when the node first started.
    first_start = time.time() - 61
    resumed = await run(
        ctx_for(
            "wait",
            {"durationMs": 60_000},
            settings=settings,
            resumed=True,
            extras={"started_at": first_start},
        )
    )
    assert resumed.pause is None
    assert 61_000 <= resumed.output["waitedMs"] < 62_000


async def test_resumed_wait_without_start_time_reports_the_requested_duration() -> None:
    res = await run(ctx_for("wait", {"durationMs": 60_000}, resumed=True))
    assert res.output == {"waitedMs": 60_000}


async def test_wait_until_in_the_past_returns_at_once_and_far_future_parks() -> None:
    res = await run(ctx_for("wait", {"until": "2001-01-01T00:00:00Z"}))
    assert res.pause is None and res.output["waitedMs"] < 100
    far = await run(ctx_for("wait", {"until": "2999-01-01T00:00:00+02:00"}))
    assert far.pause is not None
    assert far.pause.wake_at == pytest.approx(32472136800.0)


async def test_wait_rejects_bad_config() -> None:
    for config in ({}, {"durationMs": "soon"}, {"until": "tomorrow"}, {"durationMs": -5}):
        with pytest.raises(NodeFailure) as info:
            await run(ctx_for("wait", config))
        assert info.value.code == "CONFIG_INVALID"


# --------------------------------------------------------------- approval


async def test_approval_parks_with_reason_and_schema_then_outputs_the_resume_input() -> None:
    schema = {"type": "object", "required": ["approved"]}
    config = {"reason": "approve order {{start.id}}", "inputSchema": schema}
    first = await run(ctx_for("approval", config, {"input": {"id": 4}}))
    assert first.pause is not None
    assert first.pause.reason == "approve order 4"
    assert first.pause.input_schema == schema
    assert first.pause.wake_at is None
    resumed = await run(
        ctx_for(
            "approval", config, {"input": {"id": 4}}, resumed=True, resume_input={"approved": True}
        )
    )
    assert resumed.pause is None
    assert resumed.output == {"approved": True}


# ------------------------------------------------------- node-log inputs


async def test_handlers_record_what_they_decided_on() -> None:
    cond = await run(ctx_for("condition", BRANCHES, {"input": {"total": 50}}))
    assert cond.input == {
        "branches": [
            {"id": "big", "when": "start.total > 100", "value": False},
            {"id": "mid", "when": "start.total > 10", "value": True},
        ]
    }
    routed = await run(ctx_for("router", ROUTES, {"input": {"kind": "c"}}))
    assert routed.input == {"select": "start.kind", "value": "c"}
    tr = await run(ctx_for("transform", {"expression": "1 + 1"}))
    assert tr.input == {"expression": "1 + 1"}
    waited = await run(ctx_for("wait", {"until": "2001-01-01T00:00:00Z"}))
    assert waited.input == {"wakeAt": "2001-01-01T00:00:00.000+00:00"}

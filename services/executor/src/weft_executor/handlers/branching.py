"""``condition`` and ``router``: pick which outgoing handle fires.

``condition`` evaluates its branches' ``when`` expressions in order and fires the first true one;
a branch without ``when`` is the else branch, taken only when no other branch is true. With no
true branch and no else, no condition handle fires and all its edges die.

``router`` evaluates ``select`` to a route id and fires ``route:<id>``; an id not among
``routes`` fails the node with ``ROUTE_UNKNOWN``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from weft_common.jsonutil import dumps

from .. import expressions
from ..llm.route_select import choose_route
from ._config import config_of, require
from .base import NodeContext, NodeFailure, NodeResult, register

__all__ = ["ConditionHandler", "RouterHandler"]


def _ids(items: Any, ctx: NodeContext, field: str) -> list[dict[str, Any]]:
    if not isinstance(items, list) or not items:
        raise NodeFailure(
            f"{ctx.node.type} node {ctx.node.id!r}: config.{field} must be a non-empty list",
            code="CONFIG_INVALID",
            retryable=False,
        )
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            raise NodeFailure(
                f"{ctx.node.type} node {ctx.node.id!r}: config.{field}[{i}] needs an id",
                code="CONFIG_INVALID",
                retryable=False,
            )
        out.append(item)
    return out


class ConditionHandler:
    type: ClassVar[str] = "condition"

    async def execute(self, ctx: NodeContext) -> NodeResult:
        branches = _ids(config_of(ctx).get("branches"), ctx, "branches")
        fallback: str | None = None
        # The node log's input: each evaluated `when` with its value, for "why this branch?".
        checked: list[dict[str, Any]] = []
        for branch in branches:
            when = branch.get("when")
            if when is None or when == "":
                if fallback is None:
                    fallback = branch["id"]
                continue
            value = ctx.resolver.evaluate(when) if isinstance(when, str) else when
            checked.append({"id": branch["id"], "when": when, "value": value})
            if expressions.is_truthy(value):
                return _taken(branch["id"], checked)
        if fallback is not None:
            return _taken(fallback, checked)
        return NodeResult(output={"branch": None}, handles=(), input={"branches": checked})


def _taken(branch_id: str, checked: list[dict[str, Any]]) -> NodeResult:
    return NodeResult(
        output={"branch": branch_id},
        handles=(f"condition:{branch_id}",),
        input={"branches": checked},
    )


class RouterHandler:
    type: ClassVar[str] = "router"

    async def execute(self, ctx: NodeContext) -> NodeResult:
        config = config_of(ctx)
        if config.get("mode") == "llm":  # the model picks the route: weft_executor.llm
            return await _route_by_llm(ctx)
        if config.get("mode", "expression") not in ("expression", "select", None):
            raise NodeFailure(
                f"router node {ctx.node.id!r}: mode {config.get('mode')!r} is not available "
                "in this executor",
                code="CONFIG_INVALID",
                retryable=False,
            )
        routes = _ids(config.get("routes"), ctx, "routes")
        selected = ctx.resolver.evaluate(require(ctx, "select"))
        known = [r["id"] for r in routes]
        route = _route_id(selected)
        if route is None or route not in known:
            raise NodeFailure(
                f"router node {ctx.node.id!r}: select gave {dumps(selected)}, not one of the "
                f"routes {dumps(known)}",
                code="ROUTE_UNKNOWN",
                details={"selected": selected, "routes": known},
                retryable=False,
            )
        return NodeResult(
            output={"route": route},
            handles=(f"route:{route}",),
            input={"select": config.get("select"), "value": selected},
        )


def _route_id(selected: Any) -> str | None:
    """A route id from ``select``'s value: a string, or an integer for ids like "1"."""
    if isinstance(selected, str):
        return selected
    if isinstance(selected, int) and not isinstance(selected, bool):
        return str(selected)
    return None


async def _route_by_llm(ctx: NodeContext) -> NodeResult:
    choice = await choose_route(ctx)
    return NodeResult(
        output={"route": choice.route},
        handles=(f"route:{choice.route}",),
        token_usage=choice.usage.to_json(),
        input=choice.input,
    )


register(ConditionHandler())
register(RouterHandler())

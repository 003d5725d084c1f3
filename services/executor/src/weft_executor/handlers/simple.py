"""``output``, ``setVariable`` and ``fail``: nodes that only render their config."""

from __future__ import annotations

from typing import Any, ClassVar

from weft_common.jsonutil import dumps

from ._config import config_of
from .base import NodeContext, NodeFailure, NodeResult, register

__all__ = ["FailHandler", "OutputHandler", "SetVariableHandler", "output_name"]


def output_name(ctx: NodeContext) -> str:
    """The key of an ``output`` node in the execution's outputs (``name``, default: node id)."""
    name = config_of(ctx).get("name")
    return name if isinstance(name, str) and name else ctx.node.id


class OutputHandler:
    type: ClassVar[str] = "output"

    async def execute(self, ctx: NodeContext) -> NodeResult:
        value = ctx.resolver.render(config_of(ctx).get("value"))
        return NodeResult(output=value, input={"name": output_name(ctx), "value": value})


class SetVariableHandler:
    type: ClassVar[str] = "setVariable"

    async def execute(self, ctx: NodeContext) -> NodeResult:
        assign = config_of(ctx).get("assign")
        if not isinstance(assign, dict) or not assign:
            raise NodeFailure(
                f"setVariable node {ctx.node.id!r}: config.assign must be an object of "
                "variable name → value",
                code="CONFIG_INVALID",
                retryable=False,
            )
        values: dict[str, Any] = {}
        for name, value in assign.items():
            if not isinstance(name, str) or not name:
                raise NodeFailure(
                    f"setVariable node {ctx.node.id!r}: variable names must be non-empty strings",
                    code="CONFIG_INVALID",
                    retryable=False,
                )
            values[name] = ctx.resolver.render(value)
        return NodeResult(output=values, variables=dict(values), input=values)


class FailHandler:
    type: ClassVar[str] = "fail"

    async def execute(self, ctx: NodeContext) -> NodeResult:
        config = config_of(ctx)
        message = ctx.resolver.render(config.get("message"))
        if message is None or message == "":
            message = f"fail node {ctx.node.id!r} failed"
        elif not isinstance(message, str):
            message = dumps(message)
        code = ctx.resolver.render(config.get("code")) or "FAIL"
        raise NodeFailure(message, code=str(code), retryable=False)


register(OutputHandler())
register(SetVariableHandler())
register(FailHandler())

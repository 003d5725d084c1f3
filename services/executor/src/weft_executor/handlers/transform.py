"""``transform``: the value of a JSONata ``expression``."""

from __future__ import annotations

from typing import ClassVar

from ._config import require
from .base import NodeContext, NodeResult, register

__all__ = ["TransformHandler"]


class TransformHandler:
    type: ClassVar[str] = "transform"

    async def execute(self, ctx: NodeContext) -> NodeResult:
        expression = require(ctx, "expression")
        return NodeResult(
            output=ctx.resolver.evaluate(expression), input={"expression": expression}
        )


register(TransformHandler())

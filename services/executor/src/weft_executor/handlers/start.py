"""``start``: the execution input, validated against the workflow's ``inputSchema`` when given."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, ClassVar

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

from weft_common.jsonutil import dumps_canonical, loads

from ._config import config_of
from .base import NodeContext, NodeFailure, NodeResult, register

__all__ = ["StartHandler", "schema_error", "validator"]


@lru_cache(maxsize=512)
def _validator(canonical: str) -> Validator:
    schema = loads(canonical)
    cls = validator_for(schema, default=Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


def validator(schema: dict[str, Any]) -> Validator:
    """A cached validator for a JSON Schema (raises SchemaError for an invalid schema)."""
    return _validator(dumps_canonical(schema))


def schema_error(schema: dict[str, Any], value: Any) -> str | None:
    """None when ``value`` matches ``schema``; else one message naming the offending field."""
    err = best_match(validator(schema).iter_errors(value))
    if err is None:
        return None
    where = err.json_path  # "$", "$.orderId", "$.lines[0].qty"
    return f"{where}: {err.message}" if where != "$" else err.message


class StartHandler:
    type: ClassVar[str] = "start"

    async def execute(self, ctx: NodeContext) -> NodeResult:
        if "input" in ctx.extras:
            value = ctx.extras["input"]
        else:
            value = ctx.resolver.render("{{input}}")
        schema = ctx.extras.get("input_schema") or config_of(ctx).get("inputSchema")
        if schema:
            try:
                problem = schema_error(dict(schema), value)
            except SchemaError as exc:
                raise NodeFailure(
                    f"the workflow's inputSchema is not a valid JSON Schema: {exc.message}",
                    code="INPUT_SCHEMA_INVALID",
                    retryable=False,
                ) from None
            if problem is not None:
                raise NodeFailure(
                    f"input does not match the workflow's inputSchema: {problem}",
                    code="INPUT_INVALID",
                    retryable=False,
                )
        return NodeResult(output=value, input=value)


register(StartHandler())

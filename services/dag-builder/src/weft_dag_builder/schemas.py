"""JSON Schemas in a definition (the workflow's ``inputSchema``, an approval's
``config.inputSchema``) must themselves be valid, so a bad schema is a diagnostic at compile time
rather than a failed node at run time. Same dialect choice as the executor: the schema's
``$schema``, else draft 2020-12."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from .diagnostics import Code, DiagnosticSink
from .limits import Limits

__all__ = ["check_schema"]


def _depth_within(value: Any, limit: int) -> bool:
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return True


def check_schema(
    schema: Any, *, field: str, owner: str, node_id: str, sink: DiagnosticSink, limits: Limits
) -> None:
    """Report ``schema`` when it is not a valid JSON Schema (``owner`` names it in messages)."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        sink.add(Code.INVALID_SCHEMA, f"{owner}: {field} must be a JSON Schema object",
                 node_id=node_id, field=field)
        return
    if not _depth_within(schema, limits.max_config_depth):
        sink.add(Code.VALUE_TOO_LARGE, f"{owner}: {field} is nested deeper than "
                 f"{limits.max_config_depth} levels", node_id=node_id, field=field)
        return
    try:
        validator_for(schema, default=Draft202012Validator).check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        at = f" at {field}/{where}" if where else ""
        sink.add(Code.INVALID_SCHEMA, f"{owner}: {field} is not a valid JSON Schema{at}: {exc.message}",
                 node_id=node_id, field=field)
    except RecursionError:
        sink.add(Code.VALUE_TOO_LARGE, f"{owner}: {field} is too deeply nested to check",
                 node_id=node_id, field=field)

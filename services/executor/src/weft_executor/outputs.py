"""Values the engine assembles: a body's result, a node output's size check, item lists."""

from __future__ import annotations

from typing import Any

import orjson

from .frames import Frame
from .handlers.base import NodeFailure

__all__ = ["check_output_size", "collection_items", "count_value", "frame_result"]


def frame_result(frame: Frame, exits: tuple[str, ...]) -> Any:
    """An iteration's/branch's result: its exit's output, or ``{exitId: output}`` for several
    exits (exits that did not run are left out; a single exit that did not run gives null)."""
    if len(exits) == 1:
        return frame.outputs.get(exits[0])
    return {e: frame.outputs[e] for e in exits if e in frame.outputs}


def check_output_size(node_id: str, value: Any, limit: int) -> None:
    """Fail with ``OUTPUT_TOO_LARGE`` when the JSON form of ``value`` exceeds ``limit`` bytes."""
    if value is None or isinstance(value, (bool, int, float)):
        return
    try:
        size = len(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))
    except TypeError as exc:
        raise NodeFailure(
            f"node {node_id}: output is not JSON ({exc})", "OUTPUT_INVALID", retryable=False
        ) from None
    if limit and size > limit:
        raise NodeFailure(
            f"node {node_id}: output is {size} bytes, over the limit of {limit} "
            "(WEFT_MAX_OUTPUT_BYTES)",
            "OUTPUT_TOO_LARGE",
            retryable=False,
        )


def collection_items(node_id: str, field: str, value: Any) -> list[Any]:
    """``forEach``/``collection`` items: an array as is, an object as ``{key, value}`` sorted by key."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            pass
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [{"key": k, "value": value[k]} for k in sorted(value)]
    raise NodeFailure(
        f"node {node_id}: config.{field} must be an array or an object, got "
        f"{type(value).__name__ if value is not None else 'null'}",
        "INVALID_CONFIG",
        retryable=False,
    )


def count_value(node_id: str, field: str, value: Any) -> int:
    """A non-negative integer count from a config value (templates already rendered)."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            pass
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise NodeFailure(
            f"node {node_id}: config.{field} must be a non-negative integer, got {value!r}",
            "INVALID_CONFIG",
            retryable=False,
        )
    return value

"""Compact, fast JSON for payloads that cross service boundaries (outputs, events, configs)."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["dumps", "dumps_bytes", "dumps_canonical", "loads"]

_OPTS = orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> str:
    """Compact JSON text (no spaces), as SPEC section 2 renders values inside text."""
    return orjson.dumps(value, option=_OPTS).decode()


def dumps_bytes(value: Any) -> bytes:
    return orjson.dumps(value, option=_OPTS)


def loads(text: str | bytes | None) -> Any:
    """Parse JSON; empty text is None (proto3 leaves unset strings empty)."""
    if not text:
        return None
    return orjson.loads(text)


def dumps_canonical(value: Any) -> str:
    """Compact JSON with sorted keys: the same value always gives the same bytes."""
    return orjson.dumps(value, option=_OPTS | orjson.OPT_SORT_KEYS).decode()

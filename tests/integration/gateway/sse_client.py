"""A minimal SSE reader for tests: frames as dicts, comments kept (heartbeats are comments)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx


async def frames(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Yields {"id", "event", "data"} per event and {"comment": text} per comment line."""
    current: dict[str, Any] = {}
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                current["data"] = json.loads("\n".join(data))
                yield current
            current, data = {}, []
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            else:
                current[name] = value


async def read_events(response: httpx.Response) -> list[dict[str, Any]]:
    return [f async for f in frames(response) if "data" in f]

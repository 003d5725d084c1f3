"""A small async client of the Weft HTTP API (SPEC section 6) for the CLI."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["ApiClient", "ApiError", "ConnectionFailed", "SseEvent"]


class ConnectionFailed(Exception):
    """Nothing answers at the gateway URL."""


class ApiError(Exception):
    """A problem+json answer: ``status``, ``detail`` and (invalid workflows) ``diagnostics``."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body if isinstance(body, dict) else {"detail": str(body)}
        self.detail = str(self.body.get("detail") or self.body.get("title") or f"HTTP {status}")
        self.diagnostics: Any = self.body.get("diagnostics")
        super().__init__(f"HTTP {status}: {self.detail}")


@dataclass(frozen=True, slots=True)
class SseEvent:
    id: str | None
    type: str
    data: dict[str, Any]


class ApiClient:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self.http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers,
            timeout=httpx.Timeout(timeout, read=None),
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        try:
            resp = await self.http.request(
                method, path, json=body, params={k: v for k, v in params.items() if v is not None}
            )
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"cannot reach the Weft gateway at {self.base_url}: {exc}") from None
        return _decode(resp)

    async def alive(self) -> bool:
        try:
            resp = await self.http.get("/healthz", timeout=2.0)
        except httpx.TransportError:
            return False
        return resp.status_code == 200

    async def events(self, method: str, path: str, body: Any = None,
                     last_event_id: int | None = None) -> AsyncIterator[SseEvent | str]:
        """SSE frames as SseEvent; the execution id (from the response header) first, as a str."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        try:
            async with self.http.stream(method, path, json=body, headers=headers) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    _decode(resp)
                yield resp.headers.get("weft-execution-id", "")
                async for event in parse_sse(resp.aiter_lines()):
                    yield event
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"connection to the Weft gateway at {self.base_url} failed: {exc}") from None


async def parse_sse(lines: AsyncIterator[str]) -> AsyncIterator[SseEvent]:
    event_id: str | None = None
    event_type = "message"
    data: list[str] = []
    async for line in lines:
        if line == "":
            if data:
                yield SseEvent(event_id, event_type, json.loads("\n".join(data)))
            event_id, event_type, data = None, "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "id":
            event_id = value
        elif name == "event":
            event_type = value


def _decode(resp: httpx.Response) -> Any:
    try:
        body = resp.json() if resp.content else None
    except ValueError:
        body = resp.text
    if resp.status_code >= 400:
        raise ApiError(resp.status_code, body)
    return body

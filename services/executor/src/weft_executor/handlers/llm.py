"""The ``llm`` node: one OpenAI-compatible Chat Completions call, streamed by default.

Each content delta is emitted at once through ``ctx.emit_chunk`` (the engine turns it into a
``stream:chunk`` event) while the same deltas accumulate into the output
``{content, finishReason, usage: {inputTokens, outputTokens, estimated}, model}``. Usage comes
from the provider (``stream_options.include_usage``) or, when it sends none, from a tokenizer
estimate (``estimated: true``). The node log records the request without the API key.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..llm.client import chat, http_client_for
from ..llm.config import chat_request_from_config
from ..llm.usage import estimate_usage
from .base import NodeContext, NodeResult, register

__all__ = ["LLMHandler"]


class LLMHandler:
    type: ClassVar[str] = "llm"

    async def execute(self, ctx: NodeContext) -> NodeResult:
        cfg = ctx.resolver.render(dict(ctx.node.config))
        req = chat_request_from_config(ctx.node.id, cfg)
        result = await chat(
            http_client_for(ctx),
            req,
            node_id=ctx.node.id,
            on_delta=ctx.emit_chunk if req.stream else None,
        )
        usage = result.usage or await estimate_usage(req.messages, result.content)
        output: dict[str, Any] = {
            "content": result.content,
            "finishReason": result.finish_reason,
            "usage": usage.to_json(),
            "model": result.model,
        }
        return NodeResult(output=output, token_usage=usage.to_json(), input=req.public_input())


register(LLMHandler())

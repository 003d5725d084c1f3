"""``router`` with ``mode: "llm"``: a model picks the route from the routes' descriptions.

Config (templates are rendered here, once): ``routes`` [{id, description?}], ``baseUrl``,
``model``, ``apiKey``, the text to route in ``prompt`` (or a ``messages`` list), optional
``system`` (extra instructions appended to the routing instructions), ``temperature`` (default
0) and ``maxTokens``. The call is not streamed. The model must answer the JSON object
``{"route": "<id>"}`` (a Markdown code fence around it is tolerated); anything else, or an id not
in ``routes``, fails the node with ``ROUTE_UNKNOWN`` (routable; retryable, since another sample
may answer well) with the answer in ``details.answer``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from weft_common.jsonutil import dumps, loads

from ..handlers.base import NodeContext, NodeFailure
from .client import chat, http_client_for
from .config import CONFIG_INVALID, chat_request_from_config
from .usage import Usage, estimate_usage

__all__ = ["ROUTE_UNKNOWN", "RouteChoice", "choose_route", "parse_route_answer",
           "routing_instructions", "select_route_with_llm"]

ROUTE_UNKNOWN = "ROUTE_UNKNOWN"
_FENCE = re.compile(r"^```[a-zA-Z]*\s*(.*?)\s*```$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class RouteChoice:
    route: str
    usage: Usage
    model: str
    answer: str
    input: dict[str, Any]  # the request without the API key (for the node log)


def _routes(node_id: str, cfg: Mapping[str, Any]) -> list[tuple[str, str]]:
    raw = cfg.get("routes")
    if not isinstance(raw, list) or not raw:
        raise NodeFailure(f"router node {node_id!r}: config.routes must be a non-empty list",
                          CONFIG_INVALID, retryable=False)
    out: list[tuple[str, str]] = []
    for i, r in enumerate(raw):
        if not isinstance(r, Mapping) or not isinstance(r.get("id"), str) or not r["id"]:
            raise NodeFailure(f"router node {node_id!r}: config.routes[{i}] must be "
                              "{id, description?}", CONFIG_INVALID, retryable=False)
        desc = r.get("description")
        out.append((r["id"], desc if isinstance(desc, str) else ("" if desc is None
                                                                 else dumps(desc))))
    return out


def routing_instructions(routes: list[tuple[str, str]]) -> str:
    """The system prompt: the routes, and the exact answer format."""
    lines = [
        "You are the router of a workflow. Read the input and choose the one route that fits "
        "it best.",
        "",
        "Routes:",
    ]
    for rid, desc in routes:
        lines.append(f"- {dumps(rid)}: {desc}" if desc else f"- {dumps(rid)}")
    ids = ", ".join(dumps(rid) for rid, _ in routes)
    lines += [
        "",
        'Answer with a single JSON object and nothing else: {"route": "<route id>"}, where '
        f"<route id> is exactly one of: {ids}.",
    ]
    return "\n".join(lines)


def parse_route_answer(node_id: str, answer: str, route_ids: list[str]) -> str:
    """The route id in the model's answer, or ``NodeFailure(ROUTE_UNKNOWN)``."""
    text = answer.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    obj: Any = None
    try:
        obj = loads(text)
    except ValueError:
        obj = None
    route = obj.get("route") if isinstance(obj, dict) else None
    if isinstance(route, str) and route in route_ids:
        return route
    shown = answer if len(answer) <= 500 else answer[:500] + "…"
    if isinstance(route, str):
        why = f"the model chose route {route!r}, which is not one of {route_ids}"
    else:
        why = f'the model did not answer {{"route": "<id>"}} (answer: {shown!r})'
    raise NodeFailure(f"router node {node_id!r}: {why}", ROUTE_UNKNOWN,
                      details={"answer": shown, "routes": route_ids}, retryable=True)


async def choose_route(ctx: NodeContext, config: Mapping[str, Any] | None = None) -> RouteChoice:
    """Ask the model; ``config`` is the node's config as written (default ``ctx.node.config``),
    rendered here exactly once so that text from the input is never rendered again."""
    node_id = ctx.node.id
    cfg = dict(ctx.resolver.render(dict(config if config is not None else ctx.node.config)))
    routes = _routes(node_id, cfg)
    instructions = routing_instructions(routes)
    extra = cfg.get("system")
    cfg["system"] = instructions + (f"\n\n{extra}" if isinstance(extra, str) and extra else "")
    cfg.setdefault("temperature", 0)
    cfg["stream"] = False
    req = chat_request_from_config(node_id, cfg)
    result = await chat(http_client_for(ctx), req, node_id=node_id)
    route = parse_route_answer(node_id, result.content, [rid for rid, _ in routes])
    usage = result.usage or await estimate_usage(req.messages, result.content)
    return RouteChoice(route=route, usage=usage, model=result.model, answer=result.content,
                       input=req.public_input())


async def select_route_with_llm(ctx: NodeContext, config: Mapping[str, Any] | None = None) -> str:
    """The route id the model picked (see ``choose_route`` for usage and the raw answer)."""
    return (await choose_route(ctx, config)).route

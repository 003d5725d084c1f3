"""``wait`` and ``approval``: nodes that may park the execution (SPEC sections 3 and 4).

A short ``wait`` sleeps in place (cancellable). One longer than
``ExecutorSettings.durable_wait_threshold_ms`` returns ``Pause(wake_at=...)`` so no worker is held;
the engine runs the node again with ``ctx.resumed`` once ``wake_at`` has passed. An ``approval``
parks on its first run and outputs the (already validated) resume input when resumed.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any, ClassVar

from ._config import config_of, settings_of
from .base import NodeContext, NodeFailure, NodeResult, Pause, register

__all__ = ["ApprovalHandler", "WaitHandler"]


def _invalid(ctx: NodeContext, message: str) -> NodeFailure:
    return NodeFailure(
        f"wait node {ctx.node.id!r}: {message}", code="CONFIG_INVALID", retryable=False
    )


def _parse_until(ctx: NodeContext, value: Any) -> float:
    if not isinstance(value, str):
        raise _invalid(ctx, f"config.until must be an RFC 3339 time, got {value!r}")
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise _invalid(ctx, f"config.until is not an RFC 3339 time: {value!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _wake_at(ctx: NodeContext, started: float) -> tuple[float, int | None]:
    """Epoch seconds to wake at, and the requested duration in ms when given as ``durationMs``."""
    config = config_of(ctx)
    if config.get("until") not in (None, ""):
        return _parse_until(ctx, ctx.resolver.render(config["until"])), None
    raw = ctx.resolver.render(config.get("durationMs"))
    if raw is None or isinstance(raw, bool):
        raise _invalid(ctx, "config.durationMs or config.until is required")
    try:
        duration_ms = int(float(raw))
    except (TypeError, ValueError):
        raise _invalid(ctx, f"config.durationMs must be a number, got {raw!r}") from None
    if duration_ms < 0:
        raise _invalid(ctx, f"config.durationMs must not be negative, got {duration_ms}")
    return started + duration_ms / 1000.0, duration_ms


def _rfc3339(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


class WaitHandler:
    type: ClassVar[str] = "wait"

    async def execute(self, ctx: NodeContext) -> NodeResult:
        now = time.time()
        # When the engine tells us when this node first started (epoch seconds), a resumed
        # durable wait reports the real elapsed time and finishes an early wake-up in place.
        started = ctx.extras.get("started_at")
        first_start = float(started) if isinstance(started, (int, float)) else now
        wake_at, duration_ms = _wake_at(ctx, first_start)
        known_start = isinstance(started, (int, float))
        if ctx.resumed and duration_ms is not None and not known_start:
            # Woken by the engine at wake_at; without the first start time there is no remainder
            # to compute, so trust the wake-up.
            wake_at = now
        remaining_ms = (wake_at - now) * 1000.0
        threshold = settings_of(ctx).durable_wait_threshold_ms
        if not ctx.resumed and remaining_ms > threshold:
            return NodeResult(
                pause=Pause(reason="wait", wake_at=wake_at), input={"wakeAt": _rfc3339(wake_at)}
            )
        if remaining_ms > 0:
            await asyncio.sleep(remaining_ms / 1000.0)
        if ctx.resumed and not known_start and duration_ms is not None:
            waited = duration_ms
        else:
            waited = round((time.time() - first_start) * 1000)
        return NodeResult(output={"waitedMs": waited}, input={"wakeAt": _rfc3339(wake_at)})


class ApprovalHandler:
    type: ClassVar[str] = "approval"

    async def execute(self, ctx: NodeContext) -> NodeResult:
        if ctx.resumed:
            return NodeResult(output=ctx.resume_input, input=ctx.resume_input)
        config = config_of(ctx)
        reason = ctx.resolver.render(config.get("reason"))
        schema = config.get("inputSchema")
        if schema is not None and not isinstance(schema, dict):
            raise NodeFailure(
                f"approval node {ctx.node.id!r}: config.inputSchema must be a JSON Schema object",
                code="CONFIG_INVALID",
                retryable=False,
            )
        text = reason if isinstance(reason, str) else ("" if reason is None else str(reason))
        return NodeResult(
            pause=Pause(reason=text, input_schema=dict(schema) if schema else None),
            input={"reason": text, "inputSchema": schema},
        )


register(WaitHandler())
register(ApprovalHandler())

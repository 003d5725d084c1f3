"""Running one node run's handler: attempts, per-attempt timeout, retries with backoff.

Builds the ``NodeContext`` the handler sees and turns whatever ends an attempt into a
``NodeResult`` or a ``NodeFailure`` (``TIMEOUT``, ``HANDLER_ERROR``, ``OUTPUT_TOO_LARGE``, the
handler's own codes). ``node:retrying`` events go between attempts. Cancellation by the engine
propagates; nothing here touches the graph or the journal beyond those events.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from weft_common._telemetry_state import flags
from weft_common.logging_setup import LOG_IDS

from .frames import Frame, NodeRun
from .handlers.base import HANDLERS, NodeContext, NodeFailure, NodeResult, Resolver
from .outputs import check_output_size
from .tracing import run_attempt

if TYPE_CHECKING:
    from .execution import ExecutionRun

__all__ = ["run_attempts"]

log = logging.getLogger(__name__)


async def run_attempts(ex: ExecutionRun, run: NodeRun) -> NodeResult | NodeFailure:
    """Run ``run``'s handler until it succeeds, parks, or fails for good (retries spent)."""
    node = run.node
    handler = HANDLERS.get(node.type)
    if handler is None:
        return NodeFailure(
            f"node {node.id}: no handler for node type {node.type!r}",
            "UNKNOWN_NODE_TYPE",
            retryable=False,
        )
    policy = node.retry
    timeout = node.timeout_ms / 1000 if node.timeout_ms else None
    resume = run.resume
    attempt = run.attempt if resume is not None and run.attempt else 0
    resolver = _LazyResolver(ex, run.frame)
    idempotency_key = f"{ex.execution_id}:{run.key}"

    def emit_chunk(content: str) -> None:
        ex.chunk(run, content)

    while True:
        attempt += 1
        run.attempt = attempt
        # Positional (twice as cheap as keywords, once per attempt): execution_id, node, scope,
        # attempt, resolver, idempotency_key, emit_chunk, resume_input, resumed, services.
        ctx = NodeContext(
            ex.execution_id,
            node,
            run.frame.scope,
            attempt,
            resolver,
            idempotency_key,
            emit_chunk,
            resume.input if resume is not None else None,
            resume is not None,
            ex.engine.services,
        )
        if node.id == ex.dag.start_node:
            ctx.extras["input"] = ex.input
            ctx.extras["input_schema"] = ex.dag.input_schema
        if resume is not None:
            ctx.extras["started_at"] = run.started_at
        chunks_before = run.chunks
        # The attempt's ids on every log record in it (the handler's, the failure line below),
        # whatever the telemetry: one ContextVar set (the node span, 3rd item, is kept; the node
        # run, 4th, is what tracing makes the attempt's span of).
        ids = (ex.execution_id, node.id, LOG_IDS.get()[2], run)
        log_ids = LOG_IDS.set(ids)
        try:
            if timeout is None and not (flags.tracing or flags.metrics):
                result = await handler.execute(ctx)  # what run_attempt does then, a level less
            else:
                result = await run_attempt(handler, ctx, timeout, ids)  # in the node's span
            if result.pause is None:
                check_output_size(node.id, result.output, ex.max_output)
            return result
        except NodeFailure as exc:
            failure = exc
        except TimeoutError:
            failure = NodeFailure(
                f"node {node.id}: attempt {attempt} timed out after {node.timeout_ms} ms",
                "TIMEOUT",
            )
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # we (or the loop) cancelled it
            # The handler raised CancelledError on its own: that node's failure, not a hang.
            failure = NodeFailure(f"node {node.id}: the handler was cancelled", "HANDLER_ERROR")
        except Exception as exc:
            log.exception("node %s (%s) handler raised", node.id, node.type)
            failure = NodeFailure(f"node {node.id}: {type(exc).__name__}: {exc}", "HANDLER_ERROR")
        finally:
            LOG_IDS.reset(log_ids)
        if not failure.retryable or attempt >= policy.max_attempts:
            return failure
        if run.chunks > chunks_before:
            # This attempt already streamed chunks to subscribers (llm): a retry would show
            # them a second answer, so a failure after the first chunk is final.
            return failure
        delay_ms = _retry_delay_ms(policy, attempt, failure)
        ex.event(
            "node:retrying",
            run=run,
            payload={"attempt": attempt, "error": failure.to_error(node.id), "delayMs": delay_ms},
        )
        await asyncio.sleep(delay_ms / 1000)


class _LazyResolver:
    """Builds the node run's reference resolver on first use (most nodes of a chain never do)."""

    __slots__ = ("_ex", "_frame", "_real")

    def __init__(self, ex: ExecutionRun, frame: Frame) -> None:
        self._ex = ex
        self._frame = frame
        self._real: Resolver | None = None

    def _get(self) -> Resolver:
        if self._real is None:
            self._real = self._ex.resolver_for(self._frame)
        return self._real

    def render(self, value: Any) -> Any:
        return self._get().render(value)

    def evaluate(self, expression: str) -> Any:
        return self._get().evaluate(expression)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)


def _retry_delay_ms(policy: Any, attempt: int, failure: NodeFailure) -> float:
    """The policy's backoff, or longer when the failure says when to come back (an LLM
    provider's 429 ``Retry-After`` as ``details.retryAfterMs``), capped by ``maxIntervalMs``."""
    delay: float = policy.delay_ms(attempt)
    after = (failure.details or {}).get("retryAfterMs")
    if isinstance(after, int | float) and not isinstance(after, bool) and after > delay:
        delay = (
            min(float(after), policy.max_interval_ms) if policy.max_interval_ms else float(after)
        )
    return delay

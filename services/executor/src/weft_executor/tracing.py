"""Telemetry of the engine: a span and a duration per node attempt, the trace context an
execution keeps across pauses, and the execution counters.

Everything goes through ``weft_common.telemetry_spans`` / ``telemetry_metrics``: with telemetry
off each call is a flag check. The engine calls ``run_attempt`` instead of ``handler.execute``;
the worker opens a span per run of an execution with ``begin_execution_run`` (a continuation,
e.g. after a pause, starts a new trace linked to the first run's) and closes it with
``end_execution_run``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from contextvars import ContextVar
from time import perf_counter, time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan

from weft_common import jsonutil
from weft_common._telemetry_state import flags
from weft_common.telemetry_metrics import (
    drain_node_durations,
    metrics,
    record_node_duration,
    watch_ready_queue,
)
from weft_common.telemetry_spans import (
    _NO_SPAN,  # (attempt_span's "nothing to record")
    LEAN_FLUSH_AT,
    LeanRun,
    UnsampledRun,
    arm_flush_timer,
    attempt_span,
    current_context,
    current_traceparent,
    execution_span,
    flush_node_spans,
    lean_flush_timer,
    lean_pending,
    link_from_str,
    record_llm_usage,
    record_node_status,
)

from .handlers.base import NodeContext, NodeFailure, NodeHandler, NodeResult
from .records import NodeStatus, StepRecord

__all__ = [
    "TRACE_STEP_KEY",
    "begin_execution_run",
    "count_finished",
    "creation_trace_context",
    "end_execution_run",
    "record_commit",
    "remember_start_context",
    "run_attempt",
    "stored_traceparent_json",
    "trace_step",
    "track_run",
]


# The step that keeps the first run's span context (a ``RUNNING`` decision step: replayed, never
# executed), so a resume days later on another executor can link to that trace.
TRACE_STEP_KEY = "#trace"


_NO_IDS: tuple[Any, ...] = (None, None, None, None)


async def run_attempt(
    handler: NodeHandler,
    ctx: NodeContext,
    timeout_s: float | None,
    ids: tuple[Any, ...] = _NO_IDS,
) -> NodeResult:
    """``handler.execute(ctx)`` (bounded by ``timeout_s``) inside the attempt's span.

    Called by ``attempts.run_attempts`` inside the attempt's log ids ``ids`` (``LOG_IDS``: the
    execution and node ids, the enclosing node span, the node run; set before and reset after).
    A lean span, the common case, is kept as a record on the node run (``_run_recorded``); for a
    node's first attempt outside other node spans the node run itself is the record: nothing is
    made or drawn for the span unless the node's code asks for it. Otherwise the span is an
    ``attempt_span`` (none at all in a run that sampling left out)."""
    measure = flags.metrics
    scope: Any = None
    if flags.tracing:
        run = current_context()
        if type(run) is LeanRun and run.bits is not None:
            node_run = ids[3]
            if node_run is not None and node_run.span is None:
                outer = ids[2]
                if (
                    outer is None
                    and node_run.attempt == 1
                    and node_run.resume is None
                    and ids[0] == run.execution_id
                ):
                    record: Any = run  # the node run is the attempt's record
                else:  # a start record (telemetry_spans.LeanRecord)
                    if outer is not None and outer._run is not run:
                        outer = None  # (a node_span's, else the parent is the run's span)
                    node = ctx.node
                    record = (
                        node.id,
                        node.type,
                        ctx.scope,
                        ctx.attempt,
                        ctx.execution_id,
                        run.bits(64) or run.sink.new_span_id(),
                        time_ns(),
                        outer,
                    )
                return await _run_recorded(handler, ctx, timeout_s, run, node_run, record, measure)
        elif type(run) is UnsampledRun:  # a run sampling left out: no span to record
            if not measure:
                return await _execute(handler, ctx, timeout_s)
            scope = _NO_SPAN
    elif not measure:
        return await _execute(handler, ctx, timeout_s)
    node = ctx.node
    started = perf_counter() if measure else 0.0
    status = "FAILED"
    if scope is None:
        scope = attempt_span(node.id, node.type, ctx.scope, ctx.attempt, ctx.execution_id)
    try:
        with scope as span:
            try:
                result = await _execute(handler, ctx, timeout_s)
                if result.pause is None and not result.token_usage:
                    status = "SUCCEEDED"  # the attempt span's own default: nothing to record
                else:
                    status = _record_outcome(result, span)
            except BaseException as exc:
                status = _record_failure(exc, span)
                raise
    finally:
        if measure:
            record_node_duration(perf_counter() - started, node.type, status)
    return result


async def _execute(handler: NodeHandler, ctx: NodeContext, timeout_s: float | None) -> NodeResult:
    """``handler.execute(ctx)``, bounded by ``timeout_s`` if any (``_run_recorded``, the common
    path, spells it out)."""
    if timeout_s is None:
        return await handler.execute(ctx)
    async with asyncio.timeout(timeout_s):
        return await handler.execute(ctx)


async def _run_recorded(
    handler: NodeHandler,
    ctx: NodeContext,
    timeout_s: float | None,
    run: Any,
    node_run: Any,
    record: Any,
    measure: bool,
) -> NodeResult:
    """``run_attempt`` for a lean attempt span kept as a record (``telemetry_spans.LeanRecord``):
    ``node_run.span`` is ``record`` while the attempt runs (the run context: the node run is the
    record; else a start record), the span ``telemetry_spans`` made of it if the node's code
    asked for the current span, and ``None`` after. The attempt ends as a record ``(run,
    node_run or start record, end)`` if it succeeded with nothing else to record, else as its
    span."""
    node_run.span = record
    started = perf_counter() if measure else 0.0
    try:
        if timeout_s is None:
            result = await handler.execute(ctx)
        else:
            async with asyncio.timeout(timeout_s):
                result = await handler.execute(ctx)
    except BaseException as exc:
        span = run.node_run_span(node_run)
        node_run.span = None
        status = _record_failure(exc, span)
        span.__exit__(type(exc), exc, exc.__traceback__)
        if measure:
            record_node_duration(perf_counter() - started, ctx.node.type, status, run.plain)
        raise
    end = time_ns()
    if result.pause is None and not result.token_usage:
        status = "SUCCEEDED"  # the span's default: nothing to record
        made = node_run.span
    else:
        made = run.node_run_span(node_run)
        status = _record_outcome(result, made)
    node_run.span = None
    pending = lean_pending
    if made is record:
        pending.append((run, node_run if record is run else record, end))
    else:  # its span, made meanwhile
        made._end_time = end
        pending.append(made)
    if len(pending) >= LEAN_FLUSH_AT:
        flush_node_spans()
    elif not lean_flush_timer[0]:
        arm_flush_timer()
    if measure:
        record_node_duration(perf_counter() - started, ctx.node.type, status, run.plain, end)
    return result


def _record_failure(exc: BaseException, span: Any) -> str:
    """The status of an attempt that raised ``exc``, recorded on its span (none for an error of
    the handler's own: the span records the exception); the attempt's status for the metrics."""
    if isinstance(exc, NodeFailure):
        record_node_status("FAILED", error_code=exc.code, error_message=exc.message, span=span)
    elif isinstance(exc, TimeoutError):
        record_node_status("FAILED", error_code="TIMEOUT", span=span)
    elif isinstance(exc, asyncio.CancelledError):
        record_node_status("CANCELLED", span=span)
        return "CANCELLED"
    return "FAILED"


def _record_outcome(result: NodeResult, span: Any) -> str:
    """A paused attempt's status, an LLM attempt's model and tokens; the attempt's status."""
    status = "SUCCEEDED"
    if result.pause is not None:
        status = "PAUSED"
        record_node_status(status, span=span)
    if result.token_usage:
        output = result.output
        model = output.get("model", "") if isinstance(output, dict) else ""
        record_llm_usage(
            str(model or ""),
            int(result.token_usage.get("inputTokens") or 0),
            int(result.token_usage.get("outputTokens") or 0),
            span=span,
        )
    return status


def trace_step(start_node: str) -> StepRecord | None:
    """The step recording the current (first-run) span context; None with tracing off."""
    traceparent = current_traceparent()
    if not traceparent:
        return None
    return StepRecord(
        key=TRACE_STEP_KEY,
        node_id=start_node,
        scope=(),
        status=NodeStatus.RUNNING,
        data={"traceparent": traceparent},
    )


# The execution-run scope open in this task (the worker's task per execution).
_current_run: ContextVar[Any] = ContextVar("weft_execution_run", default=None)

# StartExecution's trace context per new execution, until this worker's claim loop picks the
# execution up (it usually does: the new execution is announced to the claimers at once), so the
# first run joins the caller's trace. Bounded: entries of executions claimed elsewhere age out.
_START_CONTEXTS: OrderedDict[str, Context] = OrderedDict()
_START_CONTEXTS_MAX = 4096


def remember_start_context(execution_id: str) -> None:
    """Called by ``StartExecution`` once the execution exists: its first run, wherever this
    worker starts it from, becomes a child of the current (request) span."""
    if not flags.tracing:
        return
    _START_CONTEXTS[execution_id] = otel_context.get_current()
    while len(_START_CONTEXTS) > _START_CONTEXTS_MAX:
        _START_CONTEXTS.popitem(last=False)


def creation_trace_context() -> str:
    """The ``traceparent`` to store with a new execution (``CreateExecutionRequest.trace_context``)
    so its first run continues the creator's trace on whichever executor claims it; "" with
    tracing off or outside a span."""
    if not flags.tracing:
        return ""
    return current_traceparent()


def _creator_context(trace_context: str) -> Context | None:
    """The context of a stored creator ``traceparent`` (a remote parent), None when unusable."""
    link = link_from_str(trace_context)
    if link is None:
        return None
    return trace.set_span_in_context(NonRecordingSpan(link.context), Context())


def begin_execution_run(
    execution_id: str,
    workflow_id: str,
    *,
    first_run: bool,
    stored_traceparent: str = "",
    trace_context: str = "",
) -> None:
    """Open the span of one run of an execution in the current task (the worker's task for this
    execution; ended by ``end_execution_run`` in the same task). Everything the engine starts
    from this task (node runs, commits) nests under it.

    A first run is a child of the call that created the execution: the ``StartExecution``
    context this worker remembered (``remember_start_context``), else ``trace_context``, the
    creator's ``traceparent`` stored with the execution (``LoadExecutionResponse.trace_context``:
    the execution was created through another replica), else a new trace. A continuation (after a
    pause, a take-over) is always a new trace, linked to ``stored_traceparent``. The ambient
    context is never used: a task spawned from another execution's run must not nest under it.
    """
    started_by = _START_CONTEXTS.pop(execution_id, None) if _START_CONTEXTS else None
    if first_run and started_by is None and trace_context and flags.tracing:
        started_by = _creator_context(trace_context)
    # This task's own context: replaced for good, nothing to restore.
    otel_context.attach(started_by if first_run and started_by is not None else Context())
    if first_run:
        if flags.metrics:
            metrics.executions_started.add(1)
        scope = execution_span(execution_id, workflow_id)
    else:
        scope = execution_span(
            execution_id, workflow_id, links=[link_from_str(stored_traceparent)], resumed=True
        )
    scope.__enter__()
    _current_run.set((scope, asyncio.current_task()))


def end_execution_run() -> None:
    """End the run span ``begin_execution_run`` opened in this task (no-op otherwise)."""
    entry = _current_run.get()
    if entry is not None and entry[1] is asyncio.current_task():
        _current_run.set(None)
        if flags.metrics:
            drain_node_durations()  # the run's node durations are recorded by its end
        entry[0].__exit__(None, None, None)


def stored_traceparent_json(steps: Iterable[Any]) -> str:
    """The first run's context from loaded steps (proto ``StepRecord``s with ``data_json``)."""
    for step in steps:
        if step.key == TRACE_STEP_KEY and step.data_json:
            try:
                return str(jsonutil.loads(step.data_json).get("traceparent") or "")
            except (ValueError, AttributeError):
                return ""
    return ""


_TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})


def count_finished(status: str) -> None:
    """``weft.executions.finished`` for a run that ended the execution (not a pause)."""
    if flags.metrics and status in _TERMINAL:
        metrics.executions_finished.add(1, {"status": status})


# Executions running in this process, for the ready-queue gauge (read only when metrics are
# collected: nothing per node).
_LIVE_RUNS: weakref.WeakSet[Any] = weakref.WeakSet()


def track_run(run: Any) -> None:
    """Count ``run.ready`` (a sized queue of runnable nodes) in ``weft.ready_queue.depth``."""
    _LIVE_RUNS.add(run)


def _ready_depth() -> int:
    return sum(len(run.ready) for run in list(_LIVE_RUNS))


watch_ready_queue(_ready_depth)


def record_commit(seconds: float) -> None:
    """``weft.commit.duration`` of one successful ``CommitStep`` round trip (retries included)."""
    if flags.metrics:
        metrics.commit_duration.record(seconds, {"side": "executor"})

"""The engine's span helpers: one span per execution run and per node attempt, and span links.

Made for the hot path. With tracing off each helper is a flag check plus the log-context ids (one
``ContextVar.set``); with tracing on it is one SDK span, except under a trace that sampling left
out, where node spans are skipped altogether. Attribute names:

- ``weft.execution.id``, ``weft.workflow.id``, ``weft.execution.resumed``
- ``weft.node.id``, ``weft.node.type``, ``weft.node.scope`` (``"loop:2/par:0"``),
  ``weft.node.attempt``, ``weft.node.status``, ``weft.error.code``
- LLM nodes: ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``

A resumed execution (days later, maybe on another executor) starts a new trace and *links* to
the original one: persist ``span_context_to_str()`` when the execution first runs, and pass
``links=[link_from_str(stored)]`` to ``execution_span`` when it resumes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from ._telemetry_state import flags
from .logging_setup import log_context

__all__ = [
    "current_traceparent",
    "execution_span",
    "format_scope",
    "link_from_str",
    "node_span",
    "record_llm_usage",
    "record_node_status",
    "span_context_to_str",
]

_tracer = trace.get_tracer("weft.engine")

ScopeLike = str | Sequence[Any]


def format_scope(scope: ScopeLike) -> str:
    """``"each_line:2/branches:0"`` from a scope: a string (kept), entries with ``.container`` and
    ``.index``, mappings ``{"container", "index"}``, or ``(container, index)`` pairs."""
    if isinstance(scope, str):
        return scope
    parts = []
    entry: Any
    for entry in scope:
        if isinstance(entry, Mapping):
            parts.append(f"{entry['container']}:{entry['index']}")
        elif isinstance(entry, tuple):
            parts.append(f"{entry[0]}:{entry[1]}")
        else:
            parts.append(f"{entry.container}:{entry.index}")
    return "/".join(parts)


class _UntracedScope(log_context):
    """Tracing off: only the log ids; ``as span`` gets the shared non-recording span."""

    __slots__ = ()

    def __enter__(self) -> Span:  # type: ignore[override]
        log_context.__enter__(self)
        return trace.INVALID_SPAN


class _TracedScope:
    """Starts a span, makes it current, sets the log ids; ends it all on exit (class, not a
    generator, because it runs once per node attempt)."""

    __slots__ = ("_attrs", "_links", "_log", "_name", "_span", "_token")

    def __init__(
        self,
        name: str,
        attrs: dict[str, Any],
        links: Sequence[Link] | None,
        log: log_context,
    ) -> None:
        self._name = name
        self._attrs = attrs
        self._links = links
        self._log = log
        self._span: Span | None = None
        self._token: object = None

    def __enter__(self) -> Span:
        span = _tracer.start_span(
            self._name,
            kind=SpanKind.INTERNAL,
            attributes=self._attrs,
            links=self._links,
            record_exception=False,
            set_status_on_exception=False,
        )
        self._span = span
        self._token = otel_context.attach(trace.set_span_in_context(span))
        self._log.__enter__()
        return span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self._span
        assert span is not None
        try:
            if exc is not None:
                if isinstance(exc, asyncio.CancelledError):
                    span.set_attribute("weft.cancelled", True)
                else:
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            span.end()
        finally:
            self._log.__exit__(exc_type, exc, tb)
            otel_context.detach(self._token)  # type: ignore[arg-type]


def _sampled_out() -> bool:
    """The enclosing trace was not sampled: its children would not be either (parent-based
    sampling, the default), so skip building them; the context still propagates."""
    ctx = trace.get_current_span().get_span_context()
    return ctx.is_valid and not ctx.trace_flags.sampled


def execution_span(
    execution_id: str,
    workflow_id: str = "",
    *,
    links: Iterable[Link | None] = (),
    resumed: bool = False,
) -> _TracedScope | _UntracedScope:
    """Context manager around one run of an execution (first run or a resume).

    ``links`` accepts ``None`` entries (``link_from_str`` of a missing value) and drops them.
    """
    if not flags.tracing:
        return _UntracedScope(execution_id=execution_id)
    log = log_context(execution_id=execution_id)
    attrs: dict[str, Any] = {"weft.execution.id": execution_id}
    if workflow_id:
        attrs["weft.workflow.id"] = workflow_id
    if resumed:
        attrs["weft.execution.resumed"] = True
    kept = [link for link in links if link is not None]
    return _TracedScope("execution " + (workflow_id or execution_id), attrs, kept or None, log)


def node_span(
    node_id: str,
    node_type: str,
    scope: ScopeLike = (),
    attempt: int = 1,
    *,
    execution_id: str | None = None,
) -> _TracedScope | _UntracedScope:
    """Context manager around one node attempt; a child of the current (execution) span.

    ``as span`` gives the span (a non-recording one with tracing off); set the outcome with
    ``record_node_status``.
    """
    if not flags.tracing or _sampled_out():
        return _UntracedScope(execution_id=execution_id, node_id=node_id)
    log = log_context(execution_id=execution_id, node_id=node_id)
    attrs: dict[str, Any] = {
        "weft.node.id": node_id,
        "weft.node.type": node_type,
        "weft.node.attempt": attempt,
    }
    if scope:
        attrs["weft.node.scope"] = format_scope(scope)
    if execution_id:
        attrs["weft.execution.id"] = execution_id
    return _TracedScope(f"{node_type} {node_id}", attrs, None, log)


def record_node_status(
    status: str, *, error_code: str = "", error_message: str = "", span: Span | None = None
) -> None:
    """Sets ``weft.node.status`` (and the error) on ``span`` or the current span."""
    if not flags.tracing:
        return
    target = span if span is not None else trace.get_current_span()
    if not target.is_recording():
        return
    target.set_attribute("weft.node.status", status)
    if error_code:
        target.set_attribute("weft.error.code", error_code)
    if status == "FAILED":
        target.set_status(Status(StatusCode.ERROR, error_message or error_code or None))


def record_llm_usage(
    model: str, input_tokens: int, output_tokens: int, *, span: Span | None = None
) -> None:
    """Model and token counts on the current (node) span, and the ``weft.llm.tokens`` counter."""
    if flags.metrics:
        from .telemetry_metrics import metrics

        metrics.llm_tokens.add(input_tokens, {"model": model, "direction": "input"})
        metrics.llm_tokens.add(output_tokens, {"model": model, "direction": "output"})
    if not flags.tracing:
        return
    target = span if span is not None else trace.get_current_span()
    if target.is_recording():
        target.set_attribute("gen_ai.request.model", model)
        target.set_attribute("gen_ai.usage.input_tokens", input_tokens)
        target.set_attribute("gen_ai.usage.output_tokens", output_tokens)


def span_context_to_str(span_context: SpanContext | None = None) -> str:
    """The W3C ``traceparent`` form of a span context (default: the current span's); "" when
    there is none. Store it with the execution to link a later resume to this trace."""
    ctx = span_context if span_context is not None else trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return ""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def current_traceparent() -> str:
    """The current span's ``traceparent`` ("" when there is no valid span)."""
    return span_context_to_str()


def link_from_str(value: str | None, attributes: Mapping[str, Any] | None = None) -> Link | None:
    """A span link to a context stored by ``span_context_to_str``; ``None`` for "" or junk."""
    if not value:
        return None
    parts = value.split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id = int(parts[1], 16)
        span_id = int(parts[2], 16)
        trace_flags = TraceFlags(int(parts[3], 16))
    except ValueError:
        return None
    ctx = SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace_flags)
    if not ctx.is_valid:
        return None
    return Link(ctx, dict(attributes) if attributes else None)

"""The engine's span helpers: one span per execution run and per node attempt, and span links.

Made for the hot path. With tracing off each helper is a flag check plus the log-context ids (one
``ContextVar.set``). With tracing on, the execution span is an SDK span; node attempt spans are
*lean* under it (see "Lean node spans" below), and skipped altogether under a trace that sampling
left out. Attribute names:

- ``weft.execution.id``, ``weft.workflow.id``, ``weft.execution.resumed``
- ``weft.node.id``, ``weft.node.type``, ``weft.node.scope`` (``"loop:2/par:0"``),
  ``weft.node.attempt``, ``weft.node.status``, ``weft.error.code``
- LLM nodes: ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``

A resumed execution (days later, maybe on another executor) starts a new trace and *links* to
the original one: persist ``span_context_to_str()`` when the execution first runs, and pass
``links=[link_from_str(stored)]`` to ``execution_span`` when it resumes.

Lean node spans. An SDK span costs tens of microseconds of Python (sampler, locks, attribute
validation, processor calls), several times what the engine spends on a no-op node. Inside an
execution span, when the provider is the SDK's with the default parent-based sampling, a node
attempt is recorded as a ``_NodeSpan``: a span id from the provider's id generator (the SDK's
``random.getrandbits``), two ``time_ns()`` stamps, and the attribute values as the engine gave
them. It is a real span all the same:

- it is an ``opentelemetry.trace.Span`` while it runs: the current span inside the node (through
  the run's context, ``_RunContext``, which answers the node span for the task that runs it and
  the tasks it starts), so outbound httpx/LLM requests and gRPC calls made in the node get CLIENT
  spans parented to it and carry its ``traceparent``, and log records carry its span id. The
  engine's attempts set nothing for that: the engine already set the attempt's log ids, whose
  fourth item is its node run, where ``weft_executor.tracing.run_attempt`` keeps the attempt's
  record (see ``LeanRecord``); ``attempt_span``, for other callers, registers the span in its run
  under the ids tuple (see ``_AttemptSpan``);
- it is an SDK ``ReadableSpan`` once ended: ended spans are handed to the provider's span
  processors in bulk (``flush_node_spans``: every 512 spans, when the execution span ends, within
  a second otherwise, at exit), a ``BatchSpanProcessor`` getting them in one ``extendleft`` of its
  queue (what its ``on_end`` does span by span), any other processor through ``on_end``. Their
  ``SpanContext``, parent, name and attribute dict are made on first read (by the exporter, in
  its thread). The normal batch processor and exporters (OTLP) export them like any span.

An engine attempt that nothing looks at while it runs (no outbound call, log line or recorded
status in it: most of them) is not even an object until it must be: it is kept as a *lean record*
(see ``LeanRecord``; for a node's first attempt, the node run itself: nothing is drawn or stamped
for it), which an exporter declaring ``weft_lean_records`` (Weft's OTLP exporter) encodes as it
is, and which every other processor or exporter gets as the ``_AttemptSpan`` made from it.

Differences from an SDK span: processors' ``on_start`` (and the SDK-internal ``_on_ending``) are
not called for node spans, and only the attribute value length limit
(``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``) of the span limits is applied (a node span has a handful of
attributes). Any other sampler or provider gets SDK spans.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import traceback
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from itertools import repeat, starmap
from time import time_ns
from types import MappingProxyType, TracebackType
from typing import Any, Protocol, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import (
    Event,
    ReadableSpan,
    SynchronousMultiSpanProcessor,
    TracerProvider,
)
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation import _SPAN_KEY

try:  # the SDK's batching core (1.33+): the bulk hand-over fills its queue directly
    from opentelemetry.sdk._shared_internal import BatchProcessor
except ImportError:  # pragma: no cover - older SDK: on_end per span
    BatchProcessor = None  # type: ignore[misc,assignment]

from ._telemetry_state import flags
from .logging_setup import _log_ids, log_context

__all__ = [
    "UnsampledRun",
    "attempt_span",
    "current_traceparent",
    "execution_span",
    "flush_node_spans",
    "format_scope",
    "link_from_str",
    "node_span",
    "record_llm_usage",
    "record_node_status",
    "span_context_to_str",
]

_tracer = trace.get_tracer("weft.engine")
_logger = logging.getLogger("weft.telemetry")

# otel_context.get_current(), minus two calls, with the default (contextvars) runtime context.
_runtime_var = getattr(otel_context._RUNTIME_CONTEXT, "_current_context", None)
_current_context: Any = (
    _runtime_var.get if isinstance(_runtime_var, ContextVar) else otel_context.get_current
)

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
    """Starts an SDK span, makes it current, sets the log ids; ends it all on exit (class, not a
    generator, because it runs once per node attempt where lean spans are not possible).

    ``run=True`` (execution spans): node spans inside are lean when the provider allows it (the
    context attached is then a ``_RunContext``), and the ones still pending are handed to the
    span processors before this span ends.
    """

    __slots__ = ("_attrs", "_links", "_log", "_name", "_run", "_span", "_token")

    def __init__(
        self,
        name: str,
        attrs: dict[str, Any],
        links: Sequence[Link] | None,
        log: log_context,
        run: bool = False,
    ) -> None:
        self._name = name
        self._attrs = attrs
        self._links = links
        self._log = log
        self._run = run
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
        ctx = trace.set_span_in_context(span)
        if self._run:
            span_context = span.get_span_context()
            if span_context.trace_flags.sampled:
                if (sink := _lean_sink()) is not None:
                    execution_id = self._attrs.get("weft.execution.id")
                    ctx = _RunContext(ctx, span_context, sink, execution_id)
            elif span_context.is_valid:
                ctx = UnsampledRun(ctx)
        self._token = otel_context.attach(ctx)
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
            if self._run and _pending:
                flush_node_spans()  # the run's node spans reach the processors before it
            span.end()
        finally:
            self._log.__exit__(exc_type, exc, tb)
            otel_context.detach(self._token)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- lean node spans


class _LeanSink:
    """Where lean node spans go, taken from the SDK tracer of ``weft.engine``."""

    __slots__ = ("bits", "limit", "new_span_id", "processor", "resource", "scope")

    def __init__(self, tracer: Any) -> None:
        self.processor = tracer.span_processor
        self.resource = tracer.resource
        self.scope = tracer._instrumentation_scope
        self.limit: int | None = tracer._span_limits.max_attribute_length
        generator = tracer.id_generator
        self.new_span_id = generator.generate_span_id
        self.bits: Any = None
        if type(generator) is RandomIdGenerator:
            import random

            self.bits = random.getrandbits  # what it draws span ids with


_sink_cache: tuple[object, _LeanSink | None] = (None, None)
_sinks_made = [0]  # one (a process's one tracer provider): pending spans all go to its processor


def _lean_sink() -> _LeanSink | None:
    """The sink for this process's tracer provider, or None when node spans must be SDK spans:
    not the SDK provider, a sampler other than the default parent-based one (whose decision for a
    child of a sampled local span is "record and sample"), or the engine's tracer disabled."""
    global _sink_cache
    provider = trace.get_tracer_provider()
    cached_for, sink = _sink_cache
    if cached_for is provider:
        return sink
    sink = None
    if isinstance(provider, TracerProvider):
        tracer: Any = provider.get_tracer("weft.engine")
        sampler = tracer.sampler
        if (
            isinstance(sampler, ParentBased)
            and sampler._local_parent_sampled is ALWAYS_ON
            and sampler._local_parent_not_sampled is ALWAYS_OFF
            and tracer._is_enabled()
        ):
            sink = _LeanSink(tracer)
            _sinks_made[0] += 1
            _register_exit_flush()
    _sink_cache = (provider, sink)
    return sink


class _RunContext(Context):
    """The context of an execution run whose node spans are lean: the execution span is current,
    except in a task running one of the run's node spans, where that node span is.

    A node span is found through the log ids (``_log_ids``, inherited by the tasks a node starts):
    a ``node_span`` is their third item; an ``attempt_span`` is registered in ``attempts`` under
    the identity of the ids tuple its caller set for the attempt (see ``_AttemptSpan``); the span
    of an engine attempt recorded as its node run is made from their fourth item, the node run
    (see ``NodeRunLike``)."""

    def __init__(
        self,
        values: Mapping[str, object],
        span_context: SpanContext,
        sink: _LeanSink,
        execution_id: Any = None,
    ) -> None:
        super().__init__(values)
        self.span_context = span_context
        self.sink = sink
        self.execution_id = execution_id
        self.bits = sink.bits
        # Attempt spans by the identity of their log ids: an _AttemptSpan, or the start record
        # of one not made yet (see ``LeanRecord``).
        self.attempts: dict[int, _AttemptSpan | tuple[Any, ...]] = {}
        self.otlp_fields: Any = None  # the OTLP encoder's (telemetry_otlp)
        self.otlp_record_parts: Any = None  # (the same)
        # The run's span current, whatever the task: what a measurement at a node's end is
        # recorded with (its exemplars link to the run's span), as a plain context.
        self.plain = Context(values)

    def _node_span(self, ids: tuple[Any, ...] | None = None) -> _NodeSpan | None:
        """The node span current in this task (for these log ids), if it is one of this run's."""
        if ids is None:
            ids = _log_ids.get()
        attempts = self.attempts
        if attempts:
            key = id(ids)
            node = attempts.get(key)
            if node is not None:
                if type(node) is tuple:  # a start record: its span, made now
                    span = _span_of_record(self, node)
                    # (In its place, unless the attempt ended meanwhile: code in another thread
                    # that outlived it. Its span is then this one, unexported.)
                    if attempts.get(key) is node:
                        attempts[key] = span
                    return span
                return node  # type: ignore[return-value]
        node_run = ids[3] if len(ids) > 3 else None
        if node_run is not None:
            made = node_run.span
            if made is self or type(made) is tuple:  # a running attempt's record: its span, now
                made_now: _NodeSpan = self.node_run_span(node_run)
                return made_now
            if made is not None:
                return made  # type: ignore[no-any-return]
        node = ids[2]
        if node is not None and node._run is self:
            return node  # type: ignore[no-any-return]
        return None

    def node_run_span(self, node_run: NodeRunLike) -> _AttemptSpan:
        """The span of the attempt of ``node_run`` (``NodeRunLike``) running as a record: made
        now from the record (the node run itself, or a start record) unless already made, and
        kept on the node run in its place."""
        made = node_run.span
        if made is self:
            span = _span_of_node_run(self, node_run)
        elif type(made) is tuple:
            span = _span_of_record(self, made)
        else:
            return made  # type: ignore[no-any-return]
        node_run.span = span
        return span

    def attempt_span(self, key: int) -> _AttemptSpan:
        """The running attempt span registered under ``key`` (in this thread: its attempt's),
        made from its start record if it is still one (and registered in its place)."""
        entry = self.attempts[key]
        if type(entry) is not tuple:
            return entry  # type: ignore[return-value]
        span = _span_of_record(self, entry)
        self.attempts[key] = span
        return span

    def get(self, key: str, default: object = None) -> object:
        if key == _SPAN_KEY:
            node = self._node_span()
            if node is not None:
                return node
        return dict.get(self, key, default)

    def __getitem__(self, key: str) -> object:
        if key == _SPAN_KEY:
            node = self._node_span()
            if node is not None:
                return node
        return dict.__getitem__(self, key)

    def copy(self) -> dict[str, object]:
        """What ``set_value`` builds on: a plain dict with the current span resolved."""
        values = dict(self)
        values[_SPAN_KEY] = self.get(_SPAN_KEY)
        return values


class UnsampledRun(Context):
    """The context of an execution run that trace sampling left out: its node spans are not
    recorded at all (what ``_sampled_out`` finds for them, known without looking)."""


# The lean node span running in a task is found through the log ids (``_log_ids``): a node_span
# is their third item (entering it is one ``ContextVar.set`` for both), an engine attempt's
# record is on their fourth, its node run, and an attempt_span sets nothing (see
# ``_AttemptSpan``); the run's context resolves the current span with them.
_UNSET_STATUS = Status(StatusCode.UNSET)
_new_tuple = tuple.__new__
_new_object = object.__new__


class _NodeSpan(Span, ReadableSpan):
    """One node attempt, recorded lean (see the module docstring); its own context manager.

    While open it is the API ``Span`` the node's code sees. Ended, it is the ``ReadableSpan`` the
    processors and exporters read: its ``SpanContext``, parent, name and attribute dict are made on
    first read (usually in the exporter's thread, just before encoding), from the values the
    engine passed in. One object per node stays alive until the export: the span itself."""

    # ReadableSpan fields that never vary for a node span (class attributes: no per-span cost).
    _kind = SpanKind.INTERNAL
    _events: Any = ()
    _links: Any = ()
    _instrumentation_info = None
    _status = _UNSET_STATUS
    _context: SpanContext | None = None
    _attributes: Any = None
    _name: Any = None
    _extra: dict[str, Any] | None = None
    _end_time: int | None = None
    _node_status = ""
    _error_code = ""

    _outer: _NodeSpan | None = None  # the enclosing node span of the same run, if any

    # Made by node_span (fields set there, without an __init__ call: this is per node attempt):
    # _run, _node_id, _node_type, _scope, _attempt, _execution_id (separate fields, not a tuple:
    # one object fewer per node for the garbage collector to count and look through). Declared
    # for the type checker only (annotations without a value make no class attribute).
    _run: Any
    _node_id: str
    _node_type: str
    _scope: Any
    _attempt: int
    _execution_id: str | None
    _token: Any

    # -- context manager (the hot path)
    def __enter__(self) -> _NodeSpan:
        run = self._run
        ids = _log_ids.get()
        outer = run._node_span(ids)
        if outer is not None:
            self._outer = outer  # the parent (else the run's span): see ``parent``
        sink = run.sink
        bits = sink.bits
        # RandomIdGenerator's own draw, inline (0, the invalid id, is drawn again by it).
        self._span_id = (bits(64) or sink.new_span_id()) if bits else sink.new_span_id()
        self._token = _log_ids.set((self._execution_id or ids[0], self._node_id, self, None))
        self._start_time = time_ns()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        end = time_ns()
        _log_ids.reset(self._token)
        self._token = None  # not kept alive until the export
        if exc is not None:
            self._record_end_error(exc)
        self._end_time = end
        pending = _pending
        pending.append(self)
        if len(pending) >= _FLUSH_AT:
            flush_node_spans()
        elif not _flush_timer[0]:
            _arm_flush_timer()  # (what it does without an event loop: see there)

    def _record_end_error(self, exc: BaseException) -> None:
        if isinstance(exc, asyncio.CancelledError):
            self.set_attribute("weft.cancelled", True)
        else:
            self.record_exception(exc)
            self._status = Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}")

    # -- opentelemetry.trace.Span
    def get_span_context(self) -> SpanContext:
        ctx = self._context
        if ctx is None:
            run = self._run.span_context
            # SpanContext(run.trace_id, self._span_id, False, ...) minus its id checks: the trace
            # id is the (valid) run's, the span id a valid draw, so is_valid is True.
            ctx = self._context = _new_tuple(
                SpanContext,
                (run.trace_id, self._span_id, False, run.trace_flags, run.trace_state, True),
            )
        return ctx

    @property
    def context(self) -> SpanContext:
        return self._context or self.get_span_context()

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attribute(self, key: str, value: Any) -> None:
        if self._end_time is not None:
            return
        if self._extra is None:
            self._extra = {}
        self._extra[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._end_time is not None:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if self._status.status_code is StatusCode.OK:
            return  # final, as in the SDK
        if status.status_code is not StatusCode.UNSET:
            self._status = status

    def add_event(
        self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None
    ) -> None:
        if self._end_time is not None:
            return
        event = Event(name, dict(attributes) if attributes else None, timestamp or time_ns())
        self._events = (*self._events, event)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        attrs: dict[str, Any] = {
            "exception.type": f"{module}.{qualname}"
            if module and module != "builtins"
            else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            attrs.update(attributes)
        self.add_event("exception", attrs, timestamp)

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def end(self, end_time: int | None = None) -> None:
        """Node spans end with their block; an explicit ``end()`` is ignored."""

    # -- ReadableSpan: parent, name and attributes found or built on first read
    @property
    def parent(self) -> SpanContext:
        outer = self._outer
        return outer.get_span_context() if outer is not None else self._run.span_context

    @property
    def name(self) -> str:
        if self._name is None:
            self._name = f"{self._node_type} {self._node_id}"
        return self._name  # type: ignore[no-any-return]

    @property
    def attributes(self) -> Any:
        if self._attributes is None:
            self._attributes = self._attribute_dict()
        return MappingProxyType(self._attributes)

    @property
    def resource(self) -> Any:
        return self._run.sink.resource

    @property
    def instrumentation_scope(self) -> Any:
        return self._run.sink.scope

    def _attribute_dict(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "weft.node.id": self._node_id,
            "weft.node.type": self._node_type,
            "weft.node.attempt": self._attempt,
        }
        if self._scope:
            attrs["weft.node.scope"] = format_scope(self._scope)
        if self._node_status:
            attrs["weft.node.status"] = self._node_status
        if self._error_code:
            attrs["weft.error.code"] = self._error_code
        if self._execution_id:  # last of the node's own: the OTLP encoder's record layout
            attrs["weft.execution.id"] = self._execution_id
        if self._extra:
            attrs.update(self._extra)
        limit = self._run.sink.limit
        if limit is not None:
            attrs = {k: v[:limit] if isinstance(v, str) else v for k, v in attrs.items()}
        return attrs

    def to_json(self, indent: int | None = 4) -> str:
        self.get_span_context()  # fill the fields to_json reads directly
        self._parent = self.parent
        self.name  # noqa: B018
        self.attributes  # noqa: B018
        self._resource = self.resource
        return str(super().to_json(indent))


class _AttemptSpan(_NodeSpan):
    """``attempt_span``'s lean span. Its caller set the log ids to a tuple of this attempt's
    own and resets them after the block: rather than setting them again, the span registers
    itself in its run's ``attempts`` under that tuple's identity (alive in the context all the
    while, so the key is unique while registered), which is how the run's context finds it for
    the node's code and the tasks it starts; the block's end unregisters it. (A tuple already
    registered, i.e. a caller that did not set fresh ids: the span sets and resets them itself.)

    It ends with ``weft.node.status`` SUCCEEDED unless another status was recorded or the block
    raised: the common case costs no ``record_node_status`` call."""

    _node_status = "SUCCEEDED"
    _key: int | None = None
    _token: Any = None

    def __enter__(self) -> _NodeSpan:
        return self  # started by attempt_span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        end = time_ns()
        key = self._key
        if key is not None:
            del self._run.attempts[key]
        elif self._token is not None:
            _log_ids.reset(self._token)
            self._token = None
        # (else an attempt recorded as its node run: nothing registered, nothing set)
        if exc is not None:
            if "_node_status" not in vars(self):
                self._node_status = ""  # the default (SUCCEEDED) is for a block that returns
            self._record_end_error(exc)
        self._end_time = end
        pending = _pending
        pending.append(self)
        if len(pending) >= _FLUSH_AT:
            flush_node_spans()
        elif not _flush_timer[0]:
            _arm_flush_timer()  # (what it does without an event loop: see there)


_LEAN = (_NodeSpan, _AttemptSpan)


# Lean attempt records. An attempt span nobody looks at while it runs (no outbound call, log
# line or status in it: most nodes) is kept as a record instead of an _AttemptSpan (no object and
# dict to make, none for the OTLP exporter to read). ``weft_executor.tracing.run_attempt`` keeps it
# on the engine's node run (``NodeRunLike``), the fourth item of the attempt's log ids, while the
# attempt runs; ``_RunContext._node_span`` makes the span of it when the node's code asks for the
# current span (and keeps that on the node run instead). It is one of:
#
# - the run context itself, for the common case (a first attempt, not resumed, not inside another
#   node span): nothing drawn or stamped when the attempt starts, the node run already holds what
#   the span needs (node, scope, attempt, start time). Its span id is drawn when the record is
#   encoded or made a span: nothing can have read it before;
# - else a start record ``(node_id, node_type, scope, attempt, execution_id, span_id,
#   start_time, outer)``.
#
# At the attempt's end, if still a record, ``run_attempt`` hands ``(run, node_run, end_time)`` or
# ``(run, start_record, end_time)`` to the span processors: an ended span that succeeded with
# nothing else recorded. An exporter with ``weft_lean_records = True`` (Weft's OTLP one) takes
# records as they are; every other processor or exporter gets the ``_AttemptSpan`` made from them
# (``lean_spans``), the same span the object path would have ended. (``attempt_span``, the helper
# for callers without a node run, registers its spans in the run's ``attempts`` instead.)
LeanRecord = tuple[Any, Any, int]


class NodeRunLike(Protocol):
    """What a lean record reads of the engine's node run (``weft_executor.frames.NodeRun``)."""

    node: Any  # .id, .type
    frame: Any  # .scope
    attempt: int
    started_at: float  # seconds since the epoch: the node's start (``node:started``)
    span: Any  # while an attempt runs: its record (the run context, a start record) or its span


def _span_of_record(run: _RunContext, start: tuple[Any, ...]) -> _AttemptSpan:
    span = _new_object(_AttemptSpan)
    span._run = run
    (
        span._node_id,
        span._node_type,
        span._scope,
        span._attempt,
        span._execution_id,
        span._span_id,
        span._start_time,
        outer,
    ) = start
    if outer is not None:
        span._outer = outer
    return span


def start_record(span: _NodeSpan) -> tuple[Any, ...]:
    """The start record of a lean span (``_span_of_record``'s inverse)."""
    return (
        span._node_id,
        span._node_type,
        span._scope,
        span._attempt,
        span._execution_id,
        span._span_id,
        span._start_time,
        span._outer,
    )


def _span_of_node_run(run: _RunContext, node_run: NodeRunLike) -> _AttemptSpan:
    span = _new_object(_AttemptSpan)
    span._run = run
    node = node_run.node
    span._node_id = node.id
    span._node_type = node.type
    span._scope = node_run.frame.scope
    span._attempt = node_run.attempt
    span._execution_id = run.execution_id
    bits = run.bits
    span._span_id = (bits(64) or run.sink.new_span_id()) if bits else run.sink.new_span_id()
    span._start_time = int(node_run.started_at * 1e9)
    return span


def _pinned(item: Any) -> Any:
    """``item``, a node run's record made a start record's (its span id drawn now)."""
    if type(item) is not tuple or type(item[1]) is tuple:
        return item
    run, node_run, end = item
    return (run, start_record(_span_of_node_run(run, node_run)), end)


def _ended_span(record: LeanRecord) -> _AttemptSpan:
    run, start, end = record
    if type(start) is tuple:
        span = _span_of_record(run, start)
    else:  # a node run whose span was never made
        span = _span_of_node_run(run, start)
    span._end_time = end
    return span


def lean_spans(batch: Sequence[Any]) -> list[Any]:
    """``batch`` (spans handed to an exporter that takes lean records) with every lean record
    made into its span."""
    return [_ended_span(item) if type(item) is tuple else item for item in batch]


_FLUSH_AT = 512  # the batch processor's default export batch
_FLUSH_AFTER_S = 1.0  # at the latest (a timer), or at the next node end after that
_FLUSH_AFTER_NS = int(_FLUSH_AFTER_S * 1e9)
_pending: deque[_NodeSpan | LeanRecord] = deque()
_flush_timer = [False]
_exit_flush_registered = [False]


def flush_node_spans() -> None:
    """Hand every ended lean node span to the span processors, in bulk. Called by the engine's
    helpers, a timer, ``Telemetry.shutdown`` and the test hook; thread-safe.

    A batch span processor gets the spans with one ``extendleft`` of its queue (what ``on_end``
    does span by span: same order, same queue bound and drop count, same wake-up of its export
    thread); any other processor gets ``on_end(span)`` for each. Node spans are always sampled
    (they are lean only under a sampled execution span), the check ``on_end`` makes."""
    with _flush_lock:  # a timer in the loop's thread, shutdown or exit in another
        _flush_timer[0] = False
        pending = _pending
        popleft = pending.popleft
        while pending:
            batch = list(starmap(popleft, repeat((), min(len(pending), _FLUSH_AT))))
            if _sinks_made[0] == 1:
                processors = {_processor_of(batch[0])}
            else:  # tracer providers replaced (tests): spans of several may be pending
                processors = set(map(_processor_of, batch))
            spans: list[Any] | None = None  # the batch with its lean records made spans
            if len(processors) > 1:  # spans of several providers (tests only): one by one
                for span in lean_spans(batch):
                    span._run.sink.processor.on_end(span)
                continue
            processor = processors.pop()
            # The provider's usual processor: call its processors directly, as it would.
            targets = (
                processor._span_processors
                if type(processor) is SynchronousMultiSpanProcessor
                else (processor,)
            )
            if len(targets) > 1:
                # A node run's span id is drawn when its record is read (see LeanRecord): for
                # several readers, drawn once here (the record made a start record's).
                batch = [_pinned(item) for item in batch]
            for target in targets:
                queue = _batch_queue(target)
                batcher: Any = queue is not None and cast(Any, target)._batch_processor
                if queue is not None and getattr(batcher._exporter, "weft_lean_records", False):
                    _emit_many(batcher, queue, batch)
                    continue
                if spans is None:
                    spans = lean_spans(batch)
                if queue is None:
                    for span in spans:
                        target.on_end(span)
                else:
                    _emit_many(batcher, queue, spans)


def _processor_of(item: Any) -> Any:
    return (item[0] if type(item) is tuple else item._run).sink.processor


_flush_lock = threading.RLock()


def _batch_queue(target: object) -> deque[Any] | None:
    """The queue of an SDK ``BatchSpanProcessor`` whose ``on_end`` is the SDK's (the bulk
    hand-over repeats what it does); None for any other processor (``on_end`` per span)."""
    if type(target) is not BatchSpanProcessor:
        return None
    batcher = getattr(target, "_batch_processor", None)
    queue = getattr(batcher, "_queue", None)
    if (
        type(batcher) is not BatchProcessor
        or type(queue) is not deque
        or queue.maxlen != getattr(batcher, "_max_queue_size", None)
    ):
        return None
    return queue


def _emit_many(batcher: Any, queue: deque[Any], batch: list[Any]) -> None:
    """``BatchProcessor.emit`` for each span of ``batch``, in one go (SDK 1.3x-1.4x semantics:
    ignored after shutdown, re-initialised after a fork, the oldest spans dropped when the queue
    is full, the export thread woken once a batch is waiting)."""
    if batcher._shutdown:
        _logger.info("Shutdown called, ignoring Span.")
        batcher._metrics.drop_items(len(batch), "already_shutdown")
        return
    if batcher._pid != os.getpid():
        batcher._bsp_reset_once.do_once(batcher._at_fork_reinit)
        queue = batcher._queue
    overflow = len(queue) + len(batch) - batcher._max_queue_size
    if overflow > 0:
        _logger.warning("Queue full, dropping %d spans.", overflow)
        batcher._metrics.drop_items(overflow)
    queue.extendleft(batch)  # as appendleft one by one; a full deque drops from the right
    if len(queue) >= batcher._max_export_batch_size and not batcher._worker_awaken.is_set():
        batcher._worker_awaken.set()


def _arm_flush_timer() -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        # No event loop in this thread (synchronous code; the timer stays unarmed, so this runs
        # at every node end): the spans go with the next batch of 512, the first node ending a
        # second after the oldest, the end of their execution span, or exit.
        pending = _pending
        oldest = pending[0] if pending else None
        end = oldest[2] if type(oldest) is tuple else getattr(oldest, "_end_time", 0)
        if oldest is not None and time_ns() - (end or 0) > _FLUSH_AFTER_NS:
            flush_node_spans()
        return
    _flush_timer[0] = True  # until the next flush
    loop.call_later(_FLUSH_AFTER_S, flush_node_spans)


# For weft_executor.tracing.run_attempt, which spells out attempt_span and _AttemptSpan.__exit__
# for a lean span of a run (the common case) on the engine's hot path: keep it in step with them.
LeanRun = _RunContext
lean_pending = _pending
lean_flush_timer = _flush_timer
LEAN_FLUSH_AT = _FLUSH_AT
current_context = _current_context
arm_flush_timer = _arm_flush_timer


def _register_exit_flush() -> None:
    """At exit, before the provider's own shutdown (registered earlier, so run later)."""
    if not _exit_flush_registered[0]:
        _exit_flush_registered[0] = True
        atexit.register(flush_node_spans)


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
    return _TracedScope(
        "execution " + (workflow_id or execution_id), attrs, kept or None, log, run=True
    )


def node_span(
    node_id: str,
    node_type: str,
    scope: ScopeLike = (),
    attempt: int = 1,
    *,
    execution_id: str | None = None,
) -> _NodeSpan | _TracedScope | _UntracedScope:
    """Context manager around one node attempt; a child of the current (execution) span.

    ``as span`` gives the span (a non-recording one with tracing off); set the outcome with
    ``record_node_status``.
    """
    if not flags.tracing:
        return _UntracedScope(execution_id=execution_id, node_id=node_id)
    run = _current_context()
    if type(run) is _RunContext:
        span = _new_object(_NodeSpan)
        span._run = run
        span._node_id = node_id
        span._node_type = node_type
        span._scope = scope
        span._attempt = attempt
        span._execution_id = execution_id
        return span
    if type(run) is UnsampledRun or _sampled_out():
        return _UntracedScope(execution_id=execution_id, node_id=node_id)
    return _sdk_node_scope(_TracedScope, node_id, node_type, scope, attempt, execution_id)


def _sdk_node_scope(
    cls: type[_TracedScope],
    node_id: str,
    node_type: str,
    scope: ScopeLike,
    attempt: int,
    execution_id: str | None,
) -> _TracedScope:
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
    return cls(f"{node_type} {node_id}", attrs, None, log)


class _TracedAttempt(_TracedScope):
    """``attempt_span`` as an SDK span: ends with ``weft.node.status`` SUCCEEDED unless another
    status was recorded or the block raised, like the lean ``_AttemptSpan``."""

    __slots__ = ()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span: Any = self._span
        if exc is None and span is not None and span.is_recording():
            if "weft.node.status" not in (span.attributes or {}):
                span.set_attribute("weft.node.status", "SUCCEEDED")
        super().__exit__(exc_type, exc, tb)


class _NoSpan:
    """``attempt_span`` with nothing to record: the caller's log ids are the attempt's already."""

    __slots__ = ()

    def __enter__(self) -> Span:
        return trace.INVALID_SPAN

    def __exit__(self, *exc_info: object) -> None:
        return None


_NO_SPAN = _NoSpan()


def attempt_span(
    node_id: str,
    node_type: str,
    scope: ScopeLike,
    attempt: int,
    execution_id: str | None,
) -> _NodeSpan | _TracedScope | _NoSpan:
    """``node_span`` for a node attempt run inside log ids its caller set to this attempt's
    ``(execution_id, node_id, <enclosing span>)`` and resets after the block (the engine's
    attempts: ``LOG_IDS``). A lean span then makes itself current without setting them again (see
    ``_AttemptSpan``); without a span to record (tracing off, a trace sampling left out) there is
    nothing to set at all.

    The span ends with ``weft.node.status`` SUCCEEDED when the block returns and no other status
    was recorded (``record_node_status`` is for the other outcomes); a block that raises gets no
    status unless one was recorded."""
    if not flags.tracing:
        return _NO_SPAN
    run = _current_context()
    if type(run) is _RunContext:
        # The span, started here (its __enter__ has nothing left to do): as _NodeSpan.__enter__,
        # but registered in the run instead of setting the log ids (see _AttemptSpan).
        span = _new_object(_AttemptSpan)
        span._run = run
        span._node_id = node_id
        span._node_type = node_type
        span._scope = scope
        span._attempt = attempt
        span._execution_id = execution_id
        ids = _log_ids.get()
        bits = run.bits
        # RandomIdGenerator's own draw, inline (0, the invalid id, is drawn again by it).
        span._span_id = (bits(64) or run.sink.new_span_id()) if bits else run.sink.new_span_id()
        key = id(ids)
        attempts = run.attempts
        node_run = ids[3] if len(ids) > 3 else None
        if key in attempts:
            outer: Any = run.attempt_span(key)
        elif node_run is not None and node_run.span is not None:
            outer = run.node_run_span(node_run)  # the ids of an attempt kept on its node run
        else:
            outer = None
        if outer is None:
            attempts[key] = span
            span._key = key
            outer = ids[2]
            if outer is not None and outer._run is run:
                span._outer = outer  # a node_span's (else the parent is the run's span)
        else:  # ids not set for this attempt (another attempt's): set them, reset on exit
            span._outer = outer
            span._token = _log_ids.set((execution_id or ids[0], node_id, span, None))
        span._start_time = time_ns()
        return span
    if type(run) is UnsampledRun or _sampled_out():
        return _NO_SPAN
    return _sdk_node_scope(_TracedAttempt, node_id, node_type, scope, attempt, execution_id)


def record_node_status(
    status: str, *, error_code: str = "", error_message: str = "", span: Span | None = None
) -> None:
    """Sets ``weft.node.status`` (and the error) on ``span`` or the current span."""
    if not flags.tracing:
        return
    target: Any = span if span is not None else trace.get_current_span()
    if type(target) in _LEAN and target._end_time is None:  # the hot path: no dict
        target._node_status = status
        if error_code:
            target._error_code = error_code
        if status == "FAILED":
            target._status = Status(StatusCode.ERROR, error_message or error_code or None)
        return
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

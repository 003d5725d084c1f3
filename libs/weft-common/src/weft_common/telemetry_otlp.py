"""A faster encoder for the OTLP trace export: the same ``ExportTraceServiceRequest`` as the SDK's
``encode_spans``, written as protobuf bytes directly instead of through one Python protobuf
message per span, attribute and value (the SDK encoder's cost is mostly building those objects:
tens of microseconds per span).

``encode_spans_bytes(spans)`` gives the serialized request; ``WeftOTLPSpanExporter`` is the SDK's
gRPC ``OTLPSpanExporter`` sending those bytes as they are. Same grouping (resource, then
instrumentation scope, in order of first appearance), same fields and defaults as the SDK encoder
(``opentelemetry-exporter-otlp-proto-common`` 1.3x-1.4x): what it leaves unset is left out, what
it sets (an empty ``Status``, an empty ``AnyValue`` for ``None``, a ``false``/``0`` in the value
oneof) is written, and an attribute it cannot encode is logged and skipped, as it does. The tests
compare the two encoders' requests, byte for byte.

Encoded attributes (key and value) are cached for scalar values: node spans repeat them a lot. A
lean node span in the common case (see ``_lean_span_field``) is put together from parts kept per
node attempt of a workflow (name, attributes), per execution run (trace id, parent) and its own
span id and times: well under a microsecond of Python per span."""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.trace import SpanKind

from .telemetry_spans import _LEAN, _UNSET_STATUS, format_scope, lean_spans, start_record

__all__ = ["WeftOTLPSpanExporter", "encode_spans_bytes"]

_logger = logging.getLogger("weft.telemetry")

_fixed64 = struct.Struct("<Q").pack
_fixed32 = struct.Struct("<I").pack
_double = struct.Struct("<d").pack
_SMALL = [bytes((i,)) for i in range(128)]
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_UINT64 = (1 << 64) - 1

_KIND = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _len_field(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


# Field tags (wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32).
_T1_LEN, _T2_LEN, _T3_LEN, _T4_LEN = (_tag(n, 2) for n in (1, 2, 3, 4))
_T5_LEN, _T6_LEN, _T7_LEN, _T9_LEN = (_tag(n, 2) for n in (5, 6, 7, 9))
_T11_LEN, _T13_LEN, _T15_LEN = (_tag(n, 2) for n in (11, 13, 15))
_T2_VARINT, _T3_VARINT, _T4_VARINT, _T5_VARINT = (_tag(n, 0) for n in (2, 3, 4, 5))
_T6_VARINT, _T10_VARINT, _T12_VARINT, _T14_VARINT = (_tag(n, 0) for n in (6, 10, 12, 14))
_T1_FIXED64, _T4_FIXED64, _T7_FIXED64, _T8_FIXED64 = (_tag(n, 1) for n in (1, 4, 7, 8))
_T6_FIXED32, _T16_FIXED32 = _tag(6, 5), _tag(16, 5)


def _any_value(value: Any) -> bytes:
    """An ``AnyValue`` message, as the SDK's ``_encode_value`` builds it (same type order)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return _T2_VARINT + (b"\x01" if value else b"\x00")
    if isinstance(value, str):
        return _len_field(_T1_LEN, value.encode())
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"Value out of range: {value}")
        return _T3_VARINT + _varint(value & _UINT64)
    if isinstance(value, float):
        return _T4_FIXED64 + _double(value)
    if isinstance(value, bytes):
        return _len_field(_T7_LEN, value)
    if isinstance(value, Sequence):
        return _len_field(_T5_LEN, b"".join(_len_field(_T1_LEN, _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        pairs = b"".join(_len_field(_T1_LEN, _key_value(str(k), v)) for k, v in value.items())
        return _len_field(_T6_LEN, pairs)
    raise Exception(f"Invalid type {type(value)} of value {value}")  # as the SDK encoder


def _key_value(key: str, value: Any) -> bytes:
    encoded = key.encode()
    head = _len_field(_T1_LEN, encoded) if encoded else b""
    return head + _len_field(_T2_LEN, _any_value(value))


_SCALARS = (str, bool, int, float, bytes, type(None))
_cache: dict[tuple[str, type, Any], bytes] = {}
_CACHE_MAX = 8192


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    """The repeated ``KeyValue`` field ``tag`` of ``attributes`` (skipping, with a log line, a
    value the SDK encoder would not encode either)."""
    if not attributes:
        return b""
    parts = []
    cache = _cache
    for key, value in attributes.items():
        kind = type(value)
        cacheable = kind in _SCALARS
        if cacheable:
            field = cache.get((key, kind, value))
            if field is not None:
                parts.append(field)
                continue
        try:
            field = _len_field(tag, _key_value(key, value))
        except Exception as error:  # the SDK encoder's behaviour: log and skip
            _logger.exception("Failed to encode key %s: %s", key, error)
            continue
        if cacheable:
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            cache[key, kind, value] = field
        parts.append(field)
    return b"".join(parts)


def _key_value_field(tag: bytes, key: str, value: Any, make: Any = None) -> bytes:
    """One cached ``KeyValue`` field (a scalar value the encoder takes; see ``_attributes``), or
    what ``make(tag, key, value)`` gives, cached under ``make``."""
    kind = make or type(value)
    field = _cache.get((key, kind, value))
    if field is None:
        field = make(tag, key, value) if make else _len_field(tag, _key_value(key, value))
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        _cache[key, kind, value] = field
    return field


def _flags(parent: Any) -> bytes:
    flags = _HAS_IS_REMOTE
    if parent and parent.is_remote:
        flags |= _IS_REMOTE
    return _fixed32(flags)


def _trace_state(trace_state: Any) -> bytes:
    if trace_state is None:
        return b""
    encoded = ",".join([f"{key}={value}" for key, value in trace_state.items()]).encode()
    return encoded


_HAS_IS_REMOTE_FLAGS = _T16_FIXED32 + _fixed32(_HAS_IS_REMOTE)
_UNSET_STATUS_FIELD = _len_field(_T15_LEN, b"")
_INTERNAL_KIND = _T6_VARINT + _SMALL[1]


def _lean_span(span: Any) -> bytes | None:
    """A lean node span (``telemetry_spans._NodeSpan``) encoded from its fields, as ``_span``
    would from the properties that build its name, context and attribute dict; None for what
    that does not cover (events, links, set attributes, a value length limit: ``_span`` then)."""
    run = span._run
    if span._events or span._extra or run.sink.limit is not None:
        return None
    run_context = run.span_context
    trace_id, trace_state, run_parent = _run_fields(run, run_context)
    outer = span._outer
    node_id, node_type = span._node_id, span._node_type
    out = [trace_id, _T2_LEN, b"\x08", span._span_id.to_bytes(8, "big"), trace_state]
    if outer is None:
        out.append(run_parent)
    else:
        out += (_T4_LEN, b"\x08", outer.get_span_context().span_id.to_bytes(8, "big"))
    name = span._name
    out.append(
        _len_field(_T5_LEN, name.encode())
        if name is not None
        else _key_value_field(_T5_LEN, node_type, node_id, _name_field)
    )
    out.append(_INTERNAL_KIND)
    out += (_T7_FIXED64, _fixed64(span._start_time), _T8_FIXED64, _fixed64(span._end_time))
    # The attribute dict's entries, in its order (``_NodeSpan._attribute_dict``).
    out.append(_key_value_field(_T9_LEN, "weft.node.id", node_id))
    out.append(_key_value_field(_T9_LEN, "weft.node.type", node_type))
    out.append(_key_value_field(_T9_LEN, "weft.node.attempt", span._attempt))
    if span._scope:
        out.append(_key_value_field(_T9_LEN, "weft.node.scope", format_scope(span._scope)))
    if span._node_status:
        out.append(_key_value_field(_T9_LEN, "weft.node.status", span._node_status))
    if span._error_code:
        out.append(_key_value_field(_T9_LEN, "weft.error.code", span._error_code))
    if span._execution_id:
        out.append(_key_value_field(_T9_LEN, "weft.execution.id", span._execution_id))
    status = span._status
    out.append(
        _UNSET_STATUS_FIELD if status is _UNSET_STATUS else _len_field(_T15_LEN, _status(status))
    )
    out.append(_HAS_IS_REMOTE_FLAGS)
    return b"".join(out)


_start_end = struct.Struct("<QBQ").pack  # start time, the end time's tag, end time
_END_TAG = _T8_FIXED64[0]
_SPAN_ID_TAG = _T2_LEN + b"\x08"  # (length 8)
_PARENT_TAG = _T4_LEN + b"\x08"
# Per node attempt (node id, type, attempt, scope, status, error code), in any run: the parts of
# its lean spans' fields that depend on those alone. Workflows run again and again, so these are
# made once per node attempt of a workflow, not once per span; a loop's iterations (each its own
# scope) make one per iteration, hence the bound.
_templates: dict[tuple[Any, ...], tuple[bytes, bytes, bytes, int]] = {}
_TEMPLATES_MAX = 8192
_heads: dict[int, bytes] = {}  # a span field's tag and length, by length


def _node_attributes(key: tuple[Any, ...]) -> bytes:
    """The attributes of a lean node span before ``weft.execution.id``, in the order of its
    attribute dict (``telemetry_spans._NodeSpan._attribute_dict``), for ``key`` (node id, type,
    attempt, scope, status, error code)."""
    node_id, node_type, attempt, scope, node_status, error_code = key
    out = [
        _key_value_field(_T9_LEN, "weft.node.id", node_id),
        _key_value_field(_T9_LEN, "weft.node.type", node_type),
        _key_value_field(_T9_LEN, "weft.node.attempt", attempt),
    ]
    if scope:
        out.append(_key_value_field(_T9_LEN, "weft.node.scope", format_scope(scope)))
    if node_status:
        out.append(_key_value_field(_T9_LEN, "weft.node.status", node_status))
    if error_code:
        out.append(_key_value_field(_T9_LEN, "weft.error.code", error_code))
    return b"".join(out)


def _lean_template(key: tuple[Any, ...]) -> tuple[bytes, bytes, bytes, int]:
    """The parts of a lean span's ``Span`` field that depend on its node attempt alone, ``key``
    (see ``_lean_field``): name, kind and the start time's tag; the attributes before
    ``weft.execution.id`` (the node's: ``_node_attributes``); the ones after it (none), status
    and flags; the size of all the parts of the field that have a fixed size (these, ids,
    times)."""
    node_id, node_type = key[:2]
    name_kind = _key_value_field(_T5_LEN, node_type, node_id, _name_field) + _INTERNAL_KIND
    name_kind += _T7_FIXED64
    attrs_before = _node_attributes(key)
    attrs_after = _UNSET_STATUS_FIELD + _HAS_IS_REMOTE_FLAGS
    # trace id field, span id field, parent field, times: 18 + 10 + 10 + 17 bytes.
    size = 18 + 10 + 10 + 17 + len(name_kind) + len(attrs_before) + len(attrs_after)
    template = (name_kind, attrs_before, attrs_after, size)
    if len(_templates) >= _TEMPLATES_MAX:
        _templates.clear()
    _templates[key] = template
    return template


def _lean_span_field(span: Any) -> bytes | None:
    """``_lean_field`` of a lean node span in the common case (no status set, no events, extra
    attributes or name set); None otherwise."""
    if span._status is not _UNSET_STATUS or span._events or span._extra or span._name is not None:
        return None
    return _lean_field(  # type: ignore[call-arg]
        span._run, *start_record(span), span._end_time, span._node_status, span._error_code
    )


def _lean_field(
    run: Any,
    node_id: str,
    node_type: str,
    scope: Any,
    attempt: int,
    execution_id: str | None,
    span_id: int,
    start: int,
    outer: Any,
    end: int,
    node_status: str = "SUCCEEDED",
    error_code: str = "",
) -> bytes | None:
    """The whole ``Span`` field (tag, length, span) of a lean node span with these values (a
    span's, or a lean record's: ``telemetry_spans.LeanRecord``), None under a value length limit:
    the same bytes as ``_lean_span`` writes, put together from the parts of its node attempt
    (``_lean_template``), of its run (trace id, trace state, the run span's id) and its own (span
    id, parent span id inside another node span, times, execution id)."""
    if run.sink.limit is not None:
        return None
    key = (node_id, node_type, attempt, scope, node_status, error_code)
    try:
        template = _templates.get(key)
    except TypeError:  # an unhashable scope (a list, mappings): by its text
        key = (node_id, node_type, attempt, format_scope(scope), node_status, error_code)
        template = _templates.get(key)
    if template is None:
        template = _lean_template(key)
    name_kind, attrs_before, attrs_after, size = template
    trace_id, trace_state, parent = run.otlp_fields or _run_fields(run, run.span_context)
    if outer is not None:
        parent = _PARENT_TAG + outer.get_span_context().span_id.to_bytes(8, "big")
    execution = _key_value_field(_T9_LEN, _EXECUTION_ID, execution_id) if execution_id else b""
    size += len(trace_state) + len(execution)
    head = _heads.get(size)
    if head is None:
        head = _heads[size] = _T2_LEN + _varint(size)
    return b"".join(
        (
            head,
            trace_id,
            _SPAN_ID_TAG,
            span_id.to_bytes(8, "big"),
            trace_state,
            parent,
            name_kind,
            _start_end(start, _END_TAG, end),
            attrs_before,
            execution,
            attrs_after,
        )
    )


_EXECUTION_ID = "weft.execution.id"
_UNSEEN = object()


def _run_fields(run: Any, run_context: Any) -> tuple[bytes, bytes, bytes]:
    """Trace id, trace state and parent span id fields of a run's node spans (kept on the run)."""
    fields: tuple[bytes, bytes, bytes] | None = run.otlp_fields
    if fields is None:
        trace_state = _trace_state(run_context.trace_state)
        fields = run.otlp_fields = (
            _T1_LEN + b"\x10" + run_context.trace_id.to_bytes(16, "big"),
            _len_field(_T3_LEN, trace_state) if trace_state else b"",
            _T4_LEN + b"\x08" + run_context.span_id.to_bytes(8, "big"),
        )
    return fields


def _name_field(tag: bytes, node_type: str, node_id: str) -> bytes:
    return _len_field(tag, f"{node_type} {node_id}".encode())


def _span(span: Any) -> bytes:
    if type(span) in _LEAN:
        encoded = _lean_span(span)
        if encoded is not None:
            return encoded
    ctx = span.get_span_context()
    parent = span.parent
    out = [
        _T1_LEN,
        b"\x10",
        ctx.trace_id.to_bytes(16, "big"),
        _T2_LEN,
        b"\x08",
        ctx.span_id.to_bytes(8, "big"),
    ]
    trace_state = _trace_state(ctx.trace_state)
    if trace_state:
        out.append(_len_field(_T3_LEN, trace_state))
    if parent:
        out += (_T4_LEN, b"\x08", parent.span_id.to_bytes(8, "big"))
    name = span.name
    if name:
        out.append(_len_field(_T5_LEN, name.encode()))
    kind = _KIND[span.kind]
    out += (_T6_VARINT, _SMALL[kind])
    start, end = span.start_time, span.end_time
    if start:
        out += (_T7_FIXED64, _fixed64(start))
    if end:
        out += (_T8_FIXED64, _fixed64(end))
    out.append(_attributes(_T9_LEN, span.attributes))
    dropped = span.dropped_attributes
    if dropped:
        out += (_T10_VARINT, _varint(dropped))
    for event in span.events or ():
        out.append(_len_field(_T11_LEN, _event(event)))
    dropped = span.dropped_events
    if dropped:
        out += (_T12_VARINT, _varint(dropped))
    for link in span.links or ():
        out.append(_len_field(_T13_LEN, _link(link)))
    dropped = span.dropped_links
    if dropped:
        out += (_T14_VARINT, _varint(dropped))
    status = span.status
    if status is not None:
        out.append(_len_field(_T15_LEN, _status(status)))
    out += (_T16_FIXED32, _flags(parent))
    return b"".join(out)


def _status(status: Any) -> bytes:
    out = b""
    if status.description:
        out += _len_field(_T2_LEN, status.description.encode())
    code = status.status_code.value
    if code:
        out += _T3_VARINT + _varint(code)
    return out


def _event(event: Any) -> bytes:
    out = b""
    if event.timestamp:
        out += _T1_FIXED64 + _fixed64(event.timestamp)
    if event.name:
        out += _len_field(_T2_LEN, event.name.encode())
    out += _attributes(_T3_LEN, event.attributes)
    if event.dropped_attributes:
        out += _T4_VARINT + _varint(event.dropped_attributes)
    return out


def _link(link: Any) -> bytes:
    ctx = link.context
    out = _T1_LEN + b"\x10" + ctx.trace_id.to_bytes(16, "big")
    out += _T2_LEN + b"\x08" + ctx.span_id.to_bytes(8, "big")
    out += _attributes(_T4_LEN, link.attributes)
    if link.dropped_attributes:
        out += _T5_VARINT + _varint(link.dropped_attributes)
    return bytes(out + _T6_FIXED32 + _flags(ctx))


def _scope(scope: Any) -> bytes:
    if scope is None:
        return b""
    out = _len_field(_T1_LEN, scope.name.encode()) if scope.name else b""
    if scope.version:
        out += _len_field(_T2_LEN, scope.version.encode())
    return out + _attributes(_T3_LEN, scope.attributes)


# A node run's record (``telemetry_spans.LeanRecord``) is encoded with its fields in another
# order than the SDK encoder's (protobuf readers take fields in any order: the message is the
# same), so that it is four parts put together and one ``struct`` pack:
#   head (tag, length) | trace id, trace state, parent (the run's) | name, kind, the node's
#   attributes (its node attempt's: ``_record_template``) | weft.execution.id, status, flags, the
#   start time's tag (the run's) | start time, end time, span id (its own, drawn now).
# Its span id is eight random bytes (nobody read it before: see LeanRecord), packed as they come.
_record_times_id = struct.Struct("<QBQHQ").pack
_SPAN_ID_TAG_LE = int.from_bytes(_SPAN_ID_TAG, "little")
_record_templates: dict[tuple[Any, ...], bytes] = {}


def _record_template(key: tuple[Any, ...]) -> bytes:
    """Name, kind and attributes of a node run's span, ``key`` (node id, type, attempt, scope)."""
    node_id, node_type, attempt, scope = key
    part = _key_value_field(_T5_LEN, node_type, node_id, _name_field) + _INTERNAL_KIND
    part += _node_attributes((node_id, node_type, attempt, scope, "SUCCEEDED", ""))
    if len(_record_templates) >= _TEMPLATES_MAX:
        _record_templates.clear()
    _record_templates[key] = part
    return part


def _record_parts(run: Any) -> tuple[bytes, bytes, int]:
    """The parts of a node run's span field that depend on its run (see ``_record_template``),
    and the size of all its parts but the node's (kept on the run)."""
    trace_id, trace_state, parent = run.otlp_fields or _run_fields(run, run.span_context)
    head = trace_id + trace_state + parent
    execution_id = run.execution_id
    tail = _key_value_field(_T9_LEN, _EXECUTION_ID, execution_id) if execution_id else b""
    tail += _UNSET_STATUS_FIELD + _HAS_IS_REMOTE_FLAGS + _T7_FIXED64
    parts = run.otlp_record_parts = (head, tail, len(head) + len(tail) + 8 + 1 + 8 + 2 + 8)
    return parts


def _nonzero_bits(sink: Any) -> Any:
    """A sink's span id draw as ``getrandbits(64)`` is called (for a generator of another kind)."""
    return lambda _bits: sink.new_span_id()


def encode_spans_bytes(spans: Sequence[Any]) -> bytes:
    """The serialized ``ExportTraceServiceRequest`` the SDK's ``encode_spans(spans)`` builds
    (``spans`` may hold lean records: ``telemetry_spans.LeanRecord``, encoded as their spans)."""
    # Grouped by equal resources and scopes, as the SDK's dicts do; an object's group is looked
    # up by identity first (Resource.__hash__ serializes its attributes to JSON every time).
    groups: dict[Any, dict[Any, list[bytes]]] = {}
    seen: dict[tuple[int, int], list[bytes]] = {}
    by_sink: dict[int, list[bytes]] = {}  # lean spans: their run's sink gives resource and scope
    lean = _LEAN
    field: bytes | None
    # Lean records, the bulk of a batch, come in runs of the same execution run: what depends
    # on the run only is looked up when it changes (``_lean_field`` inline, for a record).
    last_run: Any = None
    last_execution: Any = _UNSEEN
    templates, heads, join, start_end = _templates, _heads, b"".join, _start_end
    record_templates, record_times_id = _record_templates, _record_times_id
    run_spans: list[bytes] = []
    for span in spans:
        kind = type(span)
        if kind is tuple:  # a lean record
            run, start, end = span
            if run is not last_run:
                if run.sink.limit is not None:  # values to cut: as the span made from it
                    span = lean_spans((span,))[0]
                    encoded = _group(groups, seen, span.resource, span.instrumentation_scope)
                    encoded.append(_len_field(_T2_LEN, _span(span)))
                    continue
                last_run, last_execution = run, _UNSEEN
                trace_id, trace_state, run_parent = run.otlp_fields or _run_fields(
                    run, run.span_context
                )
                sink = run.sink
                bits = run.bits or _nonzero_bits(sink)
                run_head, run_tail, run_size = run.otlp_record_parts or _record_parts(run)
                found = by_sink.get(id(sink))
                if found is None:
                    found = by_sink[id(sink)] = _group(groups, seen, sink.resource, sink.scope)
                run_spans = found
            if type(start) is not tuple:  # a node run: ``_record_template`` has the layout
                node = start.node
                rkey = (node.id, node.type, start.attempt, start.frame.scope)
                try:
                    node_part = record_templates.get(rkey)
                except TypeError:  # an unhashable scope (a list, mappings): by its text
                    rkey = (node.id, node.type, start.attempt, format_scope(start.frame.scope))
                    node_part = record_templates.get(rkey)
                if node_part is None:
                    node_part = _record_template(rkey)
                size = len(node_part) + run_size
                head = heads.get(size)
                if head is None:
                    head = heads[size] = _T2_LEN + _varint(size)
                run_spans += (
                    head,
                    run_head,
                    node_part,
                    run_tail,
                    record_times_id(
                        int(start.started_at * 1e9), _END_TAG, end, _SPAN_ID_TAG_LE, bits(64) or 1
                    ),
                )
                continue
            node_id, node_type, scope, attempt, execution_id, span_id, start_time, outer = start
            key = (node_id, node_type, attempt, scope, "SUCCEEDED", "")
            try:
                template = templates.get(key)
            except TypeError:  # an unhashable scope (a list, mappings): by its text
                key = (node_id, node_type, attempt, format_scope(scope), "SUCCEEDED", "")
                template = templates.get(key)
            if template is None:
                template = _lean_template(key)
            name_kind, attrs_before, attrs_after, size = template
            if execution_id is not last_execution:
                last_execution = execution_id
                execution = (
                    _key_value_field(_T9_LEN, _EXECUTION_ID, execution_id) if execution_id else b""
                )
                extra = len(trace_state) + len(execution)
            size += extra
            head = heads.get(size)
            if head is None:
                head = heads[size] = _T2_LEN + _varint(size)
            run_spans.append(
                join(
                    (
                        head,
                        trace_id,
                        _SPAN_ID_TAG,
                        span_id.to_bytes(8, "big"),
                        trace_state,
                        run_parent
                        if outer is None
                        else _PARENT_TAG + outer.get_span_context().span_id.to_bytes(8, "big"),
                        name_kind,
                        start_end(start_time, _END_TAG, end),
                        attrs_before,
                        execution,
                        attrs_after,
                    )
                )
            )
            continue
        if kind in lean:
            field = _lean_span_field(span)
            if field is not None:
                sink = span._run.sink
                found = by_sink.get(id(sink))
                if found is None:
                    found = by_sink[id(sink)] = _group(groups, seen, sink.resource, sink.scope)
                found.append(field)
                continue
        encoded = _group(groups, seen, span.resource, span.instrumentation_scope)
        encoded.append(_len_field(_T2_LEN, _span(span)))
    return _request(groups)


def _group(
    groups: dict[Any, dict[Any, list[bytes]]],
    seen: dict[tuple[int, int], list[bytes]],
    resource: Any,
    scope: Any,
) -> list[bytes]:
    """The list of encoded spans of this resource and instrumentation scope."""
    scope = scope or None
    encoded = seen.get((id(resource), id(scope)))
    if encoded is None:
        by_scope = groups.get(resource)
        if by_scope is None:
            by_scope = groups[resource] = {}
        encoded = by_scope.get(scope)
        if encoded is None:
            encoded = by_scope[scope] = []
        seen[id(resource), id(scope)] = encoded  # (both alive: the spans hold them)
    return encoded


def _request(groups: dict[Any, dict[Any, list[bytes]]]) -> bytes:
    """The request's ``ResourceSpans`` fields, from the grouped encoded spans."""
    out = []
    for resource, by_scope in groups.items():
        body = [_len_field(_T1_LEN, _attributes(_T1_LEN, resource.attributes))]
        for scope, encoded in by_scope.items():
            scope_spans = _len_field(_T1_LEN, _scope(scope)) + b"".join(encoded)
            schema_url = scope.schema_url if scope else None
            if schema_url:
                scope_spans += _len_field(_T3_LEN, schema_url.encode())
            body.append(_len_field(_T2_LEN, scope_spans))
        if resource.schema_url:
            body.append(_len_field(_T3_LEN, resource.schema_url.encode()))
        out.append(_len_field(_T1_LEN, b"".join(body)))
    return b"".join(out)


class _RawTraceService:
    """The trace service stub's ``Export`` for a request already serialized (bytes pass through:
    no message is built from them and serialized again)."""

    def __init__(self, channel: Any) -> None:
        self.Export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )


class WeftOTLPSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/gRPC span exporter (its channel, headers, compression, timeout, retries and
    reconnection) sending ``encode_spans_bytes`` of the spans as the request; it takes lean
    records as they are (no span object made for them)."""

    weft_lean_records = True

    def _initialize_channel_and_stub(self) -> None:
        super()._initialize_channel_and_stub()  # type: ignore[no-untyped-call]
        # (called again on reconnection, with a new channel)
        self._client = _RawTraceService(self._channel)  # type: ignore[assignment]

    def _translate_data(self, data: Sequence[Any]) -> bytes:  # type: ignore[override]
        return encode_spans_bytes(data)

"""W3C trace context through real grpc.aio servers and clients on port 0: one trace, right parents,
for unary and server-streaming RPCs, across two hops, with error statuses on the spans."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from weft_common.errors import NotFound
from weft_common.grpc_server import GrpcServer
from weft_common.settings import CommonSettings
from weft_common.telemetry import TestTelemetry, node_span, telemetry_for_tests
from weft_common.telemetry_grpc import (
    MessageCall,
    end_message_span,
    instrumented_channel,
    message_span,
)

SETTINGS = CommonSettings()


@pytest.fixture
def tel() -> Iterator[TestTelemetry]:
    t = telemetry_for_tests()
    yield t
    t.stop()


def _generic(service: str, methods: dict[str, grpc.RpcMethodHandler]) -> Any:
    return grpc.method_handlers_generic_handler(service, methods)


async def _start(service: str, methods: dict[str, grpc.RpcMethodHandler]) -> GrpcServer:
    srv = GrpcServer(
        settings=SETTINGS,
        service_names=[service],
        register=lambda s: s.add_generic_rpc_handlers((_generic(service, methods),)),
    )
    await srv.start("127.0.0.1:0")
    return srv


def _parent_of(child: ReadableSpan, parent: ReadableSpan) -> bool:
    return child.parent is not None and child.parent.span_id == parent.context.span_id


async def test_unary_call_across_two_services_is_one_trace(tel: TestTelemetry) -> None:
    # "state": the leaf service.
    async def commit(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        with node_span("inner", "transform"):
            pass
        return b"committed:" + request

    state = await _start("test.State", {"Commit": grpc.unary_unary_rpc_method_handler(commit)})
    state_channel = instrumented_channel(f"127.0.0.1:{state.port}", SETTINGS)
    state_commit = state_channel.unary_unary("/test.State/Commit")

    # "executor": calls the state service from inside its handler.
    async def start(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return bytes(await state_commit(request))

    executor = await _start("test.Executor", {"Start": grpc.unary_unary_rpc_method_handler(start)})
    try:
        async with instrumented_channel(f"127.0.0.1:{executor.port}", SETTINGS) as ch:
            with trace.get_tracer("test").start_as_current_span("gateway request") as root:
                reply = await ch.unary_unary("/test.Executor/Start")(b"x")
        assert reply == b"committed:x"
    finally:
        await state_channel.close()
        await executor.stop(0)
        await state.stop(0)

    # Every span of the call must be in the root's trace: a span that lost the context would start
    # a trace of its own and be missing here. (Other traces are background work left by earlier
    # tests in the same process.)
    all_spans = [s for s in tel.spans() if s.context.trace_id == root.get_span_context().trace_id]
    assert len(all_spans) == 6, [s.name for s in all_spans]
    kinds = {(s.name, s.kind): s for s in all_spans}
    exec_client = kinds[("test.Executor/Start", SpanKind.CLIENT)]
    exec_server = kinds[("test.Executor/Start", SpanKind.SERVER)]
    state_client = kinds[("test.State/Commit", SpanKind.CLIENT)]
    state_server = kinds[("test.State/Commit", SpanKind.SERVER)]
    inner = kinds[("transform inner", SpanKind.INTERNAL)]
    gateway = kinds[("gateway request", SpanKind.INTERNAL)]
    assert _parent_of(exec_client, gateway)
    assert _parent_of(exec_server, exec_client)
    assert _parent_of(state_client, exec_server)
    assert _parent_of(state_server, state_client)
    assert _parent_of(inner, state_server)
    assert exec_server.attributes is not None
    assert exec_server.attributes["rpc.service"] == "test.Executor"
    assert exec_server.attributes["rpc.method"] == "Start"
    assert exec_server.attributes["rpc.grpc.status_code"] == 0


def _by_kind(tel: TestTelemetry, trace_id: int) -> dict[tuple[str, SpanKind], ReadableSpan]:
    """The spans of one trace by (name, kind); other traces are earlier tests' background work."""
    spans = [s for s in tel.spans() if s.context.trace_id == trace_id]
    out = {(s.name, s.kind): s for s in spans}
    assert len(out) == len(spans), [(s.name, s.kind) for s in spans]
    return out


async def test_server_streaming_rpc_carries_context_to_every_step(tel: TestTelemetry) -> None:
    async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        for i in range(3):
            # Work done between yields must run inside the server span.
            with node_span(f"step{i}", "emit"):
                pass
            yield b"event-%d" % i

    srv = await _start("test.State", {"StreamEvents": grpc.unary_stream_rpc_method_handler(stream)})
    try:
        async with instrumented_channel(f"127.0.0.1:{srv.port}", SETTINGS) as ch:
            with trace.get_tracer("test").start_as_current_span("follower") as root:
                call = ch.unary_stream("/test.State/StreamEvents")(b"")
                received = [bytes(item) async for item in call]
                assert await call.code() == grpc.StatusCode.OK
    finally:
        await srv.stop(0)
    assert received == [b"event-0", b"event-1", b"event-2"]

    spans = _by_kind(tel, root.get_span_context().trace_id)
    client = spans[("test.State/StreamEvents", SpanKind.CLIENT)]
    server = spans[("test.State/StreamEvents", SpanKind.SERVER)]
    assert _parent_of(client, spans[("follower", SpanKind.INTERNAL)])
    assert _parent_of(server, client)
    for i in range(3):
        assert _parent_of(spans[(f"emit step{i}", SpanKind.INTERNAL)], server)
    # The client span lasts as long as the stream (it ends when the stream's status arrives).
    assert client.end_time is not None and server.end_time is not None
    assert client.end_time >= server.start_time


async def test_errors_set_span_statuses(tel: TestTelemetry) -> None:
    async def missing(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise NotFound("execution 'e1' not found")

    async def broken(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise RuntimeError("bug in the handler")

    srv = await _start(
        "test.State",
        {
            "Get": grpc.unary_unary_rpc_method_handler(missing),
            "Crash": grpc.unary_unary_rpc_method_handler(broken),
        },
    )
    try:
        async with instrumented_channel(f"127.0.0.1:{srv.port}", SETTINGS) as ch:
            with trace.get_tracer("test").start_as_current_span("caller") as root:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await ch.unary_unary("/test.State/Get")(b"")
                assert info.value.code() == grpc.StatusCode.NOT_FOUND
                with pytest.raises(grpc.aio.AioRpcError) as info2:
                    await ch.unary_unary("/test.State/Crash")(b"")
                assert info2.value.code() == grpc.StatusCode.UNKNOWN
    finally:
        await srv.stop(0)

    spans = _by_kind(tel, root.get_span_context().trace_id)
    get_server = spans[("test.State/Get", SpanKind.SERVER)]
    get_client = spans[("test.State/Get", SpanKind.CLIENT)]
    assert get_server.attributes is not None and get_client.attributes is not None
    assert get_server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    # NOT_FOUND is the caller's problem: not an error of the server span, an error for the client.
    assert get_server.status.status_code is StatusCode.UNSET
    assert get_client.status.status_code is StatusCode.ERROR
    assert get_client.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    crash_server = spans[("test.State/Crash", SpanKind.SERVER)]
    assert crash_server.status.status_code is StatusCode.ERROR
    assert any(e.name == "exception" for e in crash_server.events)


async def test_tracing_off_adds_no_interceptors_and_no_spans(tel: TestTelemetry) -> None:
    tel.stop()

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        md = dict(context.invocation_metadata() or ())
        return b"traceparent" if "traceparent" in md else b"none"

    srv = await _start("test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})
    try:
        channel = instrumented_channel(f"127.0.0.1:{srv.port}", SETTINGS)
        async with channel as ch:
            assert not getattr(ch, "_unary_unary_interceptors", [])
            assert await ch.unary_unary("/test.Echo/Echo")(b"") == b"none"
    finally:
        await srv.stop(0)
    assert tel.spans() == []


async def test_background_polling_rpcs_leave_no_spans(tel: TestTelemetry) -> None:
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled

    seen: list[bool] = []

    async def claim(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        seen.append(is_instrumentation_enabled())  # SQL/redis instrumentation stays quiet
        return b"leases"

    service = "weft.state.v1.StateService"
    before = tel.metric_value(
        "rpc.server.duration",
        **{"rpc.system": "grpc", "rpc.service": service, "rpc.method": "ClaimExecutions",
           "rpc.grpc.status_code": 0},
    )  # fmt: skip
    srv = await _start(service, {"ClaimExecutions": grpc.unary_unary_rpc_method_handler(claim)})
    try:
        async with instrumented_channel(f"127.0.0.1:{srv.port}", SETTINGS) as ch:
            assert await ch.unary_unary(f"/{service}/ClaimExecutions")(b"") == b"leases"
    finally:
        await srv.stop(0)
    assert seen == [False]
    # No span for the poll (other traces are background work left by earlier tests in the process).
    assert [s.name for s in tel.spans() if "ClaimExecutions" in s.name] == []
    after = tel.metric_value(
        "rpc.server.duration",
        **{"rpc.system": "grpc", "rpc.service": service, "rpc.method": "ClaimExecutions",
           "rpc.grpc.status_code": 0},
    )  # fmt: skip
    assert after - before == 1  # still measured


async def test_messages_of_a_bidirectional_stream_are_calls_of_their_own(
    tel: TestTelemetry,
) -> None:
    """``CommitStream``'s way: each message carries its sender's trace context (the stream's
    metadata went once), and the handler continues it in a SERVER span per message, current
    while it is handled; a message that failed as a whole sets its code on the span and in
    ``rpc.server.duration``. Two messages of two traces on one stream stay in their traces."""
    service = "test.Streams"
    method = f"/{service}/Commit"
    inside: list[int] = []

    async def commit(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        async for request in requests:
            traceparent, _, body = request.decode().partition("|")
            with MessageCall(method, traceparent) as call:
                inside.append(trace.get_current_span().get_span_context().trace_id)
                if body == "fail":
                    call.code, call.error = grpc.StatusCode.UNAVAILABLE, "database gone"
            yield b"done:" + body.encode()

    def count(code: int) -> Any:
        return tel.metric_value(
            "rpc.server.duration",
            **{"rpc.system": "grpc", "rpc.service": service, "rpc.method": "Commit",
               "rpc.grpc.status_code": code},
        )  # fmt: skip

    ok_before, failed_before = count(0), count(14)
    srv = await _start(service, {"Commit": grpc.stream_stream_rpc_method_handler(commit)})
    tracer = trace.get_tracer("test")
    clients = []
    try:
        async with instrumented_channel(f"127.0.0.1:{srv.port}", SETTINGS) as ch:
            stream = ch.stream_stream(method)()
            for body in ("first", "fail"):
                with tracer.start_as_current_span(f"caller {body}"):
                    span, traceparent, _ = message_span(method)
                    await stream.write(f"{traceparent}|{body}".encode())
                    assert await stream.read() == b"done:" + body.encode()
                    end_message_span(span, grpc.StatusCode.OK)
                    clients.append(span)
            await stream.done_writing()
    finally:
        await srv.stop(0)
    spans = tel.spans()
    servers = [s for s in spans if s.name == method.lstrip("/") and s.kind is SpanKind.SERVER]
    client_spans = [s for s in spans if s.name == method.lstrip("/") and s.kind is SpanKind.CLIENT]
    assert len(servers) == 2 and len(client_spans) == 2
    for server, client in zip(servers, client_spans, strict=True):
        assert _parent_of(server, client)
        assert server.context.trace_id == client.context.trace_id
    assert inside == [s.context.trace_id for s in servers]
    assert servers[0].context.trace_id != servers[1].context.trace_id
    assert servers[0].status.status_code is StatusCode.UNSET
    assert servers[1].status.status_code is StatusCode.ERROR
    assert servers[1].status.description == "database gone"
    assert (count(0) - ok_before, count(14) - failed_before) == (1, 1)

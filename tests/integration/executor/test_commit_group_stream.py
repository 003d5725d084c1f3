"""``CommitGroup`` over ``CommitStream``: a worker's commits travel as messages of long-lived
streams (no per-call set-up), at most ``max_in_flight`` of them busy, each message answered
only after its transaction; a stream the server ended or that stopped answering is dropped and
its message fails like a failed call (retried by the store); with tracing on each message
carries its own trace context; a state service without ``CommitStream`` gets the plain calls."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from weft.state.v1 import state_pb2, state_pb2_grpc
from weft_common.errors import Conflict
from weft_common.telemetry import telemetry_for_tests
from weft_executor.records import Commit, EventDraft
from weft_executor.state_store import CommitGroup, StateExecutionStore


class StreamState(state_pb2_grpc.StateServiceServicer):
    """Answers commit messages from a script (stale tokens in ``refuse``)."""

    def __init__(self) -> None:
        self.streams = 0
        self.unary = 0
        self.messages: list[list[str]] = []
        self.traceparents: list[str] = []
        self.refuse: set[str] = set()
        self.end_after = 0  # end every stream after this many messages (0: never)
        self.silent = False  # read messages but never answer
        self.delay_s = 0.0

    def _apply(self, request: state_pb2.CommitStepRequest) -> state_pb2.CommitStepOutcome:
        if request.lease.token in self.refuse:
            return state_pb2.CommitStepOutcome(
                code=grpc.StatusCode.ABORTED.value[0],
                message="stale version",
                details_json=json.dumps({"reason": "STALE_VERSION", "version": 99}),
            )
        return state_pb2.CommitStepOutcome(
            response=state_pb2.CommitStepResponse(
                version=request.expected_version + 1, last_seq=len(request.events)
            )
        )

    async def CommitStep(
        self, request: state_pb2.CommitStepRequest, context: grpc.aio.ServicerContext
    ) -> state_pb2.CommitStepResponse:
        self.unary += 1
        return self._apply(request).response

    async def CommitStream(
        self,
        request_iterator: AsyncIterator[state_pb2.CommitStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[state_pb2.CommitStreamResponse]:
        self.streams += 1
        answered = 0
        async for message in request_iterator:
            self.messages.append([c.lease.execution_id for c in message.commits])
            self.traceparents.append(message.traceparent)
            if self.silent:
                continue
            await asyncio.sleep(self.delay_s)
            yield state_pb2.CommitStreamResponse(outcomes=[self._apply(c) for c in message.commits])
            answered += 1
            if self.end_after and answered >= self.end_after:
                return


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[StreamState, state_pb2_grpc.StateServiceStub]]:
    state = StreamState()
    server = grpc.aio.server()
    state_pb2_grpc.add_StateServiceServicer_to_server(state, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield state, state_pb2_grpc.StateServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(0)


Scripted = tuple[StreamState, state_pb2_grpc.StateServiceStub]


def store(
    stub: state_pb2_grpc.StateServiceStub, group: CommitGroup, i: int, **kw: float
) -> StateExecutionStore:
    return StateExecutionStore(
        stub,
        lease=state_pb2.Lease(execution_id=f"e{i}", worker_id="w", token=f"t{i}"),
        version=10 * i,
        group=group,
        **kw,  # type: ignore[arg-type]
    )


def commit() -> Commit:
    return Commit(events=[EventDraft(type="node:started", timestamp=time.time(), node_id="n")])


async def test_commits_go_as_messages_of_one_stream(scripted: Scripted) -> None:
    state, stub = scripted
    group = CommitGroup(stub, max_in_flight=2)
    s = store(stub, group, 1)
    for _ in range(20):
        await s.write(commit())
    assert s.version == 30 and s.last_seq == 1
    assert (state.streams, state.unary, len(state.messages)) == (1, 0, 20)
    assert group.calls == 20


async def test_concurrent_commits_use_at_most_max_in_flight_streams(scripted: Scripted) -> None:
    """Commits handed in while both streams are busy go together in the next message."""
    state, stub = scripted
    state.delay_s = 0.02
    group = CommitGroup(stub, max_in_flight=2)
    s = [store(stub, group, i) for i in range(6)]

    async def writer(x: StateExecutionStore) -> None:
        for _ in range(5):
            await x.write(commit())

    await asyncio.gather(*(writer(x) for x in s))
    assert [x.version for x in s] == [10 * i + 5 for i in range(6)]
    assert state.streams <= 2 and state.unary == 0
    assert sum(len(m) for m in state.messages) == 30
    assert any(len(m) > 1 for m in state.messages)  # grouped while both streams were busy
    assert group.grouped > 0


async def test_a_refused_item_fences_its_writer_and_the_stream_goes_on(scripted: Scripted) -> None:
    state, stub = scripted
    group = CommitGroup(stub, max_in_flight=1)
    stale, fine = store(stub, group, 1), store(stub, group, 2)
    state.refuse = {"t1"}
    with pytest.raises(Conflict, match="stale version"):
        await stale.write(commit())
    assert stale.fenced
    await fine.write(commit())
    assert fine.version == 21 and state.streams == 1


async def test_a_stream_the_server_ended_is_replaced(scripted: Scripted) -> None:
    """The state service ending an idle stream (it stops, or restarted) costs no failed commit:
    the next message goes on a new stream."""
    state, stub = scripted
    state.end_after = 1
    group = CommitGroup(stub, max_in_flight=1)
    s = store(stub, group, 1)
    for _ in range(5):
        await s.write(commit())
    assert s.version == 15 and not s.fenced
    assert state.streams == 5 and len(state.messages) == 5


async def test_a_stream_that_does_not_answer_times_out_like_a_call(scripted: Scripted) -> None:
    """No answer within the RPC timeout: DEADLINE_EXCEEDED, retried by the store on new
    streams until its budget is spent, then the writer lets go (ambiguous, as a call's)."""
    state, stub = scripted
    state.silent = True
    group = CommitGroup(stub, max_in_flight=1)
    s = store(stub, group, 1, timeout_s=0.2, retry_budget_s=0.6)
    with pytest.raises(Conflict, match="no answer in time"):
        await s.write(commit())
    assert s.fenced and state.streams >= 2
    assert not group._lanes  # the silent streams were dropped, not kept for reuse


async def test_tracing_on_streams_each_commit_with_its_trace_context(scripted: Scripted) -> None:
    """With tracing on commits still go as stream messages, one stream reused: each message has
    a CLIENT span of its own (ended with the answer, in the writer's trace) whose traceparent it
    carries, for the state service to continue; a message left unanswered ends its span as an
    error."""
    tel = telemetry_for_tests()
    try:
        state, stub = scripted
        group = CommitGroup(stub, max_in_flight=1)
        s = store(stub, group, 1)
        tracer = trace.get_tracer("test")
        with tracer.start_as_current_span("writer") as writer:
            await s.write(commit())
            await s.write(commit())
        assert (state.unary, state.streams) == (0, 1) and s.version == 12
        spans = [sp for sp in tel.spans() if sp.name == "weft.state.v1.StateService/CommitStream"]
        assert len(spans) == 2
        assert state.traceparents == [
            f"00-{sp.context.trace_id:032x}-{sp.context.span_id:016x}-{sp.context.trace_flags:02x}"
            for sp in spans
        ]
        for sp in spans:
            assert sp.kind is SpanKind.CLIENT and sp.parent is not None
            assert sp.parent.span_id == writer.get_span_context().span_id
            assert sp.status.status_code is StatusCode.UNSET
        state.silent = True
        late = store(stub, group, 1, timeout_s=0.2, retry_budget_s=0.3)
        with pytest.raises(Conflict):
            await late.write(commit())
        failed = [sp for sp in tel.spans() if sp.name.endswith("/CommitStream")][2:]
        assert failed and all(sp.status.status_code is StatusCode.ERROR for sp in failed)
    finally:
        tel.stop()


async def test_a_state_service_without_commit_stream_gets_plain_calls() -> None:
    class Older(state_pb2_grpc.StateServiceServicer):
        def __init__(self) -> None:
            self.unary = 0

        async def CommitStep(
            self, request: state_pb2.CommitStepRequest, context: grpc.aio.ServicerContext
        ) -> state_pb2.CommitStepResponse:
            self.unary += 1
            return state_pb2.CommitStepResponse(version=request.expected_version + 1)

    older = Older()
    server = grpc.aio.server()
    state_pb2_grpc.add_StateServiceServicer_to_server(older, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        stub = state_pb2_grpc.StateServiceStub(channel)
        group = CommitGroup(stub, max_in_flight=1)
        s = store(stub, group, 1)
        for _ in range(3):
            await s.write(commit())
        assert s.version == 13 and older.unary == 3 and not group._streaming
    finally:
        await channel.close()
        await server.stop(0)

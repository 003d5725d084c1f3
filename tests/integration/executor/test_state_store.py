"""``StateExecutionStore`` against a scripted StateService over real gRPC: what reaches the wire,
version tracking, retries of transient failures, and fencing (stale writer, ambiguous retry)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import pytest

from weft.state.v1 import state_pb2, state_pb2_grpc
from weft.workflow.v1 import workflow_pb2
from weft_common.errors import Conflict, InvalidArgument
from weft_executor.records import (
    Commit,
    ControlUpdate,
    EventDraft,
    NodeLogRecord,
    NodeStatus,
    ScopeEntry,
    StepRecord,
)
from weft_executor.state_store import StateExecutionStore


class ScriptedState(state_pb2_grpc.StateServiceServicer):
    """CommitStep answers from a script: a status code to abort with, or None to accept."""

    def __init__(self) -> None:
        self.script: list[grpc.StatusCode | None] = []
        self.requests: list[state_pb2.CommitStepRequest] = []
        self.version = 7

    async def CommitStep(
        self, request: state_pb2.CommitStepRequest, context: grpc.aio.ServicerContext
    ) -> state_pb2.CommitStepResponse:
        self.requests.append(request)
        code = self.script.pop(0) if self.script else None
        if code is not None:
            await context.abort(code, f"scripted {code.name}")
        self.version += 1
        return state_pb2.CommitStepResponse(version=self.version, last_seq=len(request.events) + 40)


Scripted = tuple[ScriptedState, state_pb2_grpc.StateServiceStub]


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    state = ScriptedState()
    server = grpc.aio.server()
    state_pb2_grpc.add_StateServiceServicer_to_server(state, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield state, state_pb2_grpc.StateServiceStub(channel)
    await channel.close()
    await server.stop(0)


LEASE = state_pb2.Lease(execution_id="e1", worker_id="w1", token="tok")


def a_commit() -> Commit:
    now = time.time()
    scope = (ScopeEntry("each", 2),)
    return Commit(
        steps=[
            StepRecord(key="n@each:2", node_id="n", scope=scope, status=NodeStatus.SUCCEEDED,
                       output={"x": 1}, fired_handles=("out",)),
            StepRecord(key="ok@each:2", node_id="ok", scope=scope, status=NodeStatus.PAUSED,
                       data={"reason": "sure?", "inputSchema": {"type": "object"}}),
        ],
        node_logs=[NodeLogRecord(node_id="n", node_type="transform", scope=scope,
                                 status=NodeStatus.SUCCEEDED, attempt=1, started_at=now - 0.002,
                                 finished_at=now, input={"a": 1}, output={"x": 1})],
        events=[EventDraft(type="node:completed", timestamp=now, node_id="n", scope=scope,
                           payload={"output": {"x": 1}})],
        control=ControlUpdate(variables={"v": 2}),
    )


async def test_a_commit_reaches_the_wire_whole_and_the_version_is_tracked(scripted: Scripted) -> None:
    state, stub = scripted
    store = StateExecutionStore(stub, lease=LEASE, version=7)
    await store.write(a_commit())
    await store.write(Commit(events=[EventDraft(type="node:started", timestamp=time.time())]))
    first, second = state.requests
    assert (first.expected_version, second.expected_version) == (7, 8)
    assert store.version == 9 and store.last_seq == 41
    assert first.lease == LEASE
    assert [s.key for s in first.steps] == ["n@each:2", "ok@each:2"]
    assert first.steps[0].output_json == '{"x":1}'
    assert list(first.steps[0].fired_handles) == ["out"]
    assert first.steps[0].scope[0] == workflow_pb2.ScopeEntry(container="each", index=2)
    assert first.node_logs[0].duration_us >= 1000
    assert first.events[0].payload_json == '{"output":{"x":1}}'
    assert first.control.variables_json == '{"v":2}'
    assert not first.control.release_lease
    # The parked run opens its pause in the same commit.
    [paused] = first.control.paused_nodes
    assert (paused.node_id, paused.reason, paused.input_schema_json) == ("ok", "sure?", '{"type":"object"}')


async def test_pausing_or_finishing_releases_the_lease(scripted: Scripted) -> None:
    state, stub = scripted
    store = StateExecutionStore(stub, lease=LEASE, version=7)
    for status in ("RUNNING", "PAUSED", "SUCCEEDED"):
        await store.write(Commit(control=ControlUpdate(status=status)))
    assert [r.control.release_lease for r in state.requests] == [False, True, True]


async def test_transient_failures_are_retried_under_the_same_version(scripted: Scripted) -> None:
    state, stub = scripted
    state.script = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL]
    store = StateExecutionStore(stub, lease=LEASE, version=7, retry_budget_s=5)
    await store.write(a_commit())
    assert [r.expected_version for r in state.requests] == [7, 7, 7]
    assert store.version == 8 and not store.fenced


async def test_a_stale_writer_is_fenced(scripted: Scripted) -> None:
    state, stub = scripted
    state.script = [grpc.StatusCode.ABORTED]
    store = StateExecutionStore(stub, lease=LEASE, version=7)
    with pytest.raises(Conflict):
        await store.write(a_commit())
    assert store.fenced
    # Nothing more is written: the next write fails without reaching the server.
    with pytest.raises(Conflict):
        await store.write(a_commit())
    assert len(state.requests) == 1


async def test_an_ambiguous_retry_is_a_conflict(scripted: Scripted) -> None:
    """The first attempt may have committed (its answer was lost): the retry finds the version
    moved. The store does not guess; the worker hands the execution back to be replayed."""
    state, stub = scripted
    state.script = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED]
    store = StateExecutionStore(stub, lease=LEASE, version=7, retry_budget_s=5)
    with pytest.raises(Conflict, match="after a retried commit"):
        await store.write(a_commit())
    assert store.fenced


async def test_a_long_outage_fences_after_the_retry_budget(scripted: Scripted) -> None:
    state, stub = scripted
    state.script = [grpc.StatusCode.UNAVAILABLE] * 100
    store = StateExecutionStore(stub, lease=LEASE, version=7, retry_budget_s=0.5)
    t0 = time.monotonic()
    with pytest.raises(Conflict):
        await store.write(a_commit())
    assert time.monotonic() - t0 < 3
    assert store.fenced


async def test_a_refused_request_is_not_retried(scripted: Scripted) -> None:
    state, stub = scripted
    state.script = [grpc.StatusCode.INVALID_ARGUMENT]
    store = StateExecutionStore(stub, lease=LEASE, version=7)
    with pytest.raises(InvalidArgument):
        await store.write(a_commit())
    assert len(state.requests) == 1 and not store.fenced

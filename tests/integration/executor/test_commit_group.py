"""``CommitGroup`` (cross-execution group commit) against a scripted StateService over real gRPC:
commits handed in while one is in flight go together in one ``CommitSteps`` call, each answered
on its own (a refused item fences only its own execution), and an older state service without
``CommitSteps`` still gets every commit, one call each."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from weft.state.v1 import state_pb2, state_pb2_grpc
from weft_common.errors import Conflict
from weft_executor.convert import commit_to_request
from weft_executor.records import Commit, EventDraft
from weft_executor.state_store import CommitGroup, StateExecutionStore


class GroupState(state_pb2_grpc.StateServiceServicer):
    """Answers commits after ``delay_s``; a commit whose lease token is in ``refuse`` is stale."""

    def __init__(self, *, grouping: bool = True) -> None:
        self.grouping = grouping
        self.calls: list[tuple[str, list[str]]] = []
        self.refuse: set[str] = set()
        self.fail_group: grpc.StatusCode | None = None
        self.delay_s = 0.05
        self.versions: dict[str, int] = {}

    def _apply(self, request: state_pb2.CommitStepRequest) -> state_pb2.CommitStepOutcome:
        eid = request.lease.execution_id
        if request.lease.token in self.refuse:
            return state_pb2.CommitStepOutcome(
                code=grpc.StatusCode.ABORTED.value[0],
                message=f"execution {eid!r}: stale version",
                details_json=json.dumps({"reason": "STALE_VERSION", "version": 99}),
            )
        self.versions[eid] = request.expected_version + 1
        return state_pb2.CommitStepOutcome(
            response=state_pb2.CommitStepResponse(
                version=request.expected_version + 1, last_seq=len(request.events)
            )
        )

    async def CommitStep(
        self, request: state_pb2.CommitStepRequest, context: grpc.aio.ServicerContext
    ) -> state_pb2.CommitStepResponse:
        self.calls.append(("CommitStep", [request.lease.execution_id]))
        await asyncio.sleep(self.delay_s)
        outcome = self._apply(request)
        if not outcome.HasField("response"):
            await context.abort(grpc.StatusCode.ABORTED, outcome.message)
        return outcome.response

    async def CommitSteps(
        self, request: state_pb2.CommitStepsRequest, context: grpc.aio.ServicerContext
    ) -> state_pb2.CommitStepsResponse:
        if not self.grouping:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        self.calls.append(("CommitSteps", [c.lease.execution_id for c in request.commits]))
        await asyncio.sleep(self.delay_s)
        if self.fail_group is not None:
            code, self.fail_group = self.fail_group, None
            await context.abort(code, "scripted group failure")
        return state_pb2.CommitStepsResponse(outcomes=[self._apply(c) for c in request.commits])


async def serve_state(state: GroupState) -> AsyncIterator[state_pb2_grpc.StateServiceStub]:
    server = grpc.aio.server()
    state_pb2_grpc.add_StateServiceServicer_to_server(state, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield state_pb2_grpc.StateServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(0)


Grouped = tuple[GroupState, state_pb2_grpc.StateServiceStub]


@pytest.fixture
async def grouped() -> AsyncIterator[Grouped]:
    state = GroupState()
    async for stub in serve_state(state):
        yield state, stub


def stores(
    stub: state_pb2_grpc.StateServiceStub, group: CommitGroup, n: int
) -> list[StateExecutionStore]:
    return [
        StateExecutionStore(
            stub,
            lease=state_pb2.Lease(execution_id=f"e{i}", worker_id="w", token=f"t{i}"),
            version=10 * i,
            retry_budget_s=5,
            group=group,
        )
        for i in range(n)
    ]


def commit() -> Commit:
    return Commit(events=[EventDraft(type="node:started", timestamp=time.time(), node_id="n")])


async def test_commits_that_come_while_one_is_in_flight_go_together(grouped: Grouped) -> None:
    state, stub = grouped
    group = CommitGroup(stub, max_in_flight=1)
    s = stores(stub, group, 5)
    first = asyncio.create_task(s[0].write(commit()))
    await asyncio.sleep(0.01)  # in flight now
    await asyncio.gather(first, *(x.write(commit()) for x in s[1:]))
    assert state.calls == [("CommitStep", ["e0"]), ("CommitSteps", ["e1", "e2", "e3", "e4"])]
    assert [x.version for x in s] == [1, 11, 21, 31, 41]
    assert [x.last_seq for x in s] == [1] * 5
    assert (group.calls, group.grouped) == (2, 4)
    # A lone commit with nothing in flight goes at once, as a plain CommitStep.
    await s[2].write(commit())
    assert state.calls[-1] == ("CommitStep", ["e2"]) and s[2].version == 22


async def test_a_refused_item_fences_only_its_own_execution(grouped: Grouped) -> None:
    state, stub = grouped
    group = CommitGroup(stub, max_in_flight=1)
    s = stores(stub, group, 4)
    state.refuse = {"t2"}
    first = asyncio.create_task(s[0].write(commit()))
    await asyncio.sleep(0.01)
    results = await asyncio.gather(
        first, *(x.write(commit()) for x in s[1:]), return_exceptions=True
    )
    assert state.calls[1] == ("CommitSteps", ["e1", "e2", "e3"])
    assert results[0] is None and results[1] is None and results[3] is None
    assert isinstance(results[2], Conflict) and "stale version" in results[2].message
    assert s[2].fenced and not any(x.fenced for x in (s[0], s[1], s[3]))
    assert [s[1].version, s[3].version] == [11, 31]


async def test_a_failed_group_call_is_retried_per_commit(grouped: Grouped) -> None:
    """UNAVAILABLE for the whole call: every commit in it is retried by its own store (the
    same rule as a failed CommitStep), and they still get grouped."""
    state, stub = grouped
    group = CommitGroup(stub, max_in_flight=1)
    s = stores(stub, group, 3)
    state.fail_group = grpc.StatusCode.UNAVAILABLE
    first = asyncio.create_task(s[0].write(commit()))
    await asyncio.sleep(0.01)
    await asyncio.gather(first, s[1].write(commit()), s[2].write(commit()))
    assert [x.version for x in s] == [1, 11, 21] and not any(x.fenced for x in s)
    assert state.calls[1] == ("CommitSteps", ["e1", "e2"])
    assert sum(1 for name, ids in state.calls if "e1" in ids) == 2  # the retry


async def test_an_older_state_service_gets_one_call_per_commit() -> None:
    state = GroupState(grouping=False)
    async for stub in serve_state(state):
        group = CommitGroup(stub, max_in_flight=1)
        s = stores(stub, group, 4)
        first = asyncio.create_task(s[0].write(commit()))
        await asyncio.sleep(0.01)
        await asyncio.gather(first, *(x.write(commit()) for x in s[1:]))
        assert [x.version for x in s] == [1, 11, 21, 31]
        assert sorted(ids[0] for name, ids in state.calls) == ["e0", "e1", "e2", "e3"]
        assert {name for name, _ in state.calls} == {"CommitStep"}


async def test_a_writer_that_gives_up_while_queued_is_left_out(grouped: Grouped) -> None:
    state, stub = grouped
    group = CommitGroup(stub, max_in_flight=1)
    s = stores(stub, group, 3)
    first = asyncio.create_task(s[0].write(commit()))
    await asyncio.sleep(0.01)
    gone = asyncio.create_task(s[1].write(commit()))
    kept = asyncio.create_task(s[2].write(commit()))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(first, kept)
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert state.calls == [("CommitStep", ["e0"]), ("CommitStep", ["e2"])]
    assert "e1" not in state.versions


async def test_a_group_stays_under_its_byte_budget(grouped: Grouped) -> None:
    """Commits too big to share a call go in several groups (a lone one as a plain CommitStep):
    a group never nears the gRPC message limit."""
    state, stub = grouped
    one = commit_to_request(
        commit(),
        lease=state_pb2.Lease(execution_id="e1", worker_id="w", token="t1"),
        expected_version=10,
    ).ByteSize()
    group = CommitGroup(stub, max_in_flight=1, max_bytes=2 * one + one // 2)
    s = stores(stub, group, 6)
    first = asyncio.create_task(s[0].write(commit()))
    await asyncio.sleep(0.01)
    await asyncio.gather(first, *(x.write(commit()) for x in s[1:]))
    assert state.calls == [
        ("CommitStep", ["e0"]),
        ("CommitSteps", ["e1", "e2"]),
        ("CommitSteps", ["e3", "e4"]),
        ("CommitStep", ["e5"]),
    ]
    assert [x.version for x in s] == [1, 11, 21, 31, 41, 51]

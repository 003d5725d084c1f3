"""``CommitStream`` through the gRPC server: each message is answered as ``CommitSteps`` would,
in order, and a refused item does not end the stream; the committed events still reach a
subscriber on another replica through Redis in order and with no gap, also when they are
published after the commit's answer is already out; the service's stop ends idle streams."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from helpers.db import Backend
from state_support import Driver, state_settings

from weft.state.v1 import state_pb2, state_pb2_grpc
from weft_common import jsonutil
from weft_state.events import RedisBus
from weft_state.server import RunningStateService, build_store, serve

S = state_pb2


def item(lease: object, version: int, *events: tuple[str, str], status: int = 0) -> S.CommitStepRequest:
    return S.CommitStepRequest(
        lease=S.Lease(execution_id=lease.execution_id, token=lease.token),  # type: ignore[attr-defined]
        expected_version=version,
        events=[S.EventDraft(type=t, node_id=n, payload_json=jsonutil.dumps({"nodeType": "wait"}) if n else "")
                for t, n in events],
        control=S.ControlState(status=status),  # type: ignore[arg-type]
    )


async def test_messages_are_answered_in_order_and_a_refused_item_ends_nothing(
    service: RunningStateService, stub: state_pb2_grpc.StateServiceStub
) -> None:
    driver = Driver(service.store)
    (a, la), (b, lb) = [await driver.create() for _ in range(2)]
    assert la and lb
    call = stub.CommitStream()
    running = 2  # EXECUTION_STATUS_RUNNING
    await call.write(S.CommitStreamRequest(commits=[item(la, 0, ("execution:started", ""), status=running)]))
    first = await call.read()
    assert first.outcomes[0].response.version == 1 and first.outcomes[0].response.last_seq == 1
    # Two executions in one message (one transaction); then a stale writer: refused alone.
    await call.write(S.CommitStreamRequest(commits=[
        item(la, 1, ("node:started", "n1"), ("node:completed", "n1")),
        item(lb, 0, ("execution:started", ""), status=running),
    ]))
    second = await call.read()
    assert [(o.response.version, o.response.last_seq) for o in second.outcomes] == [(2, 3), (1, 1)]
    await call.write(S.CommitStreamRequest(commits=[item(la, 1, ("node:started", "late"))]))
    stale = await call.read()
    assert stale.outcomes[0].code == grpc.StatusCode.ABORTED.value[0]
    assert "STALE_VERSION" in stale.outcomes[0].details_json
    await call.write(S.CommitStreamRequest(commits=[item(lb, 1, ("node:started", "n"))]))
    fourth = await call.read()
    assert fourth.outcomes[0].response.version == 2 and fourth.outcomes[0].response.last_seq == 2
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK
    assert [e.seq for e in await driver.events(a)] == [1, 2, 3]
    assert [e.node_id for e in await driver.events(b)] == ["", "n"]


async def test_committed_events_cross_replicas_in_order_also_published_after_the_answer(
    postgres_backend: Backend,
) -> None:
    """The writer replica answers commits over CommitStream and publishes their events to Redis
    afterwards (here held back until several answers are out); a subscriber on another replica
    gets every event, in order, with no gap, from Redis alone."""
    writer = await serve(state_settings(postgres_backend, port=0))
    reader = await build_store(state_settings(postgres_backend, stream_poll_ms=60_000))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{writer.port}")
    try:
        assert isinstance(writer.bus, RedisBus) and isinstance(reader.bus, RedisBus)
        publisher = writer.bus._publisher
        assert publisher is not None
        for _ in range(100):
            if reader.bus.connected and reader.bus._pubsub is not None:
                break
            await asyncio.sleep(0.05)
        eid, lease = await Driver(writer.store).create()
        assert lease
        sub = reader.bus.subscribe(eid)
        await asyncio.sleep(0.3)  # the reader's SUBSCRIBE has reached Redis
        stub = state_pb2_grpc.StateServiceStub(channel)
        call = stub.CommitStream()

        async def commit(version: int, *events: tuple[str, str], status: int = 0) -> int:
            await call.write(S.CommitStreamRequest(commits=[item(lease, version, *events, status=status)]))
            outcome = (await call.read()).outcomes[0]
            assert outcome.HasField("response"), outcome.message
            return outcome.response.last_seq

        # Held back: the answers come while their events wait in the publisher.
        flush = publisher._flush

        def held() -> None:
            publisher._scheduled = False

        publisher._flush = held  # type: ignore[method-assign]
        assert await commit(0, ("execution:started", ""), status=2) == 1
        for v in range(1, 6):
            assert await commit(v, ("node:started", f"n{v}"), ("node:completed", f"n{v}")) == 1 + 2 * v
        assert await sub.get(0.3) is None  # answered, not yet published
        publisher._flush = flush  # type: ignore[method-assign]
        flush()
        # And the usual way: each commit's events go out right after its answer.
        for v in range(6, 41):
            await commit(v, ("node:started", f"n{v}"), ("node:completed", f"n{v}"))
        await commit(41, ("execution:completed", ""), status=4)  # SUCCEEDED
        await call.done_writing()
        got = []
        while len(got) < 82:
            event = await sub.get(10)
            assert event is not None, f"only {len(got)} of 82 events came through Redis"
            got.append(event)
        assert [e.seq for e in got] == list(range(1, 83))
        assert [jsonutil.loads(e.payload_json)["seq"] for e in got] == list(range(1, 83))
        assert got[-1].type == "execution:completed" and not sub.overflowed
        sub.close()
    finally:
        await channel.close()
        await writer.stop()
        await reader.bus.close()
        await reader.db.close()


async def test_the_service_stops_without_waiting_for_idle_streams(backend: Backend) -> None:
    """An executor's idle commit stream would hold the shutdown for the whole grace period (a
    minute here): ``close_streams`` ends it first, UNAVAILABLE (the writer retries elsewhere)."""
    running = await serve(state_settings(backend, port=0, grpc_shutdown_grace_s=60))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        _, lease = await Driver(running.store).create()
        assert lease
        call = state_pb2_grpc.StateServiceStub(channel).CommitStream()
        await call.write(S.CommitStreamRequest(commits=[item(lease, 0, ("execution:started", ""), status=2)]))
        assert (await call.read()).outcomes[0].response.version == 1
        await asyncio.wait_for(running.stop(), 20)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # the executor retries
    finally:
        await channel.close()

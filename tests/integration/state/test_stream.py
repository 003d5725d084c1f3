"""StreamEvents: replay + live tail with no gap and no duplicate at the seam; many subscribers;
Redis down or across replicas; termination; NOT_FOUND."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from helpers.db import Backend
from integration.executor.tcp_proxy import TcpProxy
from state_support import Driver, ev, state_settings

from weft_common import jsonutil
from weft_common.errors import InvalidArgument, NotFound
from weft_state.domain import EventIn, ExecutionStatus, StoredEvent
from weft_state.events import LiveEvent, RedisBus
from weft_state.server import build_store
from weft_state.store import StateStore
from weft_state.stream import publish_live, stream_events


async def collect(store: StateStore, eid: str, after: int = 0, **kw: object) -> list[StoredEvent]:
    return [e async for e in stream_events(store, eid, after_seq=after, **kw)]  # type: ignore[arg-type]


async def finish(driver: Driver, lease: object, version: int) -> None:
    await driver.commit(
        lease,
        version,
        events=[ev("execution:completed")],  # type: ignore[arg-type]
        status=ExecutionStatus.SUCCEEDED,
    )


async def test_replay_then_tail_across_the_seam(driver: Driver) -> None:
    """Subscribers join while a writer commits: each sees every event exactly once, in order."""
    eid, lease = await driver.create()
    assert lease
    await driver.start(lease)
    commits = 60

    async def write() -> None:
        for i in range(commits):
            await driver.commit(
                lease, i + 1, events=[ev("node:started", f"n{i}"), ev("node:completed", f"n{i}")]
            )
            if i % 7 == 0:
                await asyncio.sleep(0.005)
        await finish(driver, lease, commits + 1)

    async def late_subscriber(delay: float, after: int = 0) -> list[StoredEvent]:
        await asyncio.sleep(delay)
        return await collect(driver.store, eid, after)

    writer = asyncio.create_task(write())
    results = await asyncio.wait_for(
        asyncio.gather(
            *(late_subscriber(d) for d in (0, 0.01, 0.03, 0.08, 0.2)),
            late_subscriber(0.05, after=5),
        ),
        60,
    )
    await writer
    total = 1 + 2 * commits + 1
    for got in results[:-1]:
        assert [e.seq for e in got] == list(range(1, total + 1))
        assert got[-1].type == "execution:completed"
    assert [e.seq for e in results[-1]] == list(range(6, total + 1))


async def test_stream_ends_at_once_when_already_terminal(driver: Driver) -> None:
    eid, lease = await driver.create()
    assert lease
    await driver.start(lease)
    await finish(driver, lease, 1)
    assert [e.seq for e in await asyncio.wait_for(collect(driver.store, eid), 5)] == [1, 2]
    # Replaying from the terminal event's seq returns exactly the (empty) tail and ends.
    assert await asyncio.wait_for(collect(driver.store, eid, after=2), 5) == []
    assert [e.seq for e in await asyncio.wait_for(collect(driver.store, eid, after=1), 5)] == [2]


async def test_follow_after_terminal_keeps_the_stream_open(driver: Driver) -> None:
    eid, lease = await driver.create()
    assert lease
    await driver.start(lease)
    await finish(driver, lease, 1)
    got: list[int] = []

    async def follow() -> None:
        async for e in stream_events(driver.store, eid, follow_after_terminal=True):
            got.append(e.seq)

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.3)
    assert got == [1, 2] and not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_unknown_execution_and_other_owner_are_not_found(driver: Driver) -> None:
    with pytest.raises(NotFound):
        await collect(driver.store, "no-such-execution")
    eid, _ = await driver.create(owner="alice")
    with pytest.raises(NotFound):
        await collect(driver.store, eid, owner="bob")


async def _second_store(backend: Backend, **kw: object) -> StateStore:
    return await build_store(state_settings(backend, **kw))


async def test_dead_redis_loses_no_event(backend: Backend) -> None:
    """Two replicas whose Redis is unreachable: the subscriber on one still gets every event the
    other commits (by polling the database). On SQLite: two stores with in-process buses, which
    share nothing but the file."""
    dead = (
        dataclasses.replace(backend, redis_url="redis://127.0.0.1:1/0")
        if backend.redis_url
        else backend
    )
    reader = await _second_store(dead, stream_poll_ms=100)
    writer = await _second_store(dead)
    try:
        if backend.redis_url:
            assert isinstance(reader.bus, RedisBus)
        wdriver = Driver(writer)
        eid, lease = await wdriver.create()
        assert lease
        await wdriver.start(lease)
        stream = asyncio.create_task(collect(reader, eid))
        for i in range(20):
            await wdriver.commit(lease, i + 1, events=[ev("node:completed", f"n{i}")])
            await asyncio.sleep(0.01)
        await finish(wdriver, lease, 21)
        got = await asyncio.wait_for(stream, 20)
        assert [e.seq for e in got] == list(range(1, 23))
    finally:
        for s in (reader, writer):
            await s.bus.close()
            await s.db.close()


async def test_events_cross_replicas_through_redis(postgres_backend: Backend) -> None:
    """With Redis up, a subscriber on another replica hears commits live (its database poll is
    set to a minute, far beyond the test's patience)."""
    reader = await _second_store(postgres_backend, stream_poll_ms=60_000)
    writer = await _second_store(postgres_backend)
    try:
        assert isinstance(reader.bus, RedisBus) and isinstance(writer.bus, RedisBus)
        for _ in range(100):
            if reader.bus.connected and writer.bus.connected:
                break
            await asyncio.sleep(0.05)
        wdriver = Driver(writer)
        eid, lease = await wdriver.create()
        assert lease
        stream = asyncio.create_task(collect(reader, eid))
        await asyncio.sleep(0.2)  # the reader has replayed (nothing) and is tailing
        await wdriver.start(lease)
        for i in range(10):
            await wdriver.commit(lease, i + 1, events=[ev("node:completed", f"n{i}", output=i)])
        await finish(wdriver, lease, 11)
        got = await asyncio.wait_for(stream, 10)
        assert [e.seq for e in got] == list(range(1, 13))
        assert jsonutil.loads(got[5].payload_json)["output"] == 4
    finally:
        for s in (reader, writer):
            await s.bus.close()
            await s.db.close()


async def test_missed_publish_is_recovered_from_the_database(driver: Driver) -> None:
    """A gap in live events (a lost publish) sends the stream back to the database."""
    eid, lease = await driver.create()
    assert lease
    await driver.start(lease)
    stream = asyncio.create_task(collect(driver.store, eid))
    await asyncio.sleep(0.1)
    publish = driver.store.bus.publish
    driver.store.bus.publish = lambda *a, **k: None  # type: ignore[method-assign]
    try:
        await driver.commit(lease, 1, events=[ev("node:completed", "lost")])
    finally:
        driver.store.bus.publish = publish  # type: ignore[method-assign]
    await driver.commit(lease, 2, events=[ev("node:completed", "seen")])
    await finish(driver, lease, 3)
    got = await asyncio.wait_for(stream, 10)
    assert [(e.seq, e.node_id) for e in got] == [(1, ""), (2, "lost"), (3, "seen"), (4, "")]


async def test_a_slow_subscriber_overflowing_its_buffer_loses_nothing(backend: Backend) -> None:
    """Live events beyond the per-subscriber buffer are dropped from memory, not from the
    stream: it re-reads the database."""
    store = await _second_store(backend, stream_buffer=4, stream_poll_ms=60_000)
    try:
        driver = Driver(store)
        eid, lease = await driver.create()
        assert lease
        await driver.start(lease)
        stream = stream_events(store, eid)
        first = await anext(stream)  # replayed; the stream now tails with a 4-event buffer
        assert first.seq == 1
        await driver.commit(lease, 1, events=[ev("node:completed", f"n{i}") for i in range(30)])
        await finish(driver, lease, 2)
        rest = [e async for e in stream]
        assert [e.seq for e in [first, *rest]] == list(range(1, 33))
    finally:
        await store.bus.close()
        await store.db.close()


async def _until(predicate: Any, what: str, limit_s: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + limit_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_redis_stopping_mid_run_loses_nothing_and_reconnects(
    postgres_backend: Backend,
) -> None:
    """Redis goes away in the middle of an execution (both replicas reach it through a proxy
    that the test cuts) and comes back: the stream on the other replica gets every event, and
    both buses reconnect."""
    with TcpProxy("127.0.0.1", 6379) as proxy:
        via_proxy = dataclasses.replace(
            postgres_backend, redis_url=f"redis://127.0.0.1:{proxy.port}/0"
        )
        reader = await _second_store(via_proxy, stream_poll_ms=200)
        writer = await _second_store(via_proxy)
        try:
            buses = (reader.bus, writer.bus)
            assert all(isinstance(b, RedisBus) for b in buses)
            await _until(lambda: all(b.connected for b in buses), "the buses to connect")  # type: ignore[attr-defined]
            wdriver = Driver(writer)
            eid, lease = await wdriver.create()
            assert lease
            await wdriver.start(lease)
            stream = asyncio.create_task(collect(reader, eid))
            version = 1

            async def burst(n: int) -> None:
                nonlocal version
                for _ in range(n):
                    version = (
                        await wdriver.commit(
                            lease, version, events=[ev("node:completed", f"n{version}")]
                        )
                    ).version
                    await asyncio.sleep(0.01)

            await burst(10)
            proxy.cut()
            await burst(10)
            await _until(lambda: not any(b.connected for b in buses), "the buses to notice")  # type: ignore[attr-defined]
            await burst(5)
            proxy.restore()
            await _until(lambda: all(b.connected for b in buses), "the buses to reconnect")  # type: ignore[attr-defined]
            await burst(10)
            await finish(wdriver, lease, version)
            got = await asyncio.wait_for(stream, 20)
            assert [e.seq for e in got] == list(range(1, 38))
        finally:
            for s in (reader, writer):
                await s.bus.close()
                await s.db.close()


# --- the live lane: stream:chunk events handed over before their commit ---------------------------

_T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def chunk(text: str, node: str = "chat") -> EventIn:
    # Drafts carry their timestamp (as the executor's do), so the live and committed JSON match.
    return EventIn(
        type="stream:chunk",
        node_id=node,
        timestamp=_T0,
        payload_json=jsonutil.dumps({"content": text, "nodeType": "llm"}),
    )


async def _next(it: AsyncIterator[StoredEvent]) -> StoredEvent:
    return await asyncio.wait_for(anext(it), 5)


async def test_live_events_come_before_their_commit_and_the_commit_is_not_repeated(
    driver: Driver,
) -> None:
    eid, lease = await driver.create()
    assert lease
    await driver.start(lease)  # seq 1
    await driver.commit(lease, 1, events=[ev("node:started", "chat")])  # seq 2
    it = stream_events(driver.store, eid).__aiter__()
    assert [(await _next(it)).seq for _ in range(2)] == [1, 2]
    # The stream is tailing: a live event that is the next seq goes out at once...
    publish_live(driver.store, eid, [(3, chunk("a")), (4, chunk("b"))])
    got = [await _next(it), await _next(it)]
    assert [(e.seq, jsonutil.loads(e.payload_json)["content"]) for e in got] == [(3, "a"), (4, "b")]
    assert isinstance(got[0], LiveEvent)
    assert [e.seq for e in await driver.events(eid)] == [1, 2]  # not committed yet
    # ...and its commit, which stores the same events with those seqs, is not delivered again.
    await driver.commit(lease, 2, events=[chunk("a"), chunk("b"), ev("node:completed", "chat")])
    await finish(driver, lease, 3)
    rest = [e async for e in it]
    assert [e.seq for e in rest] == [5, 6]
    stored = {e.seq: e.payload_json for e in await driver.events(eid)}
    assert [e.payload_json for e in got] == [stored[3], stored[4]]  # byte for byte


async def test_a_live_event_ahead_of_the_log_waits_for_its_predecessors(driver: Driver) -> None:
    eid, lease = await driver.create()
    assert lease
    await driver.start(lease)
    it = stream_events(driver.store, eid).__aiter__()
    assert (await _next(it)).seq == 1
    # Seq 3 goes out live while seq 2 (a node:started) is not committed: it waits.
    publish_live(driver.store, eid, [(3, chunk("x"))])
    pending = asyncio.ensure_future(_next(it))
    await asyncio.sleep(0.2)
    assert not pending.done()
    await driver.commit(lease, 1, events=[ev("node:started", "chat"), chunk("x")])
    first = await pending
    second = await _next(it)
    assert [(first.seq, first.type), (second.seq, second.type)] == [
        (2, "node:started"),
        (3, "stream:chunk"),
    ]
    await finish(driver, lease, 2)
    assert [e.seq for e in [e async for e in it]] == [4]


async def test_a_reconnect_after_an_uncommitted_live_event_continues_after_it(
    driver: Driver,
) -> None:
    """A client that saw seq 3 live (not committed) reconnects with after_seq=3: it gets 4 on,
    once 4 is live or committed, and never 3 again."""
    eid, lease = await driver.create()
    assert lease
    await driver.start(lease)
    await driver.commit(lease, 1, events=[ev("node:started", "chat")])
    stream = asyncio.create_task(collect(driver.store, eid, after=3))
    await asyncio.sleep(0.1)
    publish_live(driver.store, eid, [(3, chunk("a")), (4, chunk("b"))])
    await driver.commit(lease, 2, events=[chunk("a"), chunk("b"), chunk("c")])
    await finish(driver, lease, 3)
    got = await asyncio.wait_for(stream, 10)
    assert [e.seq for e in got] == [4, 5, 6]


async def test_only_chunks_with_a_seq_can_go_live(driver: Driver) -> None:
    eid, _ = await driver.create()
    with pytest.raises(InvalidArgument):
        publish_live(driver.store, eid, [(2, ev("execution:completed"))])
    with pytest.raises(InvalidArgument):
        publish_live(driver.store, eid, [(0, chunk("a"))])


async def test_live_events_cross_replicas_through_redis(postgres_backend: Backend) -> None:
    """A chunk handed to one replica reaches a stream on another through Redis before it is
    committed (the reader's database poll is a minute away)."""
    reader = await _second_store(postgres_backend, stream_poll_ms=60_000)
    writer = await _second_store(postgres_backend)
    try:
        for _ in range(100):
            if reader.bus.connected and writer.bus.connected:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.05)
        wdriver = Driver(writer)
        eid, lease = await wdriver.create()
        assert lease
        await wdriver.start(lease)
        it = stream_events(reader, eid).__aiter__()
        assert (await _next(it)).seq == 1
        await asyncio.sleep(0.2)  # the reader's SUBSCRIBE has reached Redis
        publish_live(writer, eid, [(2, chunk("hello"))])
        live = await _next(it)
        assert isinstance(live, LiveEvent) and live.seq == 2
        assert [e.seq for e in await wdriver.events(eid)] == [1]
        await wdriver.commit(lease, 1, events=[chunk("hello")])
        await finish(wdriver, lease, 2)
        assert [e.seq for e in [e async for e in it]] == [3]
    finally:
        for s in (reader, writer):
            await s.bus.close()
            await s.db.close()


@pytest.mark.parametrize(
    "scripts", [None, True, False], ids=["lean-publisher", "one-eval-per-batch", "refused-script"]
)
async def test_a_burst_of_publishes_crosses_replicas_complete_and_in_order(
    postgres_backend: Backend, scripts: bool | None
) -> None:
    """A burst of publishes on several channels (sent in batches: by the bus's own publisher on
    a plain TCP Redis; through redis-py on TLS or a Unix socket, one EVAL per batch, or one
    PUBLISH each once Redis refuses the script) reaches the other replica whole and in order
    per execution, interleaved with an execution nobody streams there."""
    from redis.exceptions import ResponseError

    prefix = f"{postgres_backend.redis_prefix}burst{scripts}:"
    writer = RedisBus(postgres_backend.redis_url, prefix=prefix)
    reader = RedisBus(postgres_backend.redis_url, prefix=prefix)
    assert writer._publisher is not None  # plain TCP
    if scripts is not None:
        writer._publisher = None  # the redis-py path (what TLS and Unix sockets take)
    await writer.start()
    await reader.start()
    try:
        refusals = evals = 0
        if scripts:
            evaluate = writer._redis.eval

            async def count(*args: object) -> object:
                nonlocal evals
                evals += 1
                return await evaluate(*args)  # type: ignore[arg-type]

            writer._redis.eval = count  # type: ignore[method-assign]
        elif scripts is False:
            async def refuse(*args: object) -> None:
                nonlocal refusals
                refusals += 1
                raise ResponseError("NOPERM this user has no permissions to run the 'eval' command")

            writer._redis.eval = refuse  # type: ignore[method-assign]
        subs = {eid: reader.subscribe(eid) for eid in ("a", "b", "c")}
        for _ in range(100):
            if reader.connected and writer.connected and reader._pubsub is not None:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # the SUBSCRIBEs took effect
        n = 700  # more than one send batch (512 messages)
        for seq in range(1, n + 1):
            for eid in ("a", "b", "c", "unwatched"):
                writer.publish(eid, [StoredEvent(eid, seq, "node:completed", "n", f'{{"seq":{seq}}}')])
        for eid, sub in subs.items():
            got = []
            while len(got) < n:
                event = await sub.get(10)
                assert event is not None, f"{eid}: only {len(got)} of {n} events arrived"
                got.append(event)
            assert [e.seq for e in got] == list(range(1, n + 1))
            assert {e.execution_id for e in got} == {eid} and not sub.overflowed
        if scripts is None:
            assert writer._publisher is not None and 1 <= writer._publisher.batches < 4 * n
            assert evals == refusals == 0
        else:
            assert writer._scripts is scripts
            assert refusals == (0 if scripts else 1)
            assert (evals >= 1) is scripts  # the script carried the batches (4 x 700 messages)
    finally:
        await reader.close()
        await writer.close()

"""CommitStep: one atomic transaction, optimistic concurrency, contiguous seqs."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3

import asyncpg
import pytest
from helpers.db import Backend
from sqlalchemy.exc import DBAPIError
from state_support import Driver, ev, node_log, step

from weft_common import jsonutil
from weft_common.errors import Conflict, InvalidArgument, NotFound
from weft_state.clock import utcnow
from weft_state.domain import EventIn, ExecutionStatus, LeaseRef
from weft_state.executions import get_execution, list_node_logs
from weft_state.leases import load_execution


async def test_commit_writes_steps_logs_events_and_control(driver: Driver) -> None:
    eid, lease = await driver.create()
    assert lease is not None
    r1 = await driver.start(lease)
    assert (r1.version, r1.last_seq) == (1, 1)
    r2 = await driver.commit(
        lease,
        1,
        steps=[step("a", {"n": 1})],
        logs=[node_log("a", input_json='{"in": 1}', output_json='{"n": 1}')],
        events=[
            ev("node:started", "a", nodeType="transform"),
            ev("node:completed", "a", output={"n": 1}),
        ],
        variables_json='{"v": 2}',
        input_tokens=3,
        output_tokens=4,
    )
    assert (r2.version, r2.last_seq) == (2, 3)
    r3 = await driver.commit(
        lease,
        2,
        events=[ev("execution:completed")],
        status=ExecutionStatus.SUCCEEDED,
        outputs_json='{"out": 1}',
        input_tokens=1,
    )
    assert (r3.version, r3.last_seq) == (3, 4)

    rec = await get_execution(driver.store, eid)
    assert rec.status is ExecutionStatus.SUCCEEDED
    assert jsonutil.loads(rec.outputs_json) == {"out": 1}
    assert (rec.input_tokens, rec.output_tokens, rec.last_seq, rec.version) == (4, 4, 4, 3)
    assert rec.started_at is not None and rec.finished_at is not None
    assert rec.started_at <= rec.finished_at

    events = await driver.events(eid)
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert [e.type for e in events] == [
        "execution:started",
        "node:started",
        "node:completed",
        "execution:completed",
    ]
    body = jsonutil.loads(events[2].payload_json)
    assert body["seq"] == 3 and body["type"] == "node:completed" and body["executionId"] == eid
    assert body["nodeId"] == "a" and body["scope"] == [] and body["output"] == {"n": 1}
    assert body["timestamp"].endswith("Z") and len(body["timestamp"]) == len(
        "2026-01-01T00:00:00.000Z"
    )

    logs = await list_node_logs(driver.store, eid)
    assert [(n.node_id, n.status, n.input_json) for n in logs] == [("a", "SUCCEEDED", '{"in": 1}')]


async def test_node_log_is_upserted_per_run(driver: Driver) -> None:
    eid, lease = await driver.create()
    assert lease
    await driver.start(lease)
    await driver.commit(lease, 1, logs=[node_log("a", "RUNNING", input_json='{"i": 1}')])
    await driver.commit(lease, 2, logs=[node_log("a", "SUCCEEDED", output_json="5", attempt=2)])
    logs = await list_node_logs(driver.store, eid)
    assert len(logs) == 1
    assert (logs[0].status, logs[0].input_json, logs[0].output_json, logs[0].attempt) == (
        "SUCCEEDED",
        '{"i": 1}',
        "5",
        2,
    )


async def test_a_failing_commit_leaves_nothing(driver: Driver) -> None:
    eid, lease = await driver.create()
    assert lease
    await driver.start(lease)
    # The second event is malformed: the transaction has already updated the execution row and
    # is about to insert; everything must roll back.
    with pytest.raises(InvalidArgument):
        await driver.commit(
            lease,
            1,
            steps=[step("a", 1)],
            logs=[node_log("a")],
            events=[ev("node:completed", "a"), EventIn(type="node:completed", payload_json="[1]")],
            status=ExecutionStatus.SUCCEEDED,
            outputs_json='{"o": 1}',
        )
    rec = await get_execution(driver.store, eid)
    assert (rec.version, rec.last_seq, rec.status) == (1, 1, ExecutionStatus.RUNNING)
    assert rec.outputs_json == ""
    assert [e.seq for e in await driver.events(eid)] == [1]
    assert await list_node_logs(driver.store, eid) == []
    loaded = await load_execution(driver.store, LeaseRef(eid, lease.token))
    assert loaded.steps == [] and loaded.version == 1
    # The same commit, well-formed, then goes through at the same version.
    res = await driver.commit(lease, 1, steps=[step("a", 1)], events=[ev("node:completed", "a")])
    assert (res.version, res.last_seq) == (2, 2)


async def test_stale_version_is_refused_and_not_merged(driver: Driver) -> None:
    eid, lease = await driver.create()
    assert lease
    await driver.start(lease)
    await driver.commit(lease, 1, steps=[step("a", "first")], events=[ev("node:completed", "a")])
    with pytest.raises(Conflict, match="stale version 1, current is 2") as info:
        await driver.commit(
            lease,
            1,
            steps=[step("b", "stale")],
            events=[ev("node:completed", "b")],
            variables_json='{"stale": true}',
        )
    assert info.value.details["reason"] == "STALE_VERSION"
    loaded = await load_execution(driver.store, LeaseRef(eid, lease.token))
    assert [s.node_id for s in loaded.steps] == ["a"]
    assert loaded.variables_json == "" and loaded.version == 2
    assert [e.seq for e in await driver.events(eid)] == [1, 2]


async def test_wrong_lease_token_is_refused(driver: Driver) -> None:
    eid, lease = await driver.create()
    assert lease
    with pytest.raises(Conflict, match="lease lost"):
        await driver.commit(LeaseRef(eid, "not-the-token"), 0, events=[ev("execution:started")])
    with pytest.raises(NotFound):
        await driver.commit(LeaseRef("no-such-execution", "t"), 0)
    assert await driver.events(eid) == []


async def test_concurrent_writers_same_version_exactly_one_wins(driver: Driver) -> None:
    eid, lease = await driver.create()
    assert lease
    await driver.start(lease)
    results = await asyncio.gather(
        *(
            driver.commit(
                lease, 1, steps=[step(f"n{i}", i)], events=[ev("node:completed", f"n{i}")]
            )
            for i in range(8)
        ),
        return_exceptions=True,
    )
    wins = [r for r in results if not isinstance(r, BaseException)]
    assert len(wins) == 1
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, BaseException))
    assert [e.seq for e in await driver.events(eid)] == [1, 2]


async def test_seq_is_contiguous_under_concurrent_writers(driver: Driver) -> None:
    """Writers race on one execution (each retries on conflict with the version it reads back);
    cancellation requests interleave. Every committed event gets the next seq, no gap."""
    eid, lease = await driver.create()
    assert lease
    await driver.start(lease)
    per_writer, writers = 6, 5

    async def writer(w: int) -> int:
        done = 0
        while done < per_writer:
            version = (await get_execution(driver.store, eid)).version
            try:
                await driver.commit(
                    lease,
                    version,
                    steps=[step(f"w{w}_{done}", done)],
                    events=[
                        ev("node:started", f"w{w}_{done}"),
                        ev("node:completed", f"w{w}_{done}"),
                    ],
                )
                done += 1
            except Conflict:
                await asyncio.sleep(0)
        return done

    assert await asyncio.gather(*(writer(w) for w in range(writers))) == [per_writer] * writers
    events = await driver.events(eid)
    assert [e.seq for e in events] == list(range(1, 2 + 2 * per_writer * writers))
    body_seqs = [jsonutil.loads(e.payload_json)["seq"] for e in events]
    assert body_seqs == [e.seq for e in events]
    # Each writer's started/completed pair is adjacent: one commit is one contiguous block.
    for i in range(1, len(events), 2):
        assert events[i].type == "node:started" and events[i + 1].node_id == events[i].node_id
    loaded = await load_execution(driver.store, LeaseRef(eid, lease.token))
    assert [s.step_seq for s in loaded.steps] == list(range(1, per_writer * writers + 1))


async def test_a_commit_failing_inside_the_database_leaves_nothing(
    driver: Driver, backend: Backend
) -> None:
    """The database itself rejects part of the commit (a value too long for its column on
    PostgreSQL; a foreign-key violation would do the same): steps and events written before
    it in the same commit are rolled back."""
    eid, lease = await driver.create()
    assert lease
    await driver.start(lease)
    bad_log = node_log("a", status="S" * 100) if backend.name == "postgres" else node_log("a")
    if backend.name == "sqlite":  # SQLite ignores VARCHAR lengths: break the NOT NULL instead
        bad_log = dataclasses.replace(bad_log, status=None)  # type: ignore[arg-type]
    # SQLite's fast path (commits_sqlite) raises the sqlite3 error itself, not SQLAlchemy's wrap.
    with pytest.raises((DBAPIError, asyncpg.PostgresError, sqlite3.DatabaseError)):
        await driver.commit(
            lease,
            1,
            steps=[step("a", 1)],
            events=[ev("node:completed", "a")],
            logs=[bad_log],
            status=ExecutionStatus.SUCCEEDED,
        )
    rec = await get_execution(driver.store, eid)
    assert (rec.version, rec.last_seq, rec.status) == (1, 1, ExecutionStatus.RUNNING)
    assert [e.seq for e in await driver.events(eid)] == [1]
    assert (await load_execution(driver.store, LeaseRef(eid, lease.token))).steps == []


async def test_a_batch_may_repeat_a_node_run(driver: Driver) -> None:
    """A grouped commit can carry a run's RUNNING and final records, or a step key twice."""
    eid, lease = await driver.create()
    assert lease
    await driver.start(lease)
    t0 = utcnow()
    await driver.commit(
        lease,
        1,
        steps=[step("a", "old"), step("b", 2), step("a", "new")],
        logs=[
            node_log("a", "RUNNING", input_json='{"i": 1}', started_at=t0),
            node_log("a", "SUCCEEDED", output_json='"new"', started_at=None, node_type=""),
        ],
        events=[ev("node:started", "a"), ev("node:completed", "a")],
    )
    loaded = await load_execution(driver.store, LeaseRef(eid, lease.token))
    assert [(s.node_id, s.output_json, s.step_seq) for s in loaded.steps] == [
        ("b", "2", 1),
        ("a", '"new"', 2),
    ]
    [log] = await list_node_logs(driver.store, eid)
    assert (log.status, log.input_json, log.output_json, log.node_type) == (
        "SUCCEEDED",
        '{"i": 1}',
        '"new"',
        "transform",
    )
    assert log.started_at is not None and abs((log.started_at - t0).total_seconds()) < 0.001

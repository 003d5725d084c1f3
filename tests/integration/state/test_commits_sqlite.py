"""The embedded SQLite fast commit path (``commits_sqlite``) writes exactly what the general path
writes, is the path ordinary commits take, and hands what it must not handle to the general
path without writing anything."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from helpers.db import Backend
from sqlalchemy import select
from state_support import Driver, approval, ev, node_log, state_settings, step

from weft_common.errors import Conflict
from weft_state import commits, commits_sqlite
from weft_state.clock import utcnow
from weft_state.domain import (
    CommitRequest,
    CommitResult,
    ControlChange,
    ExecutionStatus,
    LeaseRef,
    StepRow,
)
from weft_state.server import build_store
from weft_state.store import EV, NL, ST, E, StateStore


@pytest.fixture
async def sqlite_store(sqlite_backend: Backend) -> Any:
    store = await build_store(state_settings(sqlite_backend))
    try:
        yield store
    finally:
        await store.bus.close()
        await store.db.close()


class Counting:
    """Counts the fast path's outcomes: (written, refused)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, disabled: bool = False) -> None:
        self.written = self.refused = 0
        real = commits_sqlite.commit_fast

        async def commit_fast(store: StateStore, item: commits_sqlite.Prepared) -> bool:
            done = await real(store, item)
            if done:
                self.written += 1
            else:
                self.refused += 1
            return done

        monkeypatch.setattr(commits_sqlite, "commit_fast", commit_fast)
        if disabled:
            monkeypatch.setattr(commits_sqlite, "prepare", lambda *a: None)


SCOPE = ({"container": "each", "index": 2},)


async def _play(driver: Driver) -> str:
    """Every kind of fast-path commit: start, a run's RUNNING then final record (the later one
    keeps the input, type and start the earlier said), scoped steps, a re-committed step key,
    fired handles, a failed step, tokens, variables, a durable wake-up, a release, the end."""
    eid, lease = await driver.create()
    assert lease
    v = (await driver.start(lease)).version
    started = utcnow() - timedelta(seconds=2)
    v = (
        await driver.commit(
            lease,
            v,
            events=[ev("node:started", "a", nodeType="transform")],
            logs=[node_log("a", "RUNNING", input_json='{"x":1}', started_at=started)],
        )
    ).version
    v = (
        await driver.commit(
            lease,
            v,
            events=[ev("node:completed", "a", output={"y": 2}), ev("node:started", "b")],
            steps=[step("a", {"y": 2})],
            logs=[
                node_log(
                    "a",
                    output_json='{"y":2}',
                    node_type="",
                    started_at=None,
                    finished_at=utcnow(),
                    duration_us=1234,
                ),
            ],
            variables_json='{"v":1}',
            input_tokens=10,
            output_tokens=20,
            tokens_estimated=True,
        )
    ).version
    scoped = [
        StepRow(
            key=f"b@each:{i}",
            node_id="b",
            scope=SCOPE,
            status="SUCCEEDED",
            output_json=str(i),
            fired_handles=("true",),
            data_json='{"d":1}',
        )
        for i in range(3)
    ]
    v = (await driver.commit(lease, v, steps=scoped, logs=[node_log("b", attempt=2)])).version
    v = (await driver.commit(lease, v, steps=[step("a", {"y": 3})])).version  # re-run of a
    v = (
        await driver.commit(
            lease,
            v,
            events=[ev("node:failed", "c", error={"code": "X"})],
            steps=[
                StepRow(
                    key="c",
                    node_id="c",
                    scope=(),
                    status="FAILED",
                    error={"code": "X", "message": "boom"},
                )
            ],
            logs=[node_log("c", "FAILED", error={"code": "X"}, token_usage={"inputTokens": 3})],
            wake_at=utcnow() + timedelta(minutes=5),
        )
    ).version
    await driver.commit(lease, v, status=ExecutionStatus.RUNNING, release_lease=True)
    return eid


async def _rows(store: StateStore, eid: str) -> dict[str, Any]:
    """Everything stored for ``eid``, ids and times the two runs cannot share normalised."""
    async with store.db.engine.connect() as conn:
        execution = dict(
            (await conn.execute(select(E).where(E.c.execution_id == eid))).one()._mapping
        )
        steps = [
            dict(r._mapping)
            for r in await conn.execute(
                select(ST).where(ST.c.execution_id == eid).order_by(ST.c.step_seq)
            )
        ]
        logs = [
            dict(r._mapping)
            for r in await conn.execute(
                select(NL).where(NL.c.execution_id == eid).order_by(NL.c.ordinal)
            )
        ]
        events = [
            dict(r._mapping)
            for r in await conn.execute(
                select(EV).where(EV.c.execution_id == eid).order_by(EV.c.seq)
            )
        ]
    timestamps = {
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
        "wake_at",
        "lease_expires_at",
    }
    for row in (execution, *steps, *logs, *events):
        for key in list(row):
            if key in ("execution_id", "workflow_id", "lease_owner", "lease_token"):
                row[key] = "<id>" if row[key] else row[key]
            elif key in timestamps:
                row[key] = type(row[key]).__name__  # set or not (the two runs differ in time)
    for e in events:
        e["payload_json"] = re.sub(
            r'"(executionId|timestamp)":"[^"]*"', r'"\1":"<>"', e["payload_json"]
        )
    return {"execution": execution, "steps": steps, "node_logs": logs, "events": events}


async def test_fast_path_writes_what_the_general_path_writes(
    sqlite_store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = Counting(monkeypatch)
    driver = Driver(sqlite_store)
    fast_id = await _play(driver)
    assert (fast.written, fast.refused) == (7, 0)  # every commit of the play took it
    monkeypatch.undo()
    slow = Counting(monkeypatch, disabled=True)
    slow_id = await _play(driver)
    assert slow.written == 0
    assert await _rows(sqlite_store, fast_id) == await _rows(sqlite_store, slow_id)


async def test_terminal_commit_and_stale_writers(
    sqlite_store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = Counting(monkeypatch)
    driver = Driver(sqlite_store)
    eid, lease = await driver.create()
    assert lease
    v = (await driver.start(lease)).version
    # A stale writer: refused by the guard, then by the general path with the reason.
    with pytest.raises(Conflict, match="stale version"):
        await driver.commit(lease, v - 1, steps=[step("a", 1)])
    assert fast.refused == 1
    with pytest.raises(Conflict, match="lease lost"):
        await driver.commit(LeaseRef(eid, "not-the-token"), v, steps=[step("a", 1)])
    done = await driver.commit(
        lease,
        v,
        events=[ev("execution:completed")],
        steps=[step("a", 1)],
        status=ExecutionStatus.SUCCEEDED,
        outputs_json='{"out":1}',
    )
    assert fast.written == 2  # start, end
    rec = (await _rows(sqlite_store, eid))["execution"]
    assert rec["status"] == "SUCCEEDED" and rec["outputs_json"] == '{"out":1}'
    assert rec["lease_token"] is None and rec["finished_at"] == "datetime"
    assert done.last_seq == 2 and [e.seq for e in await driver.events(eid)] == [1, 2]


async def test_pauses_take_the_general_path_and_nothing_is_written_twice(
    sqlite_store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parking goes to the general path before any write; a step of a parked node (closing its
    pause) is refused by the guard and then written once by the general path."""
    fast = Counting(monkeypatch)
    driver = Driver(sqlite_store)
    eid, lease = await driver.create()
    assert lease
    v = (await driver.start(lease)).version
    v = (
        await driver.commit(
            lease, v, events=[ev("node:started", "approve")], paused_nodes=(approval(),)
        )
    ).version
    assert fast.written == 1 and fast.refused == 0  # the park never reached the fast path
    # Another branch's step while the pause is open: still fast.
    v = (await driver.commit(lease, v, steps=[step("a", 1)])).version
    assert fast.written == 2
    # The parked node's own step closes the pause: the guard refuses, the general path writes.
    v = (
        await driver.commit(
            lease,
            v,
            events=[ev("node:completed", "approve")],
            steps=[step("approve", {"approved": True})],
        )
    ).version
    assert fast.refused == 1
    rec = await _rows(sqlite_store, eid)
    assert rec["execution"]["open_pauses"] == 0
    assert [s["key"] for s in rec["steps"]] == ["a", "approve"]
    assert [e["seq"] for e in rec["events"]] == [1, 2, 3]


async def test_group_commit_is_one_transaction_and_refuses_items_alone(
    sqlite_store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = commits_sqlite.commit_fast_group

    async def group(store: StateStore, items: Any) -> list[bool]:
        calls.append(len(items))
        return await real(store, items)

    monkeypatch.setattr(commits_sqlite, "commit_fast_group", group)
    driver = Driver(sqlite_store)
    leases = []
    for _ in range(3):
        _, lease = await driver.create()
        assert lease
        await driver.start(lease)
        leases.append(lease)
    reqs = [
        CommitRequest(
            lease=LeaseRef(lease.execution_id, lease.token),
            expected_version=1 if i != 1 else 0,  # the second one is stale
            steps=(step("a", i),),
            node_logs=(),
            events=(ev("node:completed", "a"),),
            control=ControlChange(),
        )
        for i, lease in enumerate(leases)
    ]
    out = await commits.commit_steps(sqlite_store, reqs)
    assert calls == [3]  # one transaction for the three
    assert isinstance(out[0], CommitResult) and out[0].last_seq == 2
    assert isinstance(out[1], Conflict)
    assert isinstance(out[2], CommitResult) and out[2].version == 2
    assert [e.seq for e in await driver.events(leases[1].execution_id)] == [1]

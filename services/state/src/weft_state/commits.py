"""CommitStep: one transaction per completed step.

On PostgreSQL most commits take the one-statement fast path in ``commits_pg``. The general
path, here: the execution row is updated first — ``UPDATE ... WHERE version = expected AND lease_token =
token RETURNING last_seq`` — which both checks optimistic concurrency and takes the row lock, so
concurrent writers of one execution serialise on it and a stale one matches no row (ABORTED,
nothing written). The returned ``last_seq`` reserves this commit's event seqs. Then the steps,
node logs and events are inserted in bulk; the pause table is touched only when the commit parks
nodes, applies resumes, or completes a step while pauses are open. Every write is O(size of the
step). Events are published to the bus after the transaction commits.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import and_, case, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from weft_common import jsonutil
from weft_common.errors import Conflict, InvalidArgument, NotFound, Unavailable, WeftError

from . import commits_sqlite
from .children import (
    Cascade,
    Family,
    cancel_children,
    claim_if_child_ended,
    lock_family,
    wake_parent,
)
from .clock import utcnow
from .commits_pg import FAST_COMMIT_BATCH_SQL, FAST_COMMIT_SQL, fast_commit_args
from .database import is_transient_error
from .domain import (
    TERMINAL_STATUSES,
    CommitRequest,
    CommitResult,
    NodeLogRow,
    PausedNode,
    StepRow,
    StoredEvent,
    scope_key,
    scope_to_json,
)
from .eventlog import append_events, event_tail, with_seq
from .store import (
    NL,
    PAUSE_APPLIED,
    PAUSE_CANCELLED,
    PAUSE_CLAIMED,
    PAUSE_OPEN,
    ST,
    E,
    P,
    StateStore,
)

__all__ = ["commit_step", "commit_steps"]

log = logging.getLogger("weft.state.commits")


def _json_or_empty(value: Any) -> str:
    return "" if value is None else jsonutil.dumps(value)


def _dedupe_steps(steps: tuple[StepRow, ...]) -> tuple[StepRow, ...]:
    """One row per key (a batch may re-commit a key): the last one wins."""
    if len({s.key for s in steps}) == len(steps):
        return steps
    last: dict[str, StepRow] = {}
    for s in steps:
        last.pop(s.key, None)
        last[s.key] = s
    return tuple(last.values())


def _dedupe_logs(logs: tuple[NodeLogRow, ...]) -> tuple[NodeLogRow, ...]:
    """One record per node run (a batch may hold its RUNNING and its final record): the later
    wins, keeping what only the earlier said (input, type, start)."""
    keys = [(n.node_id, scope_key(n.scope)) for n in logs]
    if len(set(keys)) == len(keys):
        return logs
    merged: dict[tuple[str, str], NodeLogRow] = {}
    for key, n in zip(keys, logs, strict=True):
        old = merged.pop(key, None)
        if old is not None:
            n = replace(
                n,
                input_json=n.input_json or old.input_json,
                node_type=n.node_type or old.node_type,
                started_at=old.started_at or n.started_at,
            )
        merged[key] = n
    return tuple(merged.values())


def _deduped(req: CommitRequest) -> CommitRequest:
    steps, logs = _dedupe_steps(req.steps), _dedupe_logs(req.node_logs)
    if steps is req.steps and logs is req.node_logs:
        return req  # the usual case: no repeat, no copy
    return replace(req, steps=steps, node_logs=logs)


async def commit_step(store: StateStore, req: CommitRequest) -> CommitResult:
    req = _deduped(req)
    now = utcnow()
    if store.db.pg_pool is not None:
        done = await _commit_fast(store, req, now)
        if done is not None:
            return done
    elif (item := commits_sqlite.prepare(store, req, now)) is not None:
        if await commits_sqlite.commit_fast(store, item):
            return _fast_done(store, req, item)
    return await _commit_general(store, req, now)


def _fast_done(
    store: StateStore, req: CommitRequest, item: commits_sqlite.Prepared
) -> CommitResult:
    """A commit the SQLite fast path wrote: publish its events, answer it."""
    assert item.result is not None
    _after_commit(store, req, item.stored_events())
    version, last_seq = item.result
    return CommitResult(version=version, last_seq=last_seq)


async def _commit_fast(store: StateStore, req: CommitRequest, now: datetime) -> CommitResult | None:
    """PostgreSQL: the whole commit in one statement (see ``commits_pg``); None when this
    commit needs the general path (pauses, or the guard refused: stale, lost, open pauses)."""
    execution_id = req.lease.execution_id
    tails = [event_tail(execution_id, d, now) for d in req.events]
    args = fast_commit_args(req, tails, now)
    if args is None:
        return None
    pool = store.db.pg_pool
    assert pool is not None
    conn = await pool.acquire()
    try:
        row = await conn.fetchrow(FAST_COMMIT_SQL, *args)
    finally:
        _release_soon(pool, conn)
    if row is None:
        return None  # the general path says why, or handles the open pauses
    first = row["last_seq"] - len(tails) + 1
    events = [
        StoredEvent(execution_id, first + i, d.type, d.node_id, with_seq(first + i, tail))
        for i, (d, tail) in enumerate(zip(req.events, tails, strict=True))
    ]
    _after_commit(store, req, events)
    return CommitResult(version=row["version"], last_seq=row["last_seq"])


_releasing: set[asyncio.Task[None]] = set()


def _release_soon(pool: asyncpg.Pool, conn: Any) -> None:
    """Give the connection back in a task of its own: ``Pool.release`` takes two turns of the
    event loop (a shielded task), which the commit's answer need not wait for."""
    task = asyncio.get_running_loop().create_task(pool.release(conn))
    _releasing.add(task)
    task.add_done_callback(_releasing.discard)


async def commit_steps(
    store: StateStore, reqs: Sequence[CommitRequest]
) -> list[CommitResult | WeftError]:
    """``CommitSteps``: the commits of several executions (at most one each), each answered on
    its own — its result, or the error ``commit_step`` would raise (a stale item is refused
    without failing the others).

    On PostgreSQL the items that fit the fast path go together: the one-statement commit once
    per item, pipelined in one round trip and ONE transaction (one WAL flush for the group),
    rows locked in execution-id order. Nothing is answered before that transaction committed.
    Items the fast path leaves (pauses, a refused guard) and, if the group transaction fails
    (a deadlock, any error the server reports: nothing of it was written), every item take
    the single-commit paths, one transaction each. A lost connection during the group commit
    is ambiguous (it may have committed): the whole call fails UNAVAILABLE, and each writer's
    retry finds out (the same rule as a retried ``CommitStep``).
    """
    reqs = [_deduped(r) for r in reqs]
    if len({r.lease.execution_id for r in reqs}) != len(reqs):
        raise InvalidArgument("CommitSteps: at most one commit per execution")
    out: list[CommitResult | WeftError | None] = [None] * len(reqs)
    general = [False] * len(reqs)  # the fast path refused it: only the general path remains
    if store.db.pg_pool is not None and reqs:
        await _commit_fast_group(store, reqs, out, general)
    elif reqs:
        await _commit_sqlite_group(store, reqs, out, general)
    for i, req in enumerate(reqs):
        if out[i] is not None:
            continue
        try:
            if general[i]:
                out[i] = await _commit_general(store, req, utcnow())
            else:
                out[i] = await commit_step(store, req)
        except WeftError as exc:
            out[i] = exc
        except Exception as exc:
            if is_transient_error(exc):
                out[i] = Unavailable(f"database unavailable: {exc}")
            else:
                log.exception("commit of execution %s failed", req.lease.execution_id)
                out[i] = WeftError(f"commit failed: {exc}")
    return [r for r in out if r is not None]


async def _commit_fast_group(
    store: StateStore,
    reqs: list[CommitRequest],
    out: list[CommitResult | WeftError | None],
    general: list[bool],
) -> None:
    now = utcnow()
    items: list[tuple[int, CommitRequest, list[str], list[Any]]] = []
    for i, req in enumerate(reqs):
        try:
            tails = [event_tail(req.lease.execution_id, d, now) for d in req.events]
        except WeftError as exc:  # a malformed event payload fails its own item only
            out[i] = exc
            continue
        args = fast_commit_args(req, tails, now)
        if args is None:
            general[i] = True
        else:
            items.append((i, req, tails, args))
    if not items:
        return
    # One lock order for every group: two groups (or a group and a multi-row update elsewhere)
    # never wait on each other crosswise.
    items.sort(key=lambda item: item[1].lease.execution_id)
    pool = store.db.pg_pool
    assert pool is not None
    try:
        conn = await pool.acquire()
        try:
            rows = await conn.fetchmany(FAST_COMMIT_BATCH_SQL, [item[3] for item in items])
        finally:
            _release_soon(pool, conn)
    except asyncpg.PostgresError as exc:
        if isinstance(exc, asyncpg.PostgresConnectionError):
            raise
        # The server refused the group (a deadlock, ...): its transaction rolled back, so
        # every item is still to do, one by one.
        log.info(
            "group commit of %d items refused (%s); committing them one by one", len(items), exc
        )
        return
    for (i, req, tails, _), row in zip(items, rows, strict=True):
        if row["version"] is None:
            general[i] = True  # the general path says why, or handles the open pauses
            continue
        first = row["last_seq"] - len(tails) + 1
        events = [
            StoredEvent(
                req.lease.execution_id, first + k, d.type, d.node_id, with_seq(first + k, tail)
            )
            for k, (d, tail) in enumerate(zip(req.events, tails, strict=True))
        ]
        _after_commit(store, req, events)
        out[i] = CommitResult(version=row["version"], last_seq=row["last_seq"])


async def _commit_sqlite_group(
    store: StateStore,
    reqs: list[CommitRequest],
    out: list[CommitResult | WeftError | None],
    general: list[bool],
) -> None:
    """The SQLite form of ``_commit_fast_group``: the items that fit the fast path in ONE
    transaction, in one hop to the connection's thread."""
    now = utcnow()
    items: list[tuple[int, CommitRequest, commits_sqlite.Prepared]] = []
    for i, req in enumerate(reqs):
        try:
            item = commits_sqlite.prepare(store, req, now)
        except WeftError as exc:  # a malformed event payload fails its own item only
            out[i] = exc
            continue
        if item is None:
            general[i] = True
        else:
            items.append((i, req, item))
    if not items:
        return
    try:
        written = await commits_sqlite.commit_fast_group(store, [item for _, _, item in items])
    except sqlite3.DatabaseError as exc:
        # Rolled back: every item is still to do, one by one (transient errors are retried by
        # the writers when the single commits fail the same way).
        log.info(
            "group commit of %d items refused (%s); committing them one by one", len(items), exc
        )
        return
    for (i, req, item), done in zip(items, written, strict=True):
        if done:
            out[i] = _fast_done(store, req, item)
        else:
            general[i] = True


def _after_commit(store: StateStore, req: CommitRequest, events: list[StoredEvent]) -> None:
    store.bus.publish(req.lease.execution_id, events)
    status = req.control.status
    if req.control.release_lease and status not in TERMINAL_STATUSES:
        store.bus.notify_work()  # it may be runnable again (a resume queued meanwhile, a wake-up)


async def _commit_general(store: StateStore, req: CommitRequest, now: datetime) -> CommitResult:
    execution_id = req.lease.execution_id
    control = req.control
    values: dict[str, Any] = {
        "version": E.c.version + 1,
        "updated_at": now,
        "started_at": func.coalesce(E.c.started_at, now),
    }
    if req.events:
        values["last_seq"] = E.c.last_seq + len(req.events)
    if req.steps:
        values["step_seq"] = E.c.step_seq + len(req.steps)
    status = control.status
    if status is not None:
        values["status"] = status.value
        # A status says the whole truth about wake-ups: PAUSED carries the earliest durable
        # wait (set below) or none, which clears one that already woke (left behind, the
        # execution would stay claimable and be claimed, replayed and paused over and over).
        values["wake_at"] = None
        if status in TERMINAL_STATUSES:
            values["finished_at"] = now
    if control.variables_json:
        values["variables_json"] = control.variables_json
    if control.outputs_json:
        values["outputs_json"] = control.outputs_json
    if control.error is not None:
        values["error_json"] = jsonutil.dumps(control.error)
    if control.input_tokens or control.output_tokens:
        values["input_tokens"] = E.c.input_tokens + control.input_tokens
        values["output_tokens"] = E.c.output_tokens + control.output_tokens
    if control.tokens_estimated:
        values["tokens_estimated"] = True
    if control.wake_at is not None:
        values["wake_at"] = control.wake_at
    if control.release_lease or (status is not None and status in TERMINAL_STATUSES):
        values.update(lease_owner=None, lease_token=None, lease_expires_at=None)

    terminal = status is not None and status in TERMINAL_STATUSES
    cascade = Cascade()
    family = Family()
    async with store.db.engine.begin() as conn:
        if terminal:
            family = await lock_family(conn, execution_id)
        head = (
            await conn.execute(
                update(E)
                .where(
                    E.c.execution_id == execution_id,
                    E.c.version == req.expected_version,
                    E.c.lease_token == req.lease.token,
                )
                .values(**values)
                .returning(E.c.version, E.c.last_seq, E.c.step_seq, E.c.open_pauses)
            )
        ).first()
        if head is None:
            await _refuse(conn, req)
            raise AssertionError("unreachable")
        events = await append_events(
            conn, execution_id, head.last_seq - len(req.events) + 1, req.events, now
        )
        if req.steps:
            await _insert_steps(store, conn, req, head.step_seq - len(req.steps) + 1)
        if req.node_logs:
            await _upsert_node_logs(store, conn, req, head.version << 16)
        touches_pauses = bool(
            control.paused_nodes
            or control.applied_resume_ids
            or (
                head.open_pauses
                and (req.steps or (status is not None and status in TERMINAL_STATUSES))
            )
        )
        if touches_pauses:
            await _apply_pauses(store, conn, req, now, terminal=status in TERMINAL_STATUSES)
        if terminal:
            assert status is not None
            # Sub-workflows: children still running end with it; a parent waiting wakes up.
            await cancel_children(
                conn,
                execution_id,
                f"parent execution {execution_id} {status.value.lower()}",
                now,
                cascade,
                family.children,
            )
            cascade.notify |= await wake_parent(
                conn, family, child_id=execution_id, status=status.value, now=now
            )
    _after_commit(store, req, events)
    for child_id, child_events in cascade.published:
        store.bus.publish(child_id, child_events)
    if cascade.notify:
        store.bus.notify_work()
    return CommitResult(version=head.version, last_seq=head.last_seq)


async def _refuse(conn: AsyncConnection, req: CommitRequest) -> None:
    """Say why the guarded update matched nothing: unknown execution, lost lease, stale version."""
    row = (
        await conn.execute(
            select(E.c.version, E.c.lease_token, E.c.status).where(
                E.c.execution_id == req.lease.execution_id
            )
        )
    ).first()
    if row is None:
        raise NotFound(f"execution {req.lease.execution_id!r} not found")
    if row.lease_token != req.lease.token:
        raise Conflict(
            f"execution {req.lease.execution_id!r}: lease lost (now held by another worker or "
            f"released; status {row.status}); commit refused",
            details={"reason": "LEASE_LOST", "version": row.version},
        )
    raise Conflict(
        f"execution {req.lease.execution_id!r}: stale version {req.expected_version}, "
        f"current is {row.version}; commit refused",
        details={"reason": "STALE_VERSION", "version": row.version},
    )


async def _insert_steps(
    store: StateStore, conn: AsyncConnection, req: CommitRequest, first_seq: int
) -> None:
    rows = [
        {
            "execution_id": req.lease.execution_id,
            "key": s.key,
            "step_seq": first_seq + i,
            "node_id": s.node_id,
            "scope_json": jsonutil.dumps(scope_to_json(s.scope)) if s.scope else "",
            "status": s.status,
            "output_json": s.output_json,
            "error_json": _json_or_empty(s.error),
            "fired_handles_json": jsonutil.dumps(list(s.fired_handles)) if s.fired_handles else "",
            "data_json": s.data_json,
        }
        for i, s in enumerate(req.steps)
    ]
    stmt = store.insert(ST)
    # A step re-committed with the same key (a node re-run after a crash) replaces the old one.
    stmt = stmt.on_conflict_do_update(
        index_elements=[ST.c.execution_id, ST.c.key],
        set_={
            c: stmt.excluded[c]
            for c in (
                "step_seq",
                "node_id",
                "scope_json",
                "status",
                "output_json",
                "error_json",
                "fired_handles_json",
                "data_json",
            )
        },
    )
    await conn.execute(stmt, rows)


async def _upsert_node_logs(
    store: StateStore, conn: AsyncConnection, req: CommitRequest, ordinal: int
) -> None:
    rows = [
        {
            "execution_id": req.lease.execution_id,
            "node_id": n.node_id,
            "scope_key": scope_key(n.scope),
            "scope_json": jsonutil.dumps(scope_to_json(n.scope)) if n.scope else "",
            "status": n.status,
            "attempt": n.attempt,
            "node_type": n.node_type,
            "input_json": n.input_json,
            "output_json": n.output_json,
            "error_json": _json_or_empty(n.error),
            "started_at": n.started_at,
            "finished_at": n.finished_at,
            "duration_us": n.duration_us,
            "token_usage_json": _json_or_empty(n.token_usage),
            "ordinal": ordinal + i,
        }
        for i, n in enumerate(req.node_logs)
    ]
    stmt = store.insert(NL)
    ex = stmt.excluded

    def keep(col: str) -> Any:
        # A later record of the same run may leave out what an earlier one said (input, start).
        return case((ex[col] == "", NL.c[col]), else_=ex[col])

    stmt = stmt.on_conflict_do_update(
        index_elements=[NL.c.execution_id, NL.c.node_id, NL.c.scope_key],
        set_={
            "status": ex.status,
            "attempt": ex.attempt,
            "node_type": keep("node_type"),
            "input_json": keep("input_json"),
            "output_json": ex.output_json,
            "error_json": ex.error_json,
            "started_at": func.coalesce(NL.c.started_at, ex.started_at),
            "finished_at": ex.finished_at,
            "duration_us": ex.duration_us,
            "token_usage_json": ex.token_usage_json,
        },
    )
    await conn.execute(stmt, rows)


async def _apply_pauses(
    store: StateStore, conn: AsyncConnection, req: CommitRequest, now: Any, *, terminal: bool
) -> None:
    execution_id = req.lease.execution_id
    control = req.control
    live = (PAUSE_OPEN, PAUSE_CLAIMED)
    if control.applied_resume_ids:
        await conn.execute(
            update(P)
            .where(P.c.execution_id == execution_id, P.c.resume_id.in_(control.applied_resume_ids))
            .values(state=PAUSE_APPLIED, applied_at=now)
        )
    if req.steps:
        # A committed step of a parked node closes its pause (a durable wait that woke up, or an
        # approval completed with its resume).
        keys = [
            (s.node_id, scope_key(s.scope))
            for s in req.steps
            if s.status not in ("PAUSED", "RUNNING")
        ]
    if req.steps and keys:
        await conn.execute(
            update(P)
            .where(
                P.c.execution_id == execution_id,
                P.c.state.in_(live),
                tuple_(P.c.node_id, P.c.scope_key).in_(keys),
            )
            .values(state=PAUSE_APPLIED, applied_at=now)
        )
    for node in control.paused_nodes:
        await _park(conn, execution_id, node, now)
    if terminal:
        await conn.execute(
            update(P)
            .where(P.c.execution_id == execution_id, P.c.state.in_(live))
            .values(state=PAUSE_CANCELLED, applied_at=now)
        )
    counts = (
        await conn.execute(
            select(
                func.count().filter(P.c.state.in_(live)).label("live"),
                func.count().filter(P.c.state == PAUSE_CLAIMED).label("claimed"),
            ).where(P.c.execution_id == execution_id)
        )
    ).one()
    await conn.execute(
        update(E)
        .where(E.c.execution_id == execution_id)
        .values(open_pauses=counts.live, resume_pending=counts.claimed > 0)
    )


async def _park(conn: AsyncConnection, execution_id: str, node: PausedNode, now: Any) -> None:
    """Open a pause for ``node``; re-parking an open pause refreshes it, a claimed one (its
    resume is already queued) is left alone, a closed one is reopened."""
    key = scope_key(node.scope)
    where = and_(
        P.c.execution_id == execution_id, P.c.node_id == node.node_id, P.c.scope_key == key
    )
    existing = (await conn.execute(select(P.c.state).where(where))).scalar()
    fields = {
        "scope_json": jsonutil.dumps(scope_to_json(node.scope)) if node.scope else "",
        "reason": node.reason,
        "input_schema_json": node.input_schema_json,
        "wake_at": node.wake_at,
    }
    if existing is None:
        await conn.execute(
            P.insert().values(
                execution_id=execution_id,
                node_id=node.node_id,
                scope_key=key,
                state=PAUSE_OPEN,
                resume_input_json="",
                resume_order=0,
                created_at=now,
                **fields,
            )
        )
    elif existing == PAUSE_OPEN:
        await conn.execute(update(P).where(where).values(**fields))
    elif existing != PAUSE_CLAIMED:
        await conn.execute(
            update(P)
            .where(where)
            .values(
                state=PAUSE_OPEN,
                resume_id=None,
                resume_input_json="",
                enqueued_at=None,
                applied_at=None,
                created_at=now,
                **fields,
            )
        )
    # A sub-workflow node parking on a child that already ended: wake it now (see children.py).
    await claim_if_child_ended(conn, execution_id, node, now)

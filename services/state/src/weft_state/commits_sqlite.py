"""The SQLite fast path of CommitStep: the whole commit in ONE hop to the connection's thread.

Through SQLAlchemy every statement is a round trip to aiosqlite's worker thread (a queue put, a
thread wake-up, a wake-up of the event loop) plus its compilation and cache-key work: about 4 ms
for the five statements of a step. Here the embedded database's single connection is checked out
as usual (so this serialises with every other use of it) and one function runs the commit on the
underlying ``sqlite3`` connection in that thread: ``BEGIN IMMEDIATE``, the guard read, the
execution-row update, the events, steps and node logs (prepared statements, cached by
``sqlite3``), ``COMMIT``. It writes exactly the rows the general path in ``commits`` writes.

The guard is the one of the PostgreSQL fast path (``commits_pg``): a stale version, a lost lease,
an unknown execution, a commit that parks nodes, applies resumes, closes an open pause, ends an
execution with open pauses, or ends a sub-workflow or a parent of active ones writes nothing and
returns None, and the general path handles it (and says why it refuses). ``commit_fast_group``
commits several executions' items in one transaction (one hop, one WAL append).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import aiosqlite
from opentelemetry import trace

from weft_common import jsonutil
from weft_common._telemetry_state import flags

from .domain import TERMINAL_STATUSES, CommitRequest, StoredEvent, scope_key, scope_to_json
from .eventlog import event_tail, with_seq
from .models import UtcDateTime
from .store import StateStore

__all__ = ["Prepared", "commit_fast", "commit_fast_group", "prepare"]

_HEAD_SQL = (
    "SELECT version, lease_token, open_pauses, parent_execution_id "
    "FROM executions WHERE execution_id = ?"
)
_OPEN_PAUSE_SQL = (
    "SELECT 1 FROM pauses WHERE execution_id = ? AND state IN ('open', 'claimed') "
    "AND node_id = ? AND scope_key = ? LIMIT 1"
)
_ACTIVE_CHILD_SQL = (
    "SELECT 1 FROM executions WHERE parent_execution_id = ? "
    "AND status IN ('PENDING', 'RUNNING', 'PAUSED') LIMIT 1"
)
# The general path's ``values`` (commits._commit_general), as one statement.
_UPDATE_SQL = """
UPDATE executions SET
    version = version + 1,
    last_seq = last_seq + :n_events,
    step_seq = step_seq + :n_steps,
    updated_at = :now,
    started_at = COALESCE(started_at, :now),
    status = COALESCE(:status, status),
    wake_at = CASE WHEN :wake_at IS NOT NULL THEN :wake_at
                   WHEN :has_status THEN NULL ELSE wake_at END,
    finished_at = CASE WHEN :terminal THEN :now ELSE finished_at END,
    variables_json = COALESCE(:variables_json, variables_json),
    outputs_json = COALESCE(:outputs_json, outputs_json),
    error_json = COALESCE(:error_json, error_json),
    input_tokens = input_tokens + :input_tokens,
    output_tokens = output_tokens + :output_tokens,
    tokens_estimated = tokens_estimated OR :tokens_estimated,
    lease_owner = CASE WHEN :release THEN NULL ELSE lease_owner END,
    lease_token = CASE WHEN :release THEN NULL ELSE lease_token END,
    lease_expires_at = CASE WHEN :release THEN NULL ELSE lease_expires_at END
WHERE execution_id = :execution_id
RETURNING version, last_seq, step_seq
"""
_EVENT_SQL = (
    "INSERT INTO events (execution_id, seq, type, node_id, payload_json, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
# A step re-committed with the same key (a node re-run after a crash) replaces the old one.
_STEP_SQL = """
INSERT INTO steps (execution_id, key, step_seq, node_id, scope_json, status, output_json,
                   error_json, fired_handles_json, data_json)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (execution_id, key) DO UPDATE SET
    step_seq = excluded.step_seq, node_id = excluded.node_id, scope_json = excluded.scope_json,
    status = excluded.status, output_json = excluded.output_json,
    error_json = excluded.error_json, fired_handles_json = excluded.fired_handles_json,
    data_json = excluded.data_json
"""
# A later record of the same run may leave out what an earlier one said (input, type, start).
_NODE_LOG_SQL = """
INSERT INTO node_logs (execution_id, node_id, scope_key, scope_json, status, attempt, node_type,
                       input_json, output_json, error_json, started_at, finished_at,
                       duration_us, token_usage_json, ordinal)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (execution_id, node_id, scope_key) DO UPDATE SET
    status = excluded.status, attempt = excluded.attempt,
    node_type = CASE WHEN excluded.node_type = '' THEN node_logs.node_type
                     ELSE excluded.node_type END,
    input_json = CASE WHEN excluded.input_json = '' THEN node_logs.input_json
                      ELSE excluded.input_json END,
    output_json = excluded.output_json, error_json = excluded.error_json,
    started_at = COALESCE(node_logs.started_at, excluded.started_at),
    finished_at = excluded.finished_at, duration_us = excluded.duration_us,
    token_usage_json = excluded.token_usage_json
"""

_tracer = trace.get_tracer("weft.state")


def _json_or_empty(value: Any) -> str:
    return "" if value is None else jsonutil.dumps(value)


class Prepared:
    """One commit's parameters, built on the event loop (JSON, datetimes as stored); ``run`` in
    the connection's thread writes it, or returns False having written nothing."""

    __slots__ = ("closing", "events", "execution_id", "logs", "result", "steps", "tails", "update")

    def __init__(
        self, req: CommitRequest, now: datetime, to_db: Callable[[datetime | None], Any]
    ) -> None:
        control = req.control
        status = control.status
        terminal = status is not None and status in TERMINAL_STATUSES
        execution_id = self.execution_id = req.lease.execution_id
        self.tails = [event_tail(execution_id, d, now) for d in req.events]
        stamp = to_db(now)
        self.update: dict[str, Any] = {
            "execution_id": execution_id,
            "expected_version": req.expected_version,
            "lease_token": req.lease.token,
            "n_events": len(self.tails),
            "n_steps": len(req.steps),
            "now": stamp,
            "status": status.value if status is not None else None,
            "has_status": status is not None,
            "wake_at": to_db(control.wake_at),
            "terminal": terminal,
            "variables_json": control.variables_json or None,
            "outputs_json": control.outputs_json or None,
            "error_json": jsonutil.dumps(control.error) if control.error is not None else None,
            "input_tokens": control.input_tokens,
            "output_tokens": control.output_tokens,
            "tokens_estimated": control.tokens_estimated,
            "release": control.release_lease or terminal,
        }
        # Steps that may close a pause (the general path's rule in ``_apply_pauses``).
        self.closing = [
            (s.node_id, scope_key(s.scope))
            for s in req.steps
            if s.status not in ("PAUSED", "RUNNING")
        ]
        self.events = [(d.type, d.node_id) for d in req.events]
        self.steps = [
            (
                execution_id,
                s.key,
                s.node_id,
                jsonutil.dumps(scope_to_json(s.scope)) if s.scope else "",
                s.status,
                s.output_json,
                _json_or_empty(s.error),
                jsonutil.dumps(list(s.fired_handles)) if s.fired_handles else "",
                s.data_json,
            )
            for s in req.steps
        ]
        self.logs = [
            (
                execution_id,
                n.node_id,
                scope_key(n.scope),
                jsonutil.dumps(scope_to_json(n.scope)) if n.scope else "",
                n.status,
                n.attempt,
                n.node_type,
                n.input_json,
                n.output_json,
                _json_or_empty(n.error),
                to_db(n.started_at),
                to_db(n.finished_at),
                n.duration_us,
                _json_or_empty(n.token_usage),
            )
            for n in req.node_logs
        ]
        self.result: tuple[int, int] | None = None  # (version, last_seq) once written

    def run(self, db: sqlite3.Connection) -> bool:
        """Write the commit inside the caller's transaction; False (nothing written) when the
        guard sends it to the general path."""
        u = self.update
        execution_id = self.execution_id
        head = db.execute(_HEAD_SQL, (execution_id,)).fetchone()
        if head is None or head[0] != u["expected_version"] or head[1] != u["lease_token"]:
            return False  # unknown, stale or lease lost: the general path says which
        version, _, open_pauses, parent = head
        terminal = u["terminal"]
        if open_pauses and (
            terminal
            or any(db.execute(_OPEN_PAUSE_SQL, (execution_id, *k)).fetchone() for k in self.closing)
        ):
            return False
        if terminal and (
            parent or db.execute(_ACTIVE_CHILD_SQL, (execution_id,)).fetchone() is not None
        ):
            return False
        version, last_seq, step_seq = db.execute(_UPDATE_SQL, u).fetchone()
        now = u["now"]
        first = last_seq - len(self.tails) + 1
        db.executemany(
            _EVENT_SQL,
            [
                (execution_id, first + i, etype, node_id, with_seq(first + i, tail), now)
                for i, ((etype, node_id), tail) in enumerate(
                    zip(self.events, self.tails, strict=True)
                )
            ],
        )
        first_step = step_seq - len(self.steps) + 1
        db.executemany(
            _STEP_SQL, [(s[0], s[1], first_step + i, *s[2:]) for i, s in enumerate(self.steps)]
        )
        ordinal = version << 16
        db.executemany(_NODE_LOG_SQL, [(*n, ordinal + i) for i, n in enumerate(self.logs)])
        self.result = (version, last_seq)
        return True

    def stored_events(self) -> list[StoredEvent]:
        assert self.result is not None
        first = self.result[1] - len(self.tails) + 1
        return [
            StoredEvent(self.execution_id, first + i, etype, node_id, with_seq(first + i, tail))
            for i, ((etype, node_id), tail) in enumerate(zip(self.events, self.tails, strict=True))
        ]


def prepare(store: StateStore, req: CommitRequest, now: datetime) -> Prepared | None:
    """The fast-path form of ``req``; None when it needs the general path whatever the row says
    (it parks nodes or applies resumes), or when this database is not the embedded SQLite one
    reached through aiosqlite."""
    if not _usable(store) or req.control.paused_nodes or req.control.applied_resume_ids:
        return None
    return Prepared(req, now, _to_db(store))


async def commit_fast(store: StateStore, item: Prepared) -> bool:
    """Commit one prepared item; False when the guard sent it to the general path."""
    return (await _in_thread(store, [item]))[0]


async def commit_fast_group(store: StateStore, items: Sequence[Prepared]) -> list[bool]:
    """Commit several executions' items in ONE transaction; per item, whether it was written
    (False: the guard refused it, nothing of it was written). If SQLite raises, the whole
    transaction rolled back and the error propagates: every item is still to do."""
    return await _in_thread(store, items)


def _transaction(db: sqlite3.Connection, items: Sequence[Prepared]) -> list[bool]:
    db.execute("BEGIN IMMEDIATE")
    try:
        done = [item.run(db) for item in items]
    except BaseException:
        db.rollback()
        for item in items:
            item.result = None
        raise
    if any(done):
        db.commit()
    else:
        db.rollback()
    return done


async def _in_thread(store: StateStore, items: Sequence[Prepared]) -> list[bool]:
    span = None
    if flags.tracing:
        span = _tracer.start_span(
            "COMMIT weft",
            kind=trace.SpanKind.CLIENT,
            attributes={
                "db.system": "sqlite",
                "db.operation": "COMMIT",
                "db.statement": _UPDATE_SQL.strip(),
                "weft.commit.items": len(items),
            },
        )
    try:
        async with store.db.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            aio: Any = raw.driver_connection
            return list(await aio._execute(_transaction, aio._conn, items))
    finally:
        if span is not None:
            span.end()


_TO_DB: dict[int, Callable[[datetime | None], Any]] = {}


def _to_db(store: StateStore) -> Callable[[datetime | None], Any]:
    """The SQLite form of a ``UtcDateTime`` value, as SQLAlchemy binds it (so reads through it
    see exactly what the general path writes)."""
    dialect = store.db.engine.dialect
    to_db = _TO_DB.get(id(dialect))
    if to_db is None:
        process = UtcDateTime().bind_processor(dialect)
        assert process is not None
        to_db = _TO_DB[id(dialect)] = process
    return to_db


# aiosqlite runs a function in its connection's thread with ``Connection._execute`` and keeps the
# ``sqlite3`` connection as ``_conn``: private names, so an aiosqlite without them (a future
# release) leaves every commit on the general path instead of failing it.
_AIOSQLITE_OK = all(hasattr(aiosqlite.Connection, name) for name in ("_execute", "_conn"))


def _usable(store: StateStore) -> bool:
    """The embedded SQLite database through aiosqlite, whose connection thread runs functions
    (``Connection._execute``) on the ``sqlite3`` connection (``_conn``)."""
    engine = store.db.engine
    return (
        _AIOSQLITE_OK and engine.dialect.name == "sqlite" and engine.dialect.driver == "aiosqlite"
    )

"""Executions: creation (pinned to a workflow version, idempotency keys, the leased fast path),
reads, node logs, and cancellation."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from weft_common import jsonutil
from weft_common.errors import InvalidArgument, NotFound

from .children import Cascade, cancel_children, lock_family, wake_parent
from .clock import later, utcnow
from .domain import (
    TERMINAL_STATUSES,
    CreatedExecution,
    CreateExecution,
    EventIn,
    ExecutionRecord,
    ExecutionStatus,
    LeaseGrant,
    LoadedExecution,
    NodeLogRow,
    scope_from_json,
)
from .eventlog import append_events
from .store import (
    NL,
    PAUSE_CANCELLED,
    PAUSE_CLAIMED,
    PAUSE_OPEN,
    WV,
    E,
    P,
    StateStore,
    execution_record,
)

__all__ = [
    "create_execution",
    "get_execution",
    "list_executions",
    "list_node_logs",
    "request_cancel",
]


async def create_execution(store: StateStore, req: CreateExecution) -> CreatedExecution:
    """A new PENDING execution, or the existing one for an idempotency key already used by the
    same owner (``existing=True``, never leased)."""
    if req.input_json:
        try:
            jsonutil.loads(req.input_json)
        except ValueError as exc:
            raise InvalidArgument(f"input_json is not valid JSON: {exc}") from exc

    if req.definition is not None:
        workflow_id = str(req.definition.get("id") or "")
        version, definition_json, dag = 0, jsonutil.dumps(req.definition), req.dag
        if not dag:
            raise InvalidArgument("an inline definition needs its compiled dag")
    elif req.workflow_id:
        workflow_id, version, definition_json, dag = req.workflow_id, 0, None, None
    else:
        raise InvalidArgument("give a workflow_id or an inline definition")

    now = utcnow()
    execution_id = str(uuid.uuid4())
    lease: LeaseGrant | None = None
    values: dict[str, Any] = {
        "execution_id": execution_id,
        "workflow_id": workflow_id,
        "workflow_version": version,
        "definition_json": definition_json,
        "dag": dag,
        "status": ExecutionStatus.PENDING.value,
        "input_json": req.input_json,
        "outputs_json": "",
        "error_json": "",
        "variables_json": "",
        "version": 0,
        "cancel_requested": False,
        "cancel_reason": "",
        "resume_pending": False,
        "open_pauses": 0,
        "resume_counter": 0,
        "idempotency_key": req.idempotency_key or None,
        "owner": req.owner,
        "parent_execution_id": req.parent_execution_id,
        "parent_node_id": req.parent_node_id,
        "depth": req.depth,
        # A traceparent is 55 characters; anything that does not fit is not one.
        "trace_context": req.trace_context if len(req.trace_context) <= 255 else "",
        "created_at": now,
        "updated_at": now,
        "last_seq": 0,
        "step_seq": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "tokens_estimated": False,
    }
    if req.claim_worker_id:
        lease = LeaseGrant(
            execution_id=execution_id,
            worker_id=req.claim_worker_id,
            token=uuid.uuid4().hex,
            expires_at=later(req.lease_ms or store.options.default_lease_ms, start=now),
        )
        values.update(
            lease_owner=lease.worker_id, lease_token=lease.token, lease_expires_at=lease.expires_at
        )
    if store.db.pg_pool is not None and definition_json is None and not req.idempotency_key:
        return await _create_fast(store, req, values, lease)
    try:
        # Autocommit: the INSERT is the only write, so no BEGIN/COMMIT round trips around it.
        async with store.autocommit.connect() as conn:
            if req.idempotency_key:
                found = await _by_idempotency_key(conn, req.owner, req.idempotency_key)
                if found:
                    return CreatedExecution(found, existing=True)
            if definition_json is None:
                values["workflow_version"] = await _pin(
                    conn, req.workflow_id, req.workflow_version, req.owner
                )
            await conn.execute(E.insert().values(**values))
    except IntegrityError:
        if req.idempotency_key:  # lost the race with a concurrent create under the same key
            async with store.db.engine.connect() as conn:
                found = await _by_idempotency_key(conn, req.owner, req.idempotency_key)
            if found:
                return CreatedExecution(found, existing=True)
        raise
    if lease is None:
        store.bus.notify_work()
    return CreatedExecution(execution_id, existing=False, lease=lease)


# Every column _create_fast writes, in order ($1.. after $1 = workflow_id, $2 = version wanted).
_CREATE_COLUMNS = (
    "execution_id", "definition_json", "dag", "status", "input_json", "outputs_json",
    "error_json", "variables_json", "version", "cancel_requested", "cancel_reason",
    "resume_pending", "open_pauses", "resume_counter", "idempotency_key", "owner",
    "parent_execution_id", "parent_node_id", "depth", "trace_context", "created_at",
    "updated_at", "last_seq", "step_seq", "input_tokens", "output_tokens", "tokens_estimated",
    "lease_owner", "lease_token", "lease_expires_at",
)  # fmt: skip
_OWNER_PARAM = 3 + _CREATE_COLUMNS.index("owner")

# PostgreSQL: pin the version and insert in ONE statement (one round trip, autocommit). No row:
# no such workflow (version); inserted NULL: another owner's workflow (nothing written).
CREATE_FAST_SQL = f"""
WITH v AS (
    SELECT version, owner FROM workflow_versions
    WHERE workflow_id = $1 AND ($2::int = 0 OR version = $2::int)
    ORDER BY version DESC LIMIT 1
), ins AS (
    INSERT INTO executions (workflow_id, workflow_version, {", ".join(_CREATE_COLUMNS)})
    SELECT $1, v.version, {", ".join(f"${i + 3}" for i in range(len(_CREATE_COLUMNS)))}
    FROM v WHERE ${_OWNER_PARAM}::varchar = '' OR v.owner = ${_OWNER_PARAM}::varchar
    RETURNING workflow_version
)
SELECT v.version, (SELECT workflow_version FROM ins) AS inserted FROM v
"""


async def _create_fast(
    store: StateStore, req: CreateExecution, values: dict[str, Any], lease: LeaseGrant | None
) -> CreatedExecution:
    """A new execution of a registered workflow on PostgreSQL (no idempotency key): one
    statement; a leased one also says what LoadExecution would (no read back)."""
    args = [req.workflow_id, req.workflow_version, *(values.get(c) for c in _CREATE_COLUMNS)]
    assert store.db.pg_pool is not None
    async with store.db.pg_pool.acquire() as conn:
        row = await conn.fetchrow(CREATE_FAST_SQL, *args)
        if row is None or row["inserted"] is None:
            what = f"workflow {req.workflow_id!r}" + (
                f" version {req.workflow_version}" if req.workflow_version else ""
            )
            raise NotFound(f"{what} not found")
        pinned: int = row["inserted"]
        dag = store.dag_cache.get((req.workflow_id, pinned)) if lease is not None else b""
        if dag is None:
            dag = await conn.fetchval(
                "SELECT dag FROM workflow_versions WHERE workflow_id = $1 AND version = $2",
                req.workflow_id,
                pinned,
            )
            store.remember_dag(req.workflow_id, pinned, dag)
    if lease is None:
        store.bus.notify_work()
        return CreatedExecution(values["execution_id"], existing=False)
    row_now = SimpleNamespace(
        **{**values, "workflow_version": pinned}, started_at=None, finished_at=None
    )
    loaded = LoadedExecution(
        execution=execution_record(row_now, []),  # type: ignore[arg-type]
        dag=dag or b"",
        steps=[],
        variables_json="",
        resumes=[],
        version=0,
        cancel_requested=False,
        depth=req.depth,
        trace_context=values["trace_context"],
    )
    return CreatedExecution(values["execution_id"], existing=False, lease=lease, loaded=loaded)


async def _by_idempotency_key(conn: AsyncConnection, owner: str, key: str) -> str | None:
    found: str | None = (
        await conn.execute(
            select(E.c.execution_id).where(E.c.owner == owner, E.c.idempotency_key == key)
        )
    ).scalar()
    return found


async def _pin(conn: AsyncConnection, workflow_id: str, version: int, owner: str) -> int:
    """The version an execution of ``workflow_id`` runs on (0 = the latest, at this moment)."""
    stmt = select(WV.c.version, WV.c.owner).where(WV.c.workflow_id == workflow_id)
    if version:
        stmt = stmt.where(WV.c.version == version)
    else:
        stmt = stmt.order_by(WV.c.version.desc()).limit(1)
    row = (await conn.execute(stmt)).first()
    if row is None or (owner and row.owner != owner):
        what = f"workflow {workflow_id!r}" + (f" version {version}" if version else "")
        raise NotFound(f"{what} not found")
    pinned: int = row.version
    return pinned


async def get_execution(
    store: StateStore, execution_id: str, *, owner: str = ""
) -> ExecutionRecord:
    async with store.db.engine.connect() as conn:
        row = await store.execution_row(conn, execution_id, owner)
        return execution_record(row, await store.paused_nodes(conn, execution_id))


async def list_executions(
    store: StateStore, *, owner: str = "", workflow_id: str = "", limit: int = 0
) -> list[ExecutionRecord]:
    """Newest first."""
    stmt = select(E).order_by(E.c.created_at.desc()).limit(min(limit or 100, 1000))
    if owner:
        stmt = stmt.where(E.c.owner == owner)
    if workflow_id:
        stmt = stmt.where(E.c.workflow_id == workflow_id)
    async with store.db.engine.connect() as conn:
        rows = list(await conn.execute(stmt))
        out = []
        for row in rows:
            paused = await store.paused_nodes(conn, row.execution_id) if row.open_pauses else []
            out.append(execution_record(row, paused))
        return out


async def list_node_logs(
    store: StateStore, execution_id: str, *, owner: str = ""
) -> list[NodeLogRow]:
    """One entry per node run, in the order they started."""
    async with store.db.engine.connect() as conn:
        await store.execution_row(conn, execution_id, owner)
        rows = await conn.execute(
            select(NL)
            .where(NL.c.execution_id == execution_id)
            .order_by(NL.c.started_at.asc().nulls_last(), NL.c.ordinal)
        )
        return [
            NodeLogRow(
                node_id=r.node_id,
                scope=scope_from_json(jsonutil.loads(r.scope_json)),
                status=r.status,
                attempt=r.attempt,
                node_type=r.node_type,
                input_json=r.input_json,
                output_json=r.output_json,
                error=jsonutil.loads(r.error_json),
                started_at=r.started_at,
                finished_at=r.finished_at,
                duration_us=r.duration_us,
                token_usage=jsonutil.loads(r.token_usage_json),
            )
            for r in rows
        ]


async def request_cancel(
    store: StateStore, execution_id: str, *, reason: str = "", owner: str = ""
) -> ExecutionStatus:
    """Ask for cancellation. A PAUSED execution, or a PENDING one no worker holds, is cancelled
    here at once (open node runs end with ``node:cancelled``, then ``execution:cancelled``); a
    running one is cancelled by its worker, which learns of it through RenewLeases."""
    now = utcnow()
    cascade = Cascade()
    async with store.db.engine.begin() as conn:
        family = await lock_family(conn, execution_id)
        row = await store.execution_row(conn, execution_id, owner, lock=True)
        status = ExecutionStatus(row.status)
        if status in TERMINAL_STATUSES:
            return status
        leased = row.lease_token is not None and row.lease_expires_at > now
        if not (
            status is ExecutionStatus.PAUSED or (status is ExecutionStatus.PENDING and not leased)
        ):
            await conn.execute(
                update(E)
                .where(E.c.execution_id == execution_id)
                .values(cancel_requested=True, cancel_reason=reason, updated_at=now)
            )
            notify = not leased
            events = []
            new_status = status
        else:
            events = await cancel_now(conn, row, reason, now)
            notify, new_status = False, ExecutionStatus.CANCELLED
            # Sub-workflows: its children go with it; a parent waiting on it wakes up.
            await cancel_children(
                conn, execution_id, reason or "parent cancelled", now, cascade, family.children
            )
            if await wake_parent(
                conn,
                family,
                child_id=execution_id,
                status=ExecutionStatus.CANCELLED.value,
                now=now,
            ):
                notify = True
    store.bus.publish(execution_id, events)
    for child_id, child_events in cascade.published:
        store.bus.publish(child_id, child_events)
    notify = notify or cascade.notify
    if notify:
        store.bus.notify_work()  # an unleased RUNNING execution: a worker should finish it off
    return new_status


async def cancel_now(conn: Any, row: Any, reason: str, now: Any) -> list[Any]:
    """Cancel a paused (or unleased pending) execution here, in the caller's transaction."""
    execution_id = row.execution_id
    open_runs = list(
        await conn.execute(
            select(NL.c.node_id, NL.c.scope_json, NL.c.scope_key, NL.c.node_type).where(
                NL.c.execution_id == execution_id, NL.c.status.in_(("RUNNING", "PAUSED"))
            )
        )
    )
    drafts = [
        EventIn(
            type="node:cancelled",
            node_id=r.node_id,
            scope=scope_from_json(jsonutil.loads(r.scope_json)),
            payload_json=jsonutil.dumps({"nodeType": r.node_type}),
        )
        for r in open_runs
    ]
    error = {"message": reason or "cancelled", "code": "CANCELLED"}
    drafts.append(
        EventIn(type="execution:cancelled", payload_json=jsonutil.dumps({"error": error}))
    )
    if open_runs:
        await conn.execute(
            update(NL)
            .where(NL.c.execution_id == execution_id, NL.c.status.in_(("RUNNING", "PAUSED")))
            .values(status="CANCELLED", finished_at=now)
        )
    if row.open_pauses:
        await conn.execute(
            update(P)
            .where(P.c.execution_id == execution_id, P.c.state.in_((PAUSE_OPEN, PAUSE_CLAIMED)))
            .values(state=PAUSE_CANCELLED, applied_at=now)
        )
    events = await append_events(conn, execution_id, row.last_seq + 1, drafts, now)
    await conn.execute(
        update(E)
        .where(E.c.execution_id == execution_id)
        .values(
            status=ExecutionStatus.CANCELLED.value,
            cancel_requested=True,
            cancel_reason=reason,
            error_json=jsonutil.dumps(error),
            finished_at=now,
            updated_at=now,
            version=E.c.version + 1,
            last_seq=row.last_seq + len(drafts),
            lease_owner=None,
            lease_token=None,
            lease_expires_at=None,
            wake_at=None,
            resume_pending=False,
            open_pauses=0,
        )
    )
    return events

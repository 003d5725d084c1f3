"""Work distribution: executors claim runnable executions under leases, renew them with
heartbeats, release them, and load everything needed to run from the last commit.

Claiming is ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, so concurrent claimers never
wait on or take each other's rows; SQLite serialises every transaction of this process on its
single connection. A lease is (execution, worker, token, expiry): a commit must present the
token, so a worker whose lease expired and was taken can never write again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, or_, select, text, update

from weft_common import jsonutil
from weft_common.errors import Conflict, InvalidArgument

from .clock import later, utcnow
from .domain import (
    ExecutionStatus,
    LeaseGrant,
    LeaseRef,
    LoadedExecution,
    PausedNode,
    RenewResult,
    ResumeRow,
    StepRow,
    scope_from_json,
)
from .models import CLAIMABLE_SQL
from .store import ACTIVE_STATUSES, PAUSE_CLAIMED, ST, WV, E, P, StateStore, execution_record

__all__ = ["claim_executions", "load_execution", "release_lease", "renew_leases"]


def _runnable(now: object) -> object:
    free = or_(E.c.lease_token.is_(None), E.c.lease_expires_at < now)
    wants_worker = or_(
        E.c.status.in_((ExecutionStatus.PENDING.value, ExecutionStatus.RUNNING.value)),
        and_(
            E.c.status == ExecutionStatus.PAUSED.value,
            or_(E.c.resume_pending.is_(True), E.c.wake_at <= now, E.c.cancel_requested.is_(True)),
        ),
    )
    return and_(
        E.c.status.in_([s.value for s in ACTIVE_STATUSES]),
        free,
        wants_worker,
        text(f"({CLAIMABLE_SQL})"),
    )


async def _claim_once(
    store: StateStore, worker_id: str, limit: int, lease_ms: int
) -> list[LeaseGrant]:
    now = utcnow()
    token = uuid.uuid4().hex
    expires = later(lease_ms, start=now)
    async with store.db.engine.begin() as conn:
        ids = list(
            (
                await conn.execute(
                    select(E.c.execution_id)
                    .where(_runnable(now))  # type: ignore[arg-type]
                    .order_by(E.c.created_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).scalars()
        )
        if not ids:
            return []
        await conn.execute(
            update(E)
            .where(E.c.execution_id.in_(ids))
            .values(
                lease_owner=worker_id, lease_token=token, lease_expires_at=expires, updated_at=now
            )
        )
    return [LeaseGrant(i, worker_id, token, expires) for i in ids]


async def claim_executions(
    store: StateStore, worker_id: str, *, limit: int, lease_ms: int, wait_ms: int = 0
) -> list[LeaseGrant]:
    """Claim up to ``limit`` runnable executions: PENDING; RUNNING with an expired lease (its
    worker died); PAUSED with a queued resume, a due wake-up or a cancel request. Long-polls up
    to ``wait_ms``, woken early by the bus when work appears."""
    if not worker_id:
        raise InvalidArgument("worker_id is required")
    limit = max(1, min(limit or 1, 1000))
    lease_ms = lease_ms or store.options.default_lease_ms
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_ms / 1000
    while True:
        leases = await _claim_once(store, worker_id, limit, lease_ms)
        remaining = deadline - loop.time()
        if leases or remaining <= 0:
            return leases
        await store.bus.wait_for_work(min(remaining, store.options.claim_poll_s))


async def renew_leases(
    store: StateStore, worker_id: str, leases: Sequence[LeaseRef], lease_ms: int
) -> RenewResult:
    """Extend the leases this worker still holds; report lost ones, cancel requests, and queued
    resumes."""
    if not leases:
        return RenewResult([], [], [])
    now = utcnow()
    tokens = {lease.execution_id: lease.token for lease in leases}
    async with store.db.engine.begin() as conn:
        rows = list(
            await conn.execute(
                select(E.c.execution_id, E.c.lease_token, E.c.cancel_requested, E.c.resume_pending)
                .where(E.c.execution_id.in_(list(tokens)))
                .order_by(E.c.execution_id)  # one lock order for every renewal: no deadlocks
                .with_for_update()
            )
        )
        held = [
            r for r in rows if r.lease_token is not None and r.lease_token == tokens[r.execution_id]
        ]
        if held:
            await conn.execute(
                update(E)
                .where(E.c.execution_id.in_([r.execution_id for r in held]))
                .values(
                    lease_expires_at=later(lease_ms or store.options.default_lease_ms, start=now),
                    lease_owner=worker_id,
                )
            )
    held_ids = {r.execution_id for r in held}
    return RenewResult(
        lost=[i for i in tokens if i not in held_ids],
        cancel=[r.execution_id for r in held if r.cancel_requested],
        resumed=[r.execution_id for r in held if r.resume_pending],
    )


async def release_lease(store: StateStore, lease: LeaseRef) -> None:
    """Give the execution back (it becomes claimable at once if it is runnable)."""
    async with store.db.engine.begin() as conn:
        result = await conn.execute(
            update(E)
            .where(E.c.execution_id == lease.execution_id, E.c.lease_token == lease.token)
            .values(lease_owner=None, lease_token=None, lease_expires_at=None)
        )
    if result.rowcount:
        store.bus.notify_work()


async def load_execution(store: StateStore, lease: LeaseRef) -> LoadedExecution:
    """Everything to (re)run a claimed execution from its last commit."""
    async with store.autocommit.connect() as conn:
        row = await store.execution_row(conn, lease.execution_id, "")
        if row.lease_token != lease.token:
            raise Conflict(
                f"execution {lease.execution_id!r}: lease not held (expired and taken, or released)",
                details={"reason": "LEASE_LOST"},
            )
        if row.workflow_version:
            key = (row.workflow_id, row.workflow_version)
            dag = store.dag_cache.get(key)
            if dag is None:
                dag = (
                    await conn.execute(
                        select(WV.c.dag).where(
                            WV.c.workflow_id == row.workflow_id,
                            WV.c.version == row.workflow_version,
                        )
                    )
                ).scalar_one()
                store.remember_dag(*key, dag)
        else:
            dag = row.dag or b""
        if row.version == 0:
            # Nothing committed yet (a fresh execution, the common case): steps and pauses are
            # only written by commits, which move the version, so there is nothing to read.
            return _loaded(row, dag, [], [], [])
        steps = [
            StepRow(
                key=s.key,
                node_id=s.node_id,
                scope=scope_from_json(jsonutil.loads(s.scope_json)),
                status=s.status,
                output_json=s.output_json,
                error=jsonutil.loads(s.error_json),
                fired_handles=tuple(jsonutil.loads(s.fired_handles_json) or ()),
                data_json=s.data_json,
                step_seq=s.step_seq,
            )
            for s in await conn.execute(
                select(ST).where(ST.c.execution_id == lease.execution_id).order_by(ST.c.step_seq)
            )
        ]
        resumes = [
            ResumeRow(
                resume_id=r.resume_id,
                node_id=r.node_id,
                scope=scope_from_json(jsonutil.loads(r.scope_json)),
                input_json=r.resume_input_json,
                enqueued_at=r.enqueued_at,
            )
            for r in await conn.execute(
                select(P)
                .where(P.c.execution_id == lease.execution_id, P.c.state == PAUSE_CLAIMED)
                .order_by(P.c.resume_order)
            )
        ]
        paused = await store.paused_nodes(conn, lease.execution_id) if row.open_pauses else []
    return _loaded(row, dag, steps, resumes, paused)


def _loaded(
    row: Any, dag: bytes, steps: list[StepRow], resumes: list[ResumeRow], paused: list[PausedNode]
) -> LoadedExecution:
    return LoadedExecution(
        execution=execution_record(row, paused),
        dag=dag,
        steps=steps,
        variables_json=row.variables_json,
        resumes=resumes,
        version=row.version,
        cancel_requested=row.cancel_requested,
        depth=row.depth,
        trace_context=row.trace_context,
    )

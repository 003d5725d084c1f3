"""Sub-workflow links: waking a parent when its child ends, and cancelling children with their
parent. Both happen inside the transaction that ends an execution, so neither can be lost.

A ``subworkflow`` node that parks while its child runs (or is paused) opens a pause whose
``inputSchema`` pins the child it waits for: ``properties.childExecutionId.const``. When that
child ends (a commit with a terminal status, or a cancellation here), the pause is claimed with
the resume input ``{"childExecutionId", "status"}`` exactly like a user's resume: the parent
becomes claimable and its node reads the child's outcome. The park itself also looks: a child
that ended while the park was being committed is claimed at once, so the two sides cannot miss
each other. A parent that ends (or is cancelled while paused) cancels its children that are
still active, and theirs in turn.

Ending an execution first locks its parent, itself and its active children in execution id
order (``lock_family``), the order ``RenewLeases`` uses, so these transactions cannot deadlock
with each other or with a heartbeat. (Cancelling a paused child's own children locks them after:
only unleased, paused executions are in between, so no heartbeat holds those.)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from weft_common import jsonutil

from .domain import TERMINAL_STATUSES, ExecutionStatus, PausedNode, StoredEvent, scope_key
from .store import ACTIVE_STATUSES, PAUSE_CLAIMED, PAUSE_OPEN, E, P

__all__ = [
    "Cascade",
    "Family",
    "awaited_child",
    "cancel_children",
    "claim_if_child_ended",
    "lock_family",
    "wake_parent",
]

_ACTIVE = [s.value for s in ACTIVE_STATUSES]
_TERMINAL = {s.value for s in TERMINAL_STATUSES}


@dataclass(slots=True)
class Cascade:
    """What a transaction did to other executions: events to publish once it commits, and
    whether workers should look for work (a parent woken, a child to cancel)."""

    published: list[tuple[str, list[StoredEvent]]] = field(default_factory=list)
    notify: bool = False


def awaited_child(input_schema_json: str) -> str | None:
    """The child execution a pause waits for (``properties.childExecutionId.const``), if any."""
    if not input_schema_json or "childExecutionId" not in input_schema_json:
        return None
    try:
        schema = jsonutil.loads(input_schema_json)
        const = schema["properties"]["childExecutionId"]["const"]
    except (ValueError, KeyError, TypeError):
        return None
    return const if isinstance(const, str) and const else None


@dataclass(frozen=True, slots=True)
class Family:
    """An execution's parent link and its active children, locked by ``lock_family``."""

    parent_id: str = ""
    parent_node_id: str = ""
    parent_status: str = ""
    children: tuple[str, ...] = ()


async def lock_family(conn: AsyncConnection, execution_id: str) -> Family:
    """Before an execution ends: lock its parent, itself and its active children in ONE
    statement, in execution id order (the order ``RenewLeases`` locks in), so ending it cannot
    deadlock with a worker's heartbeat or with its parent or child ending at the same time."""
    parent_link = (
        select(E.c.parent_execution_id).where(E.c.execution_id == execution_id).scalar_subquery()
    )
    rows = list(
        await conn.execute(
            select(E.c.execution_id, E.c.parent_execution_id, E.c.parent_node_id, E.c.status)
            .where(
                or_(
                    E.c.execution_id == execution_id,
                    E.c.execution_id == parent_link,
                    and_(E.c.parent_execution_id == execution_id, E.c.status.in_(_ACTIVE)),
                )
            )
            .order_by(E.c.execution_id)
            .with_for_update()
        )
    )
    me = next((r for r in rows if r.execution_id == execution_id), None)
    if me is None:
        return Family()
    parent = next(
        (r for r in rows if me.parent_execution_id and r.execution_id == me.parent_execution_id),
        None,
    )
    return Family(
        parent_id=me.parent_execution_id,
        parent_node_id=me.parent_node_id,
        parent_status=parent.status if parent is not None else "",
        children=tuple(
            r.execution_id
            for r in rows
            if r.parent_execution_id == execution_id and r.execution_id != execution_id
        ),
    )


async def _claim(
    conn: AsyncConnection, parent_id: str, pause_id: int, child_id: str, status: str, now: datetime
) -> None:
    counter = (
        await conn.execute(select(E.c.resume_counter).where(E.c.execution_id == parent_id))
    ).scalar_one()
    order = int(counter) + 1
    await conn.execute(
        update(P)
        .where(P.c.id == pause_id, P.c.state == PAUSE_OPEN)
        .values(
            state=PAUSE_CLAIMED,
            resume_id=str(uuid.uuid4()),
            resume_input_json=jsonutil.dumps({"childExecutionId": child_id, "status": status}),
            resume_order=order,
            enqueued_at=now,
        )
    )
    await conn.execute(
        update(E)
        .where(E.c.execution_id == parent_id)
        .values(resume_counter=order, resume_pending=True, updated_at=now)
    )


async def wake_parent(
    conn: AsyncConnection, family: Family, *, child_id: str, status: str, now: datetime
) -> bool:
    """The child ended: claim the parent's pause waiting for it. True when one was claimed."""
    parent_id = family.parent_id
    if not parent_id or not family.parent_status or family.parent_status in _TERMINAL:
        return False
    pauses = await conn.execute(
        select(P.c.id, P.c.input_schema_json).where(
            P.c.execution_id == parent_id,
            P.c.node_id == family.parent_node_id,
            P.c.state == PAUSE_OPEN,
        )
    )
    for pause in list(pauses):
        if awaited_child(pause.input_schema_json) == child_id:
            await _claim(conn, parent_id, pause.id, child_id, status, now)
            return True
    return False


async def claim_if_child_ended(
    conn: AsyncConnection, execution_id: str, node: PausedNode, now: datetime
) -> bool:
    """A node is parking on a child: if that child already ended, claim the pause at once."""
    child_id = awaited_child(node.input_schema_json)
    if child_id is None:
        return False
    child = (
        await conn.execute(
            select(E.c.status, E.c.parent_execution_id).where(E.c.execution_id == child_id)
        )
    ).first()
    if child is None or child.parent_execution_id != execution_id or child.status not in _TERMINAL:
        return False
    pause_id = (
        await conn.execute(
            select(P.c.id).where(
                P.c.execution_id == execution_id,
                P.c.node_id == node.node_id,
                P.c.scope_key == scope_key(node.scope),
                P.c.state == PAUSE_OPEN,
            )
        )
    ).scalar()
    if pause_id is None:
        return False
    await _claim(conn, execution_id, pause_id, child_id, child.status, now)
    return True


async def cancel_children(
    conn: AsyncConnection,
    parent_id: str,
    reason: str,
    now: datetime,
    cascade: Cascade,
    known: tuple[str, ...] | None = None,
) -> None:
    """Cancel the active children of ``parent_id`` (and theirs): a paused or unleased one here at
    once, a running one through its worker (``cancel_requested``, seen at its next heartbeat).
    ``known``: the active children ``lock_family`` found (none: nothing to read)."""
    from .executions import cancel_now  # the cancellation itself lives with the executions

    if known == ():
        return

    children = list(
        await conn.execute(
            select(E)
            .where(E.c.parent_execution_id == parent_id, E.c.status.in_(_ACTIVE))
            .order_by(E.c.execution_id)
            .with_for_update()
        )
    )
    for child in children:
        status = ExecutionStatus(child.status)
        leased = (
            child.lease_token is not None
            and child.lease_expires_at is not None
            and child.lease_expires_at > now
        )
        if status is ExecutionStatus.PAUSED or (status is ExecutionStatus.PENDING and not leased):
            events = await cancel_now(conn, child, reason, now)
            cascade.published.append((child.execution_id, events))
            await cancel_children(conn, child.execution_id, reason, now, cascade)
        else:
            await conn.execute(
                update(E)
                .where(E.c.execution_id == child.execution_id)
                .values(cancel_requested=True, cancel_reason=reason, updated_at=now)
            )
            if not leased:
                cascade.notify = True

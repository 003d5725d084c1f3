"""The resume queue: a resume claims its pause atomically and waits for a worker to apply it.

A resume locks the execution row first, the same lock a ``CommitStep`` holds while it parks a
node, so a resume that arrives while the pause is being committed simply waits for that commit.
A resume that arrives even earlier — the execution is running and the pause is not committed
yet — waits (up to ``resume_wait_s``, woken by the execution's events) for the pause to appear
instead of being refused; it is refused at once when the node already finished or the execution
is paused elsewhere or over.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import jsonschema
from sqlalchemy import and_, select, update

from weft_common import jsonutil
from weft_common.errors import FailedPrecondition, InvalidArgument

from .clock import utcnow
from .domain import TERMINAL_STATUSES, ExecutionStatus, Scope, scope_key
from .store import NL, PAUSE_CLAIMED, PAUSE_OPEN, WV, E, P, StateStore

__all__ = ["enqueue_resume", "validate_resume_input"]


def _where(node_id: str, scope: Scope) -> str:
    return repr(node_id) + (f" (scope {scope_key(scope)})" if scope else "")


def validate_resume_input(node_id: str, schema_json: str, value: Any) -> None:
    """INVALID_ARGUMENT naming the node, the failing path and the schema's complaint."""
    if not schema_json:
        return
    schema = jsonutil.loads(schema_json)
    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        error = jsonschema.exceptions.best_match(cls(schema).iter_errors(value))
    except jsonschema.SchemaError as exc:
        raise InvalidArgument(
            f"node {node_id!r} has an invalid inputSchema: {exc.message}"
        ) from exc
    if error is not None:
        path = "/".join(str(p) for p in error.absolute_path)
        at = f" at /{path}" if path else ""
        raise InvalidArgument(
            f"resume input for node {node_id!r} does not match its inputSchema{at}: {error.message}",
            details={"nodeId": node_id, "path": path, "message": error.message},
        )


async def enqueue_resume(
    store: StateStore,
    execution_id: str,
    node_id: str,
    *,
    scope: Scope = (),
    input_json: str = "",
    owner: str = "",
) -> str:
    """Queue a resume for a paused node; returns its resume id."""
    try:
        value = jsonutil.loads(input_json) if input_json else None
    except ValueError as exc:
        raise InvalidArgument(
            f"resume input for node {node_id!r} is not valid JSON: {exc}"
        ) from exc
    loop = asyncio.get_running_loop()
    deadline = loop.time() + store.options.resume_wait_s
    sub = store.bus.subscribe(execution_id)  # before the first look: no wake-up can slip by
    try:
        while True:
            resume_id = await _try_claim(
                store, execution_id, node_id, scope, value, input_json, owner
            )
            if resume_id is not None:
                store.bus.notify_work()
                return resume_id
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise FailedPrecondition(
                    f"node {_where(node_id, scope)} of execution {execution_id!r} is not paused"
                )
            await sub.get(min(remaining, 0.1))
    finally:
        sub.close()


async def _try_claim(
    store: StateStore,
    execution_id: str,
    node_id: str,
    scope: Scope,
    value: Any,
    input_json: str,
    owner: str,
) -> str | None:
    """The new resume id; None when the pause may still be on its way."""
    key = scope_key(scope)
    now = utcnow()
    async with store.db.engine.begin() as conn:
        row = await store.execution_row(conn, execution_id, owner, lock=True)
        status = ExecutionStatus(row.status)
        if status in TERMINAL_STATUSES:
            raise FailedPrecondition(
                f"execution {execution_id!r} is {status.value}; node {_where(node_id, scope)} "
                "cannot be resumed"
            )
        where = and_(P.c.execution_id == execution_id, P.c.node_id == node_id, P.c.scope_key == key)
        pause = (await conn.execute(select(P.c.state, P.c.input_schema_json).where(where))).first()
        if pause is None:
            if status is ExecutionStatus.PAUSED or await _node_finished(
                conn, execution_id, node_id, key
            ):
                raise FailedPrecondition(
                    f"node {_where(node_id, scope)} of execution {execution_id!r} is not paused"
                )
            node_type = await _node_type(conn, row, node_id)
            if node_type is None:
                raise FailedPrecondition(f"workflow {row.workflow_id!r} has no node {node_id!r}")
            if node_type not in _PARKING_TYPES:
                raise FailedPrecondition(
                    f"node {node_id!r} is a {node_type!r}, which never pauses: nothing to resume"
                )
            return None  # the pause may be on its way: the caller waits for it
        if pause.state != PAUSE_OPEN:
            raise FailedPrecondition(
                f"node {_where(node_id, scope)} of execution {execution_id!r} was already resumed"
            )
        validate_resume_input(node_id, pause.input_schema_json, value)
        resume_id = str(uuid.uuid4())
        order = row.resume_counter + 1
        await conn.execute(
            update(P)
            .where(where)
            .values(
                state=PAUSE_CLAIMED,
                resume_id=resume_id,
                resume_input_json=input_json or "null",
                resume_order=order,
                enqueued_at=now,
            )
        )
        await conn.execute(
            update(E)
            .where(E.c.execution_id == execution_id)
            .values(resume_counter=order, resume_pending=True, updated_at=now)
        )
    return resume_id


_PARKING_TYPES = frozenset({"approval", "wait", "subworkflow"})


async def _node_type(conn: Any, row: Any, node_id: str) -> str | None:
    """The type of ``node_id`` in the execution's definition (None when it has no such node)."""
    text = row.definition_json
    if text is None:
        text = (
            await conn.execute(
                select(WV.c.definition_json).where(
                    WV.c.workflow_id == row.workflow_id, WV.c.version == row.workflow_version
                )
            )
        ).scalar()
    for node in (jsonutil.loads(text) or {}).get("nodes") or ():
        if isinstance(node, dict) and node.get("id") == node_id:
            return str(node.get("type", ""))
    return None


async def _node_finished(conn: Any, execution_id: str, node_id: str, key: str) -> bool:
    status = (
        await conn.execute(
            select(NL.c.status).where(
                NL.c.execution_id == execution_id, NL.c.node_id == node_id, NL.c.scope_key == key
            )
        )
    ).scalar()
    return status in ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELLED")

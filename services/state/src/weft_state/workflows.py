"""Workflows and their versions: registering a definition with its compiled DAG makes the next
version; executions pin the version they started on, so a new version never strands them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.exc import IntegrityError

from weft_common import jsonutil
from weft_common.errors import AlreadyExists, InvalidArgument, NotFound

from .clock import utcnow
from .domain import WorkflowVersionRecord
from .store import WF, WV, StateStore

__all__ = ["get_workflow", "list_workflows", "register_workflow"]


async def register_workflow(
    store: StateStore, definition: dict[str, Any], dag: bytes, *, owner: str = ""
) -> tuple[str, int]:
    """Store ``definition`` as the next version of its id; returns (workflow id, version)."""
    workflow_id = str(definition.get("id") or "")
    if not workflow_id:
        raise InvalidArgument("workflow definition has no id")
    for _ in range(3):  # two first registrations of one id race on the insert: retry once
        try:
            return await _register_once(store, workflow_id, definition, dag, owner)
        except IntegrityError:
            continue
    raise AlreadyExists(f"workflow {workflow_id!r} is being registered concurrently; retry")


async def _register_once(
    store: StateStore, workflow_id: str, definition: dict[str, Any], dag: bytes, owner: str
) -> tuple[str, int]:
    now = utcnow()
    async with store.db.engine.begin() as conn:
        row = (
            await conn.execute(
                select(WF.c.owner, WF.c.latest_version)
                .where(WF.c.workflow_id == workflow_id)
                .with_for_update()
            )
        ).first()
        if row is None:
            version = 1
            await conn.execute(
                WF.insert().values(
                    workflow_id=workflow_id,
                    owner=owner,
                    latest_version=1,
                    created_at=now,
                    updated_at=now,
                )
            )
        else:
            if row.owner != owner:
                raise AlreadyExists(f"workflow id {workflow_id!r} is registered by another owner")
            version = row.latest_version + 1
            await conn.execute(
                update(WF)
                .where(WF.c.workflow_id == workflow_id)
                .values(latest_version=version, updated_at=now)
            )
        await conn.execute(
            WV.insert().values(
                workflow_id=workflow_id,
                version=version,
                owner=owner,
                definition_json=jsonutil.dumps(definition),
                dag=dag,
                created_at=now,
            )
        )
    return workflow_id, version


def _record(row: Row[Any]) -> WorkflowVersionRecord:
    return WorkflowVersionRecord(
        workflow_id=row.workflow_id,
        version=row.version,
        definition=jsonutil.loads(row.definition_json) or {},
        dag=row.dag,
        created_at=row.created_at,
        owner=row.owner,
    )


async def get_workflow(
    store: StateStore, workflow_id: str, version: int = 0, *, owner: str = ""
) -> WorkflowVersionRecord:
    """One version (0 = the latest). NOT_FOUND for unknown ids/versions and other owners' ids."""
    stmt = select(WV).where(WV.c.workflow_id == workflow_id)
    if version:
        stmt = stmt.where(WV.c.version == version)
    else:
        stmt = stmt.order_by(WV.c.version.desc()).limit(1)
    async with store.db.engine.connect() as conn:
        row = (await conn.execute(stmt)).first()
    if row is None or (owner and row.owner != owner):
        what = f"workflow {workflow_id!r}" + (f" version {version}" if version else "")
        raise NotFound(f"{what} not found")
    return _record(row)


async def list_workflows(store: StateStore, *, owner: str = "") -> list[WorkflowVersionRecord]:
    """The latest version of every workflow (of ``owner`` when set)."""
    stmt = (
        select(WV)
        .join(WF, (WF.c.workflow_id == WV.c.workflow_id) & (WF.c.latest_version == WV.c.version))
        .order_by(WV.c.workflow_id)
    )
    if owner:
        stmt = stmt.where(WF.c.owner == owner)
    async with store.db.engine.connect() as conn:
        return [_record(r) for r in await conn.execute(stmt)]

"""What every domain module of the state service shares: the database, the bus, the tables (as
SQLAlchemy Core tables: no ORM identity map on the hot path) and row → domain conversion."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Row, Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from weft_common import jsonutil
from weft_common.errors import NotFound

from .database import Database
from .domain import (
    ExecutionRecord,
    ExecutionStatus,
    PausedNode,
    StoredEvent,
    scope_from_json,
)
from .events import EventBus
from .models import (
    EventRow,
    ExecutionRow,
    NodeLogRowModel,
    PauseRow,
    StepRowModel,
    WorkflowRow,
    WorkflowVersionRow,
)

__all__ = ["EV", "NL", "ST", "WF", "WV", "E", "P", "StateStore", "StoreOptions"]

E = cast(Table, ExecutionRow.__table__)
EV = cast(Table, EventRow.__table__)
NL = cast(Table, NodeLogRowModel.__table__)
P = cast(Table, PauseRow.__table__)
ST = cast(Table, StepRowModel.__table__)
WF = cast(Table, WorkflowRow.__table__)
WV = cast(Table, WorkflowVersionRow.__table__)

# Pause states: open (waiting) → claimed (a resume is queued) → applied; or cancelled.
PAUSE_OPEN, PAUSE_CLAIMED, PAUSE_APPLIED, PAUSE_CANCELLED = (
    "open",
    "claimed",
    "applied",
    "cancelled",
)
_DAG_CACHE_SIZE = 512
ACTIVE_STATUSES = (ExecutionStatus.PENDING, ExecutionStatus.RUNNING, ExecutionStatus.PAUSED)


@dataclass(frozen=True, slots=True)
class StoreOptions:
    stream_poll_s: float = 1.0
    claim_poll_s: float = 0.25
    resume_wait_s: float = 5.0
    default_lease_ms: int = 15_000


class StateStore:
    """The state service's persistence and fan-out, shared by its domain modules."""

    def __init__(self, db: Database, bus: EventBus, options: StoreOptions | None = None) -> None:
        self.db = db
        self.bus = bus
        self.options = options or StoreOptions()
        # Compiled DAGs by (workflow id, version): versions are never updated once registered,
        # so every LoadExecution after the first of a version skips reading the DAG again.
        self.dag_cache: dict[tuple[str, int], bytes] = {}
        # Connections without BEGIN/COMMIT (a round trip each) for work whose only write is one
        # statement, or which only reads (each statement sees committed data either way).
        self.autocommit = db.engine.execution_options(isolation_level="AUTOCOMMIT")

    def remember_dag(self, workflow_id: str, version: int, dag: bytes) -> None:
        if len(self.dag_cache) >= _DAG_CACHE_SIZE:
            self.dag_cache.clear()  # many versions in use: start over (bounded memory)
        self.dag_cache[(workflow_id, version)] = dag

    def insert(self, table: Table) -> Any:
        """A dialect insert (with ``on_conflict_do_update`` and ``excluded``)."""
        if self.db.is_postgres:
            return postgresql.insert(table)
        return sqlite.insert(table)

    async def execution_row(
        self, conn: AsyncConnection, execution_id: str, owner: str, *, lock: bool = False
    ) -> Row[Any]:
        """The execution row (locked FOR UPDATE when asked); NOT_FOUND for another owner's."""
        stmt = select(E).where(E.c.execution_id == execution_id)
        if lock:
            stmt = stmt.with_for_update()
        row = (await conn.execute(stmt)).first()
        if row is None or (owner and row.owner != owner):
            raise NotFound(f"execution {execution_id!r} not found")
        return row

    async def paused_nodes(self, conn: AsyncConnection, execution_id: str) -> list[PausedNode]:
        rows = await conn.execute(
            select(P.c.node_id, P.c.scope_json, P.c.reason, P.c.input_schema_json, P.c.wake_at)
            .where(P.c.execution_id == execution_id, P.c.state == PAUSE_OPEN)
            .order_by(P.c.id)
        )
        return [
            PausedNode(
                node_id=r.node_id,
                scope=scope_from_json(jsonutil.loads(r.scope_json)),
                reason=r.reason,
                input_schema_json=r.input_schema_json,
                wake_at=r.wake_at,
            )
            for r in rows
        ]

    async def read_events(
        self, execution_id: str, after_seq: int, limit: int = 1000
    ) -> tuple[list[StoredEvent], str, int]:
        """Events after ``after_seq`` in order, with the execution's status and last seq."""
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(
                select(EV.c.seq, EV.c.type, EV.c.node_id, EV.c.payload_json)
                .where(EV.c.execution_id == execution_id, EV.c.seq > after_seq)
                .order_by(EV.c.seq)
                .limit(limit)
            )
            events = [
                StoredEvent(execution_id, r.seq, r.type, r.node_id, r.payload_json) for r in rows
            ]
            head = (
                await conn.execute(
                    select(E.c.status, E.c.last_seq).where(E.c.execution_id == execution_id)
                )
            ).first()
        if head is None:
            raise NotFound(f"execution {execution_id!r} not found")
        return events, head.status, head.last_seq


def execution_record(row: Row[Any], paused: Sequence[PausedNode]) -> ExecutionRecord:
    return ExecutionRecord(
        execution_id=row.execution_id,
        workflow_id=row.workflow_id,
        workflow_version=row.workflow_version,
        status=ExecutionStatus(row.status),
        input_json=row.input_json,
        outputs_json=row.outputs_json,
        error=jsonutil.loads(row.error_json),
        paused_nodes=tuple(paused),
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        parent_execution_id=row.parent_execution_id,
        parent_node_id=row.parent_node_id,
        owner=row.owner,
        depth=row.depth,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        tokens_estimated=row.tokens_estimated,
        last_seq=row.last_seq,
        version=row.version,
        cancel_requested=row.cancel_requested,
        variables_json=row.variables_json,
    )

"""The schema (SQLAlchemy 2 declarative): the same tables on PostgreSQL and SQLite.

JSON payloads are stored as text: they are written once and handed back as is, never queried
inside, so the database never re-encodes them. Times are timezone-aware UTC everywhere (SQLite
stores them as naive UTC text, see ``UtcDateTime``). Alembic migrations in ``migrations/`` create
these tables; this module is their reference and what the queries are written against.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "CLAIMABLE_SQL",
    "Base",
    "EventRow",
    "ExecutionRow",
    "NodeLogRowModel",
    "PauseRow",
    "StepRowModel",
    "UtcDateTime",
    "WorkflowRow",
    "WorkflowVersionRow",
]

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on every dialect."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite compares the stored text: keep one naive-UTC format so comparisons order by time.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        result: datetime = value
        return result.replace(tzinfo=UTC) if result.tzinfo is None else result.astimezone(UTC)


# Kept literally in the claim query too, so that every planner sees it may use the index.
CLAIMABLE_SQL = (
    "status IN ('PENDING', 'RUNNING') OR (status = 'PAUSED' AND "
    "(resume_pending OR wake_at IS NOT NULL OR cancel_requested))"
)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class WorkflowRow(Base):
    __tablename__ = "workflows"

    workflow_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), default="")
    latest_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class WorkflowVersionRow(Base):
    __tablename__ = "workflow_versions"

    workflow_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("workflows.workflow_id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), default="")
    # The definition as proto3 JSON (SPEC section 1) and the serialized CompiledDag.
    definition_json: Mapped[str] = mapped_column(Text)
    dag: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ExecutionRow(Base):
    __tablename__ = "executions"
    __table_args__ = (
        # NULL keys never collide: executions without an idempotency key are unconstrained.
        UniqueConstraint("owner", "idempotency_key"),
        Index("ix_executions_status", "status"),
        Index("ix_executions_workflow_id", "workflow_id"),
        Index("ix_executions_parent_execution_id", "parent_execution_id"),
        # What claimers scan: executions that may want a worker. A PAUSED execution waiting for
        # a person is left out, so thousands of parked approvals cost a claim nothing.
        Index(
            "ix_executions_claimable",
            "created_at",
            postgresql_where=text(CLAIMABLE_SQL),
            sqlite_where=text(CLAIMABLE_SQL),
        ),
    )

    execution_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(128))
    # Pinned at creation; 0 for an inline definition (then definition_json/dag are set here).
    workflow_version: Mapped[int] = mapped_column(Integer)
    definition_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    dag: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)

    status: Mapped[str] = mapped_column(String(16))
    input_json: Mapped[str] = mapped_column(Text, default="")
    outputs_json: Mapped[str] = mapped_column(Text, default="")
    error_json: Mapped[str] = mapped_column(Text, default="")
    variables_json: Mapped[str] = mapped_column(Text, default="")
    # Optimistic concurrency: every commit names the version it read and bumps it.
    version: Mapped[int] = mapped_column(BigInteger, default=0)

    lease_owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lease_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)

    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_reason: Mapped[str] = mapped_column(Text, default="")
    # Earliest wake-up of a durable wait while PAUSED.
    wake_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # Resumes queued (claimed pauses) and not yet applied: makes a PAUSED execution claimable.
    resume_pending: Mapped[bool] = mapped_column(Boolean, default=False)
    # Pauses not yet closed (open or claimed); commits skip the pause table while it is 0.
    open_pauses: Mapped[int] = mapped_column(Integer, default=0)
    resume_counter: Mapped[int] = mapped_column(BigInteger, default=0)

    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    owner: Mapped[str] = mapped_column(String(255), default="")
    parent_execution_id: Mapped[str] = mapped_column(String(36), default="")
    parent_node_id: Mapped[str] = mapped_column(String(128), default="")
    depth: Mapped[int] = mapped_column(Integer, default=0)
    # W3C traceparent of the request that created it: its first run continues that trace.
    trace_context: Mapped[str] = mapped_column(String(255), default="")

    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)

    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    step_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens_estimated: Mapped[bool] = mapped_column(Boolean, default=False)


class StepRowModel(Base):
    """One committed StepRecord: a node run's result (its output is its own row, never a blob)."""

    __tablename__ = "steps"
    __table_args__ = (Index("ix_steps_execution_id_step_seq", "execution_id", "step_seq"),)

    execution_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("executions.execution_id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(512), primary_key=True)
    step_seq: Mapped[int] = mapped_column(BigInteger)
    node_id: Mapped[str] = mapped_column(String(128))
    scope_json: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16))
    output_json: Mapped[str] = mapped_column(Text, default="")
    error_json: Mapped[str] = mapped_column(Text, default="")
    fired_handles_json: Mapped[str] = mapped_column(Text, default="")
    data_json: Mapped[str] = mapped_column(Text, default="")


class NodeLogRowModel(Base):
    """One run of one node (upserted as it goes RUNNING → SUCCEEDED/FAILED/...)."""

    __tablename__ = "node_logs"

    execution_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("executions.execution_id", ondelete="CASCADE"), primary_key=True
    )
    node_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    scope_key: Mapped[str] = mapped_column(String(384), primary_key=True)
    scope_json: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    node_type: Mapped[str] = mapped_column(String(64), default="")
    input_json: Mapped[str] = mapped_column(Text, default="")
    output_json: Mapped[str] = mapped_column(Text, default="")
    error_json: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    duration_us: Mapped[int] = mapped_column(BigInteger, default=0)
    token_usage_json: Mapped[str] = mapped_column(Text, default="")
    # Order of first write: (commit version << 16) + position in that commit; never updated.
    ordinal: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class EventRow(Base):
    """The event log: one row per event, seq 1..N per execution with no gap."""

    __tablename__ = "events"

    execution_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("executions.execution_id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    node_id: Mapped[str] = mapped_column(String(128), default="")
    payload_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PauseRow(Base):
    """A parked node and its resume: open → claimed (resume queued) → applied (or cancelled)."""

    __tablename__ = "pauses"
    __table_args__ = (UniqueConstraint("execution_id", "node_id", "scope_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    execution_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("executions.execution_id", ondelete="CASCADE")
    )
    node_id: Mapped[str] = mapped_column(String(128))
    scope_key: Mapped[str] = mapped_column(String(384))
    scope_json: Mapped[str] = mapped_column(Text, default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    input_schema_json: Mapped[str] = mapped_column(Text, default="")
    wake_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    resume_id: Mapped[str | None] = mapped_column(String(36), nullable=True, unique=True)
    resume_input_json: Mapped[str] = mapped_column(Text, default="")
    resume_order: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    enqueued_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    applied_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)

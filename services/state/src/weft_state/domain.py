"""The state service's domain values: what the servicer converts protobuf into and back.

No protobuf, gRPC or SQL here. JSON payloads travel as text (they are stored and forwarded as is);
a compiled DAG is opaque bytes (the serialized ``CompiledDag``), stored and returned unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "TERMINAL_EVENT_TYPES",
    "TERMINAL_STATUSES",
    "CommitRequest",
    "CommitResult",
    "ControlChange",
    "CreateExecution",
    "CreatedExecution",
    "EventIn",
    "ExecutionRecord",
    "ExecutionStatus",
    "LeaseGrant",
    "LeaseRef",
    "LoadedExecution",
    "NodeLogRow",
    "PausedNode",
    "RenewResult",
    "ResumeRow",
    "Scope",
    "StepRow",
    "StoredEvent",
    "WorkflowVersionRecord",
    "scope_key",
]

Scope = tuple[tuple[str, int], ...]  # ((container, index), ...) outermost first


def scope_key(scope: Scope) -> str:
    """``""`` at top level, ``"loop:3/par:0"`` inside containers (matches the executor's keys)."""
    return "/".join(f"{c}:{i}" for c, i in scope)


def scope_to_json(scope: Scope) -> list[dict[str, Any]]:
    return [{"container": c, "index": i} for c, i in scope]


def scope_from_json(value: Any) -> Scope:
    return tuple((str(e["container"]), int(e["index"])) for e in value or ())


class ExecutionStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL_STATUSES = frozenset(
    {ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED}
)
TERMINAL_EVENT_TYPES = frozenset({"execution:completed", "execution:failed", "execution:cancelled"})


@dataclass(frozen=True, slots=True)
class WorkflowVersionRecord:
    workflow_id: str
    version: int
    definition: dict[str, Any]
    dag: bytes
    created_at: datetime
    owner: str = ""


@dataclass(frozen=True, slots=True)
class PausedNode:
    node_id: str
    scope: Scope = ()
    reason: str = ""
    input_schema_json: str = ""
    wake_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    execution_id: str
    workflow_id: str
    workflow_version: int
    status: ExecutionStatus
    input_json: str
    outputs_json: str
    error: dict[str, Any] | None
    paused_nodes: tuple[PausedNode, ...]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    parent_execution_id: str
    parent_node_id: str
    owner: str
    depth: int
    input_tokens: int
    output_tokens: int
    tokens_estimated: bool
    last_seq: int
    version: int
    cancel_requested: bool
    variables_json: str


@dataclass(frozen=True, slots=True)
class CreateExecution:
    input_json: str = ""
    workflow_id: str = ""
    workflow_version: int = 0  # 0 = latest
    # An inline (unregistered) definition with its compiled DAG, stored with the execution.
    definition: dict[str, Any] | None = None
    dag: bytes = b""
    idempotency_key: str = ""
    owner: str = ""
    parent_execution_id: str = ""
    parent_node_id: str = ""
    depth: int = 0
    claim_worker_id: str = ""
    lease_ms: int = 0
    trace_context: str = ""  # W3C traceparent of the creating request ("" when not traced)


@dataclass(frozen=True, slots=True)
class LeaseRef:
    execution_id: str
    token: str
    worker_id: str = ""


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    execution_id: str
    worker_id: str
    token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class CreatedExecution:
    execution_id: str
    existing: bool
    lease: LeaseGrant | None = None
    # A new leased execution, as LoadExecution would answer for that lease, when the create
    # could say it without reading it back (the PostgreSQL one-statement create).
    loaded: LoadedExecution | None = None


@dataclass(frozen=True, slots=True)
class RenewResult:
    lost: list[str]
    cancel: list[str]
    resumed: list[str]


@dataclass(frozen=True, slots=True)
class StepRow:
    key: str
    node_id: str
    scope: Scope
    status: str  # NodeStatus name: SUCCEEDED, FAILED, SKIPPED, ...
    output_json: str = ""
    error: dict[str, Any] | None = None
    fired_handles: tuple[str, ...] = ()
    data_json: str = ""
    step_seq: int = 0


@dataclass(frozen=True, slots=True)
class NodeLogRow:
    node_id: str
    scope: Scope
    status: str
    attempt: int = 0
    node_type: str = ""
    input_json: str = ""
    output_json: str = ""
    error: dict[str, Any] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_us: int = 0
    token_usage: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class EventIn:
    """An event to append; seq, executionId and the final JSON are made at commit time."""

    type: str
    node_id: str = ""
    scope: Scope = ()
    timestamp: datetime | None = None  # None: commit time
    payload_json: str = ""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    execution_id: str
    seq: int
    type: str
    node_id: str
    # The whole event as SPEC JSON (seq, type, executionId, timestamp, nodeId, scope, ...).
    payload_json: str

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENT_TYPES


@dataclass(frozen=True, slots=True)
class ControlChange:
    status: ExecutionStatus | None = None
    variables_json: str = ""
    outputs_json: str = ""
    error: dict[str, Any] | None = None
    paused_nodes: tuple[PausedNode, ...] = ()
    applied_resume_ids: tuple[str, ...] = ()
    input_tokens: int = 0
    output_tokens: int = 0
    tokens_estimated: bool = False
    wake_at: datetime | None = None
    release_lease: bool = False


@dataclass(frozen=True, slots=True)
class CommitRequest:
    lease: LeaseRef
    expected_version: int
    steps: tuple[StepRow, ...] = ()
    node_logs: tuple[NodeLogRow, ...] = ()
    events: tuple[EventIn, ...] = ()
    control: ControlChange = field(default_factory=ControlChange)


@dataclass(frozen=True, slots=True)
class CommitResult:
    version: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class ResumeRow:
    resume_id: str
    node_id: str
    scope: Scope
    input_json: str
    enqueued_at: datetime


@dataclass(frozen=True, slots=True)
class LoadedExecution:
    execution: ExecutionRecord
    dag: bytes
    steps: list[StepRow]
    variables_json: str
    resumes: list[ResumeRow]
    version: int
    cancel_requested: bool
    depth: int
    trace_context: str = ""

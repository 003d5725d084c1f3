"""What the engine hands to persistence: steps, node logs, events and control-state changes.

These are the engine's only output besides its return value. The engine never touches a database
or an event bus: it passes ``Commit`` batches to an ``ExecutionStore`` (in memory for tests and
benchmarks, the state service's ``CommitStep`` RPC in production).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple, Protocol

__all__ = [
    "Commit",
    "ControlUpdate",
    "EventDraft",
    "ExecutionStore",
    "NodeLogRecord",
    "NodeStatus",
    "PausedNodeInfo",
    "Scope",
    "ScopeEntry",
    "StepRecord",
    "scope_json",
    "scope_key",
]


class ScopeEntry(NamedTuple):
    """One enclosing container iteration/branch (a tuple: cheaper to build and to hash than a
    frozen dataclass; one per frame)."""

    container: str
    # The field shadows tuple.index (the method), as intended: ``entry.index`` is the int.
    index: int  # type: ignore[assignment]


Scope = tuple[ScopeEntry, ...]


def scope_key(node_id: str, scope: Scope) -> str:
    """Unique key of one node run: ``"n"`` at top level, ``"n@L:3/P:0"`` inside containers."""
    if not scope:
        return node_id
    return node_id + "@" + "/".join(f"{s.container}:{s.index}" for s in scope)


def scope_json(scope: Scope) -> list[dict[str, Any]]:
    return [{"container": s.container, "index": s.index} for s in scope]


class NodeStatus(str, Enum):  # noqa: UP042 - StrEnum would change str() of members
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    PAUSED = "PAUSED"
    CANCELLED = "CANCELLED"


@dataclass(slots=True)
class EventDraft:
    """An event without its seq (the store assigns seq, 1..N per execution, in append order)."""

    type: str
    timestamp: float  # epoch seconds
    node_id: str = ""
    scope: Scope = ()
    # Type-specific fields in SPEC camelCase (nodeType, output, error, content, attempt, ...).
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class StepRecord:
    """One completed unit of work, enough to replay it after a crash without re-running it."""

    key: str
    node_id: str
    scope: Scope
    status: NodeStatus
    output: Any = None
    error: dict[str, Any] | None = None
    fired_handles: tuple[str, ...] = ()
    data: dict[str, Any] | None = None  # engine-private (e.g. a container's item count)


@dataclass(slots=True)
class NodeLogRecord:
    node_id: str
    node_type: str
    scope: Scope
    status: NodeStatus
    attempt: int
    started_at: float
    finished_at: float | None = None
    input: Any = None
    output: Any = None
    error: dict[str, Any] | None = None
    token_usage: dict[str, Any] | None = None  # {inputTokens, outputTokens, estimated}


@dataclass(slots=True)
class PausedNodeInfo:
    node_id: str
    scope: Scope
    reason: str = ""
    input_schema: dict[str, Any] | None = None
    wake_at: float | None = None  # durable waits


@dataclass(slots=True)
class ControlUpdate:
    status: str | None = None  # "RUNNING", "PAUSED", "SUCCEEDED", "FAILED", "CANCELLED"
    variables: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    paused_nodes: list[PausedNodeInfo] = field(default_factory=list)
    applied_resume_ids: list[str] = field(default_factory=list)
    token_usage: dict[str, Any] | None = None
    wake_at: float | None = None
    release_lease: bool = False


@dataclass(slots=True)
class Commit:
    """One atomic write: everything in it is durable together, or none of it is."""

    steps: list[StepRecord] = field(default_factory=list)
    node_logs: list[NodeLogRecord] = field(default_factory=list)
    events: list[EventDraft] = field(default_factory=list)
    control: ControlUpdate | None = None


class ExecutionStore(Protocol):
    """Where one execution's commits go. Calls for one execution are never concurrent (the
    engine's journal serialises and groups them); ``write`` returns once the batch is durable and
    raises ``weft_common.errors.Conflict`` when this writer is stale (lease lost)."""

    async def write(self, commit: Commit) -> None: ...

"""An in-memory ``ExecutionStore``: assigns event seqs, keeps steps, node logs and control state.

Used by tests and benchmarks, and as the model of what the state service does with a ``Commit``:
everything in one commit becomes visible together, events get seq 1..N in append order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .journal import add_token_usage
from .records import (
    Commit,
    ControlUpdate,
    EventDraft,
    NodeLogRecord,
    StepRecord,
    scope_json,
    scope_key,
)

__all__ = ["MemoryStore", "RecordingStore", "StoredEvent"]


@dataclass(slots=True)
class StoredEvent:
    seq: int
    draft: EventDraft

    def to_json(self, execution_id: str) -> dict[str, Any]:
        """The SPEC section 5 JSON form of this event."""
        d = self.draft
        out: dict[str, Any] = {
            "seq": self.seq,
            "type": d.type,
            "executionId": execution_id,
            "timestamp": d.timestamp,
        }
        if d.node_id:
            out["nodeId"] = d.node_id
            out["scope"] = scope_json(d.scope)
        out.update(d.payload)
        return out


@dataclass
class MemoryStore:
    """One execution's durable state, in memory. ``keep=False`` counts without keeping (benchmarks)."""

    execution_id: str = ""
    keep: bool = True
    events: list[StoredEvent] = field(default_factory=list)
    steps: dict[str, StepRecord] = field(default_factory=dict)
    node_logs: list[NodeLogRecord] = field(default_factory=list)
    commits: int = 0
    seq: int = 0
    status: str = "PENDING"
    control: ControlUpdate = field(default_factory=ControlUpdate)
    # Raise this from the next write (simulates a lost lease or a dead database).
    fail_next: BaseException | None = None

    async def write(self, commit: Commit) -> None:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        self.commits += 1
        for draft in commit.events:
            self.seq += 1
            if self.keep:
                self.events.append(StoredEvent(self.seq, draft))
        if self.keep:
            for step in commit.steps:
                self.steps[step.key] = step
            self.node_logs.extend(commit.node_logs)
        if commit.control is not None:
            self._apply_control(commit.control)

    def _apply_control(self, update: ControlUpdate) -> None:
        c = self.control
        if update.status is not None:
            self.status = update.status
            c.status = update.status
        if update.variables is not None:
            c.variables = update.variables
        if update.outputs is not None:
            c.outputs = update.outputs
        if update.error is not None:
            c.error = update.error
        if update.status is not None:
            c.paused_nodes = list(update.paused_nodes)
        c.applied_resume_ids.extend(update.applied_resume_ids)
        if update.token_usage is not None:
            c.token_usage = add_token_usage(c.token_usage, update.token_usage)
        c.wake_at = update.wake_at if update.status is not None else c.wake_at

    def event_json(self) -> list[dict[str, Any]]:
        return [e.to_json(self.execution_id) for e in self.events]

    def open_runs(self) -> list[str]:
        """Keys of node runs with a ``node:started`` and no end event yet (for a replay)."""
        open_: dict[str, int] = {}
        for e in self.events:
            d = e.draft
            if d.type == "node:started":
                k = scope_key(d.node_id, d.scope)
                open_[k] = open_.get(k, 0) + 1
            elif d.type in ("node:completed", "node:error", "node:cancelled"):
                k = scope_key(d.node_id, d.scope)
                open_[k] = open_.get(k, 0) - 1
        return [k for k, n in open_.items() if n > 0]


@dataclass
class RecordingStore(MemoryStore):
    """A MemoryStore that also remembers each Commit, so a test can cut the history after k."""

    history: list[Commit] = field(default_factory=list)

    async def write(self, commit: Commit) -> None:
        await super().write(commit)
        self.history.append(commit)

    def truncated(self, commits: int) -> MemoryStore:
        cut = MemoryStore(execution_id=self.execution_id)
        for c in self.history[:commits]:
            cut.commits += 1
            for draft in c.events:
                cut.seq += 1
                cut.events.append(StoredEvent(cut.seq, draft))
            for step in c.steps:
                cut.steps[step.key] = step
            cut.node_logs.extend(c.node_logs)
            if c.control is not None:
                cut._apply_control(c.control)
        return cut

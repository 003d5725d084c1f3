"""Helpers for the state tests: settings per backend, and a driver that creates executions and
commits steps the way an executor does."""

from __future__ import annotations

import secrets
from typing import Any

from helpers.db import Backend

from weft.workflow.v1 import workflow_pb2
from weft_common import jsonutil
from weft_state.clock import utcnow
from weft_state.commits import commit_step
from weft_state.domain import (
    CommitRequest,
    CommitResult,
    ControlChange,
    CreateExecution,
    EventIn,
    ExecutionStatus,
    LeaseGrant,
    LeaseRef,
    NodeLogRow,
    PausedNode,
    StepRow,
    StoredEvent,
)
from weft_state.executions import create_execution
from weft_state.settings import StateSettings
from weft_state.store import StateStore
from weft_state.workflows import register_workflow


def state_settings(backend: Backend, **overrides: Any) -> StateSettings:
    values: dict[str, Any] = {
        "database_url": backend.database_url,
        "redis_url": backend.redis_url,
        "redis_prefix": backend.redis_prefix,
        "stream_poll_ms": 500,
        "claim_poll_ms": 50,
        "resume_wait_ms": 3000,
        "db_pool_size": 10,
    }
    values.update(overrides)
    return StateSettings(**values)








def dag_bytes(workflow_id: str, marker: str = "") -> bytes:
    """A serialized CompiledDag (the state service stores it opaquely)."""
    return workflow_pb2.CompiledDag(
        workflow_id=workflow_id, start_node="start", definition_hash=marker
    ).SerializeToString()


def ev(etype: str, node: str = "", **payload: Any) -> EventIn:
    return EventIn(type=etype, node_id=node, payload_json=jsonutil.dumps(payload) if payload else "")


def step(node: str, output: Any = None, status: str = "SUCCEEDED") -> StepRow:
    return StepRow(key=node, node_id=node, scope=(), status=status, output_json=jsonutil.dumps(output))


def node_log(node: str, status: str = "SUCCEEDED", **kw: Any) -> NodeLogRow:
    return NodeLogRow(node_id=node, scope=(), status=status, node_type=kw.pop("node_type", "transform"),
                      started_at=kw.pop("started_at", utcnow()), **kw)


NODES = [
    {"id": "start", "type": "start"},
    *({"id": n, "type": "approval"} for n in ("approve", "a", "b")),
    {"id": "sleep", "type": "wait"},
    {"id": "slow", "type": "http"},
]


class Driver:
    """Creates executions and commits like an executor would."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.worker = "worker-" + secrets.token_hex(3)

    async def workflow(self, owner: str = "", workflow_id: str = "") -> str:
        workflow_id = workflow_id or "wf_" + secrets.token_hex(4)
        await register_workflow(
            self.store, {"id": workflow_id, "nodes": NODES},
            dag_bytes(workflow_id), owner=owner,
        )
        return workflow_id

    async def create(self, *, claim: bool = True, owner: str = "", workflow_id: str = "",
                     **kw: Any) -> tuple[str, LeaseGrant | None]:
        workflow_id = workflow_id or await self.workflow(owner)
        created = await create_execution(
            self.store,
            CreateExecution(workflow_id=workflow_id, input_json='{"x": 1}', owner=owner,
                            claim_worker_id=self.worker if claim else "", lease_ms=kw.pop("lease_ms", 30_000),
                            **kw),
        )
        return created.execution_id, created.lease

    async def commit(
        self,
        lease: LeaseGrant | LeaseRef,
        version: int,
        *,
        events: tuple[EventIn, ...] | list[EventIn] = (),
        steps: tuple[StepRow, ...] | list[StepRow] = (),
        logs: tuple[NodeLogRow, ...] | list[NodeLogRow] = (),
        **control: Any,
    ) -> CommitResult:
        return await commit_step(
            self.store,
            CommitRequest(
                lease=LeaseRef(lease.execution_id, lease.token),
                expected_version=version,
                steps=tuple(steps),
                node_logs=tuple(logs),
                events=tuple(events),
                control=ControlChange(**control),
            ),
        )

    async def start(self, lease: LeaseGrant) -> CommitResult:
        return await self.commit(lease, 0, events=[ev("execution:started")], status=ExecutionStatus.RUNNING)

    async def pause(self, lease: LeaseGrant, version: int, *nodes: PausedNode) -> CommitResult:
        return await self.commit(
            lease, version,
            events=[ev("node:started", n.node_id, nodeType="approval") for n in nodes]
            + [ev("execution:paused")],
            logs=[node_log(n.node_id, "PAUSED", node_type="approval") for n in nodes],
            status=ExecutionStatus.PAUSED, paused_nodes=tuple(nodes), release_lease=True,
        )

    async def events(self, execution_id: str) -> list[StoredEvent]:
        events, _, _ = await self.store.read_events(execution_id, 0, limit=100_000)
        return events





APPROVAL_SCHEMA = jsonutil.dumps(
    {"type": "object", "required": ["approved"], "properties": {"approved": {"type": "boolean"}}}
)


def approval(node: str = "approve", **kw: Any) -> PausedNode:
    return PausedNode(node_id=node, reason="ok to ship?", input_schema_json=APPROVAL_SCHEMA, **kw)

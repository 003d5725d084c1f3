"""Conversions between the engine's persistence records (``records``) and the state service's
protobuf messages. The durable hot path: keep every function here O(size of its record)."""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from weft.state.v1 import state_pb2
from weft.workflow.v1 import workflow_pb2
from weft_common import jsonutil

from .engine import Resume
from .records import (
    Commit,
    ControlUpdate,
    EventDraft,
    NodeLogRecord,
    NodeStatus,
    PausedNodeInfo,
    Scope,
    ScopeEntry,
    StepRecord,
)

__all__ = [
    "EXECUTION_STATUS",
    "EXECUTION_STATUS_NAMES",
    "commit_to_request",
    "error_from_proto",
    "error_to_proto",
    "resume_from_proto",
    "scope_from_proto",
    "step_from_proto",
    "timestamp",
]

NODE_STATUS: dict[NodeStatus, int] = {
    NodeStatus.RUNNING: workflow_pb2.NODE_STATUS_RUNNING,
    NodeStatus.SUCCEEDED: workflow_pb2.NODE_STATUS_SUCCEEDED,
    NodeStatus.FAILED: workflow_pb2.NODE_STATUS_FAILED,
    NodeStatus.SKIPPED: workflow_pb2.NODE_STATUS_SKIPPED,
    NodeStatus.PAUSED: workflow_pb2.NODE_STATUS_PAUSED,
    NodeStatus.CANCELLED: workflow_pb2.NODE_STATUS_CANCELLED,
}
NODE_STATUS_FROM_PROTO = {v: k for k, v in NODE_STATUS.items()}

EXECUTION_STATUS: dict[str, int] = {
    "PENDING": workflow_pb2.EXECUTION_STATUS_PENDING,
    "RUNNING": workflow_pb2.EXECUTION_STATUS_RUNNING,
    "PAUSED": workflow_pb2.EXECUTION_STATUS_PAUSED,
    "SUCCEEDED": workflow_pb2.EXECUTION_STATUS_SUCCEEDED,
    "FAILED": workflow_pb2.EXECUTION_STATUS_FAILED,
    "CANCELLED": workflow_pb2.EXECUTION_STATUS_CANCELLED,
}
EXECUTION_STATUS_NAMES = {v: k for k, v in EXECUTION_STATUS.items()}
# A commit that leaves the execution in one of these hands the execution back to the state service.
RELEASING_STATUSES = frozenset({"PAUSED", "SUCCEEDED", "FAILED", "CANCELLED"})


def timestamp(epoch_s: float) -> Timestamp:
    seconds = int(epoch_s)
    return Timestamp(seconds=seconds, nanos=int((epoch_s - seconds) * 1e9))


def _json(value: Any) -> str:
    return "" if value is None else jsonutil.dumps(value)


def _scope(scope: Scope) -> list[workflow_pb2.ScopeEntry]:
    return [workflow_pb2.ScopeEntry(container=s.container, index=s.index) for s in scope]


def scope_from_proto(entries: Any) -> Scope:
    return tuple(ScopeEntry(container=e.container, index=e.index) for e in entries)


def error_to_proto(error: dict[str, Any]) -> workflow_pb2.ExecutionError:
    msg = workflow_pb2.ExecutionError(
        message=str(error.get("message", "")),
        code=str(error.get("code", "")),
        node_id=str(error.get("nodeId", "")),
        status=int(error.get("status") or 0),
    )
    details = error.get("details")
    if details is not None:
        msg.details_json = jsonutil.dumps(details)
    return msg


def error_from_proto(msg: workflow_pb2.ExecutionError) -> dict[str, Any]:
    error: dict[str, Any] = {"message": msg.message, "code": msg.code}
    if msg.node_id:
        error["nodeId"] = msg.node_id
    if msg.status:
        error["status"] = msg.status
    if msg.details_json:
        error["details"] = jsonutil.loads(msg.details_json)
    return error


def _step(step: StepRecord) -> state_pb2.StepRecord:
    msg = state_pb2.StepRecord(
        key=step.key,
        node_id=step.node_id,
        scope=_scope(step.scope),
        status=NODE_STATUS[step.status],  # type: ignore[arg-type]
        output_json=_json(step.output),
        fired_handles=step.fired_handles,
        data_json=_json(step.data),
    )
    if step.error is not None:
        msg.error.CopyFrom(error_to_proto(step.error))
    return msg


def step_from_proto(msg: state_pb2.StepRecord) -> StepRecord:
    return StepRecord(
        key=msg.key,
        node_id=msg.node_id,
        scope=scope_from_proto(msg.scope),
        status=NODE_STATUS_FROM_PROTO.get(msg.status, NodeStatus.SUCCEEDED),
        output=jsonutil.loads(msg.output_json),
        error=error_from_proto(msg.error) if msg.HasField("error") else None,
        fired_handles=tuple(msg.fired_handles),
        data=jsonutil.loads(msg.data_json),
    )


def resume_from_proto(msg: state_pb2.ResumeRequest) -> Resume:
    return Resume(
        resume_id=msg.resume_id,
        node_id=msg.node_id,
        scope=scope_from_proto(msg.scope),
        input=jsonutil.loads(msg.input_json),
    )


def _token_usage(usage: dict[str, Any]) -> workflow_pb2.TokenUsage:
    return workflow_pb2.TokenUsage(
        input_tokens=int(usage.get("inputTokens") or 0),
        output_tokens=int(usage.get("outputTokens") or 0),
        estimated=bool(usage.get("estimated", False)),
    )


def _node_log(log: NodeLogRecord) -> workflow_pb2.NodeLog:
    msg = workflow_pb2.NodeLog(
        node_id=log.node_id,
        node_type=log.node_type,
        scope=_scope(log.scope),
        status=NODE_STATUS[log.status],  # type: ignore[arg-type]
        attempt=log.attempt,
        input_json=_json(log.input),
        output_json=_json(log.output),
        started_at=timestamp(log.started_at),
    )
    if log.finished_at is not None:
        msg.finished_at.CopyFrom(timestamp(log.finished_at))
        msg.duration_us = int((log.finished_at - log.started_at) * 1e6)
    if log.error is not None:
        msg.error.CopyFrom(error_to_proto(log.error))
    if log.token_usage is not None:
        msg.token_usage.CopyFrom(_token_usage(log.token_usage))
    return msg


def _event(event: EventDraft) -> state_pb2.EventDraft:
    return state_pb2.EventDraft(
        type=event.type,
        node_id=event.node_id,
        scope=_scope(event.scope),
        timestamp=timestamp(event.timestamp),
        payload_json=jsonutil.dumps(event.payload) if event.payload else "",
    )


def _paused_node(node: PausedNodeInfo) -> workflow_pb2.PausedNode:
    msg = workflow_pb2.PausedNode(
        node_id=node.node_id,
        scope=_scope(node.scope),
        reason=node.reason,
        input_schema_json=_json(node.input_schema),
    )
    if node.wake_at is not None:
        msg.wake_at.CopyFrom(timestamp(node.wake_at))
    return msg


def _control(control: ControlUpdate) -> state_pb2.ControlState:
    msg = state_pb2.ControlState(
        applied_resume_ids=control.applied_resume_ids,
        # Pausing or finishing hands the execution back: the lease goes with the same commit.
        release_lease=control.release_lease or control.status in RELEASING_STATUSES,
    )
    if control.status:
        msg.status = EXECUTION_STATUS[control.status]  # type: ignore[assignment]
    if control.variables is not None:
        msg.variables_json = jsonutil.dumps(control.variables)
    if control.outputs is not None:
        msg.outputs_json = jsonutil.dumps(control.outputs)
    if control.error is not None:
        msg.error.CopyFrom(error_to_proto(control.error))
    if control.paused_nodes:
        msg.paused_nodes.extend(_paused_node(p) for p in control.paused_nodes)
    if control.token_usage is not None:
        msg.token_usage.CopyFrom(_token_usage(control.token_usage))
    if control.wake_at is not None:
        msg.wake_at.CopyFrom(timestamp(control.wake_at))
    return msg


def commit_to_request(
    commit: Commit, *, lease: state_pb2.Lease, expected_version: int
) -> state_pb2.CommitStepRequest:
    """One ``CommitStepRequest`` holding everything in ``commit``."""
    request = state_pb2.CommitStepRequest(
        lease=lease,
        expected_version=expected_version,
        steps=[_step(s) for s in commit.steps],
        node_logs=[_node_log(n) for n in commit.node_logs],
        events=[_event(e) for e in commit.events],
    )
    if commit.control is not None:
        request.control.CopyFrom(_control(commit.control))
    parked = [s for s in commit.steps if s.status is NodeStatus.PAUSED]
    if parked:
        # A parked run opens its pause in the same commit, also while other branches still run:
        # it can then be resumed at once, without waiting for the whole execution to pause.
        listed = {(p.node_id, tuple((e.container, e.index) for e in p.scope))
                  for p in request.control.paused_nodes}
        for step in parked:
            key = (step.node_id, tuple((e.container, e.index) for e in step.scope))
            if key not in listed:
                request.control.paused_nodes.append(_paused_node(_parked_info(step)))
    return request


def _parked_info(step: StepRecord) -> PausedNodeInfo:
    data = step.data or {}
    return PausedNodeInfo(
        node_id=step.node_id,
        scope=step.scope,
        reason=str(data.get("reason") or ""),
        input_schema=data.get("inputSchema"),
        wake_at=data.get("wakeAt"),
    )

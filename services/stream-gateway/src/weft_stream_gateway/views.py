"""Protobuf messages of the services → the JSON shapes of the HTTP API (SPEC section 6).

The one place where the gateway reads protobuf fields; routes work with the dicts built here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

import weft_common.jsonutil as jsonutil
from weft.state.v1 import state_pb2
from weft.workflow.v1 import workflow_pb2

__all__ = [
    "diagnostic_view",
    "diagnostics_from_details",
    "execution_view",
    "node_log_view",
    "rfc3339",
    "scope_view",
    "workflow_definition_view",
    "workflow_summary_view",
]

_EXECUTION_PREFIX = "EXECUTION_STATUS_"
_NODE_PREFIX = "NODE_STATUS_"


def rfc3339(ts: Timestamp) -> str | None:
    """RFC 3339 in UTC with milliseconds (``2026-01-02T03:04:05.678Z``); unset → None."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    when = datetime.fromtimestamp(ts.seconds, UTC).replace(microsecond=ts.nanos // 1000)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def scope_view(scope: Iterable[workflow_pb2.ScopeEntry]) -> list[dict[str, Any]]:
    return [{"container": s.container, "index": s.index} for s in scope]


def error_view(err: workflow_pb2.ExecutionError) -> dict[str, Any] | None:
    """``{message, code, nodeId, status?, details?}``; an unset error → None."""
    if not (err.message or err.code or err.node_id):
        return None
    out: dict[str, Any] = {"message": err.message, "code": err.code, "nodeId": err.node_id or None}
    if err.status:
        out["status"] = err.status
    if err.details_json:
        out["details"] = jsonutil.loads(err.details_json)
    return out


def _status_name(value: int, enum: Any, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix)


def token_usage_view(usage: workflow_pb2.TokenUsage) -> dict[str, Any]:
    out: dict[str, Any] = {"inputTokens": usage.input_tokens, "outputTokens": usage.output_tokens}
    if usage.estimated:
        out["estimated"] = True
    return out


def execution_view(ex: workflow_pb2.Execution) -> dict[str, Any]:
    """GET /v1/executions/{id}."""
    paused = []
    for p in ex.paused_nodes:
        item: dict[str, Any] = {
            "nodeId": p.node_id,
            "scope": scope_view(p.scope),
            "reason": p.reason,
            "inputSchema": jsonutil.loads(p.input_schema_json),
        }
        wake_at = rfc3339(p.wake_at)
        if wake_at:
            item["wakeAt"] = wake_at
        paused.append(item)
    out: dict[str, Any] = {
        "executionId": ex.execution_id,
        "workflowId": ex.workflow_id,
        "workflowVersion": ex.workflow_version or None,
        "status": _status_name(ex.status, workflow_pb2.ExecutionStatus, _EXECUTION_PREFIX),
        "input": jsonutil.loads(ex.input_json),
        "outputs": jsonutil.loads(ex.outputs_json),
        "error": error_view(ex.error),
        "pausedNodes": paused,
        "createdAt": rfc3339(ex.created_at),
        "startedAt": rfc3339(ex.started_at),
        "finishedAt": rfc3339(ex.finished_at),
        "lastSeq": ex.last_seq,
    }
    if ex.parent_execution_id:
        out["parentExecutionId"] = ex.parent_execution_id
    if ex.HasField("token_usage"):
        out["tokenUsage"] = token_usage_view(ex.token_usage)
    return out


def node_log_view(log: workflow_pb2.NodeLog) -> dict[str, Any]:
    """One entry of GET /v1/executions/{id}/nodes."""
    out: dict[str, Any] = {
        "nodeId": log.node_id,
        "nodeType": log.node_type or None,
        "scope": scope_view(log.scope),
        "status": _status_name(log.status, workflow_pb2.NodeStatus, _NODE_PREFIX),
        "attempt": log.attempt,
        "input": jsonutil.loads(log.input_json),
        "output": jsonutil.loads(log.output_json),
        "error": error_view(log.error),
        "startedAt": rfc3339(log.started_at),
        "finishedAt": rfc3339(log.finished_at),
        "durationMs": round(log.duration_us / 1000, 3),
    }
    if log.HasField("token_usage"):
        out["tokenUsage"] = token_usage_view(log.token_usage)
    return out


def diagnostic_view(d: workflow_pb2.Diagnostic) -> dict[str, Any]:
    out: dict[str, Any] = {"code": d.code, "message": d.message}
    if d.node_id:
        out["nodeId"] = d.node_id
    if d.edge_id:
        out["edgeId"] = d.edge_id
    if d.field:
        out["field"] = d.field
    return out


_DIAG_KEYS = {"code": "code", "message": "message", "nodeId": "nodeId", "node_id": "nodeId",
              "edgeId": "edgeId", "edge_id": "edgeId", "field": "field"}


def diagnostics_from_details(details: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """Diagnostics carried in a WeftError's details (camelCase or snake_case keys), if any."""
    raw = details.get("diagnostics")
    if not isinstance(raw, list):
        return None
    out = []
    for item in raw:
        if isinstance(item, Mapping):
            out.append({_DIAG_KEYS[k]: v for k, v in item.items() if k in _DIAG_KEYS and v not in ("", None)})
        else:
            out.append({"code": "INVALID", "message": str(item)})
    return out


def workflow_definition_view(wf: state_pb2.WorkflowVersion) -> dict[str, Any]:
    """GET /v1/workflows/{id}: the definition exactly as registered (proto3 JSON)."""
    return _plain(json_format.MessageToDict(wf.definition))  # type: ignore[no-any-return]


def workflow_summary_view(wf: state_pb2.WorkflowVersion) -> dict[str, Any]:
    return {
        "id": wf.workflow_id,
        "name": wf.definition.name or None,
        "version": wf.version,
        "createdAt": rfc3339(wf.created_at),
        "nodes": len(wf.definition.nodes),
    }


def _plain(value: Any) -> Any:
    """Struct numbers come back as doubles: give integral ones back as ints."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value

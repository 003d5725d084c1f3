"""``definition_hash``: sha256 of the definition's canonical JSON (sorted keys, defaults omitted)."""

from __future__ import annotations

import hashlib
from typing import Any

from weft_common import jsonutil
from weft_common.workflow import RetryPolicy, WorkflowDefinition

__all__ = ["canonical_definition", "definition_hash"]

_DEFAULT_RETRY = RetryPolicy()


def canonical_definition(defn: WorkflowDefinition) -> dict[str, Any]:
    """The JSON form (SPEC section 1) with default-valued fields left out."""
    nodes: list[dict[str, Any]] = []
    for n in defn.nodes:
        item: dict[str, Any] = {"id": n.id, "type": n.type}
        if n.name:
            item["name"] = n.name
        if n.parent:
            item["parent"] = n.parent
        if n.config:
            item["config"] = dict(n.config)
        if n.retry != _DEFAULT_RETRY:
            item["retry"] = {
                "maxAttempts": n.retry.max_attempts,
                "initialIntervalMs": n.retry.initial_interval_ms,
                "backoffCoefficient": n.retry.backoff_coefficient,
                "maxIntervalMs": n.retry.max_interval_ms,
            }
        if n.timeout_ms:
            item["timeoutMs"] = n.timeout_ms
        nodes.append(item)
    edges: list[dict[str, Any]] = []
    for e in defn.edges:
        item = {"source": e.source, "target": e.target}
        if e.id:
            item["id"] = e.id
        if e.source_handle and e.source_handle != "out":
            item["sourceHandle"] = e.source_handle
        edges.append(item)
    out: dict[str, Any] = {"id": defn.id, "nodes": nodes, "edges": edges}
    if defn.name:
        out["name"] = defn.name
    if defn.description:
        out["description"] = defn.description
    if defn.input_schema is not None:
        out["inputSchema"] = dict(defn.input_schema)
    if defn.variables:
        out["variables"] = dict(defn.variables)
    return out


def definition_hash(defn: WorkflowDefinition) -> str:
    return hashlib.sha256(jsonutil.dumps_canonical(canonical_definition(defn)).encode()).hexdigest()

"""The workflow definition as users write it (SPEC section 1): domain types and conversions.

The JSON form is the proto3 JSON form of ``weft.workflow.v1.WorkflowDefinition``. Domain code works
on the frozen dataclasses here; protobuf stays at the service boundary (``definition_to_proto`` /
``definition_from_proto``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format

from weft.workflow.v1 import workflow_pb2

from .errors import InvalidArgument

__all__ = [
    "CONTAINER_TYPES",
    "NODE_TYPES",
    "RESERVED_IDS",
    "Edge",
    "Node",
    "RetryPolicy",
    "WorkflowDefinition",
    "definition_from_json",
    "definition_from_proto",
    "definition_to_json",
    "definition_to_proto",
]

NODE_TYPES = frozenset(
    {
        "start", "transform", "condition", "router", "http", "llm", "wait", "approval",
        "setVariable", "subworkflow", "output", "fail", "loop", "parallel",
    }
)
CONTAINER_TYPES = frozenset({"loop", "parallel"})
RESERVED_IDS = frozenset({"input", "var", "env", "loop", "parallel", "execution"})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 1
    initial_interval_ms: int = 1000
    backoff_coefficient: float = 2.0
    max_interval_ms: int = 0  # 0 = no cap

    def delay_ms(self, attempt: int) -> float:
        """Backoff before attempt ``attempt + 1`` (attempt counts from 1)."""
        delay = self.initial_interval_ms * (self.backoff_coefficient ** (attempt - 1))
        return min(delay, self.max_interval_ms) if self.max_interval_ms else delay


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    type: str
    name: str = ""
    parent: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    retry: RetryPolicy = RetryPolicy()
    timeout_ms: int = 0


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    source_handle: str = "out"
    id: str = ""


@dataclass(frozen=True, slots=True)
class WorkflowDefinition:
    id: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    name: str = ""
    description: str = ""
    input_schema: Mapping[str, Any] | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)


def definition_from_json(data: Any) -> WorkflowDefinition:
    """Load the JSON form (a parsed dict). Malformed shapes raise InvalidArgument naming the field."""
    return definition_from_proto(definition_to_proto_from_json(data))


def definition_to_proto_from_json(data: Any) -> workflow_pb2.WorkflowDefinition:
    if not isinstance(data, dict):
        raise InvalidArgument("workflow must be a JSON object")
    msg = workflow_pb2.WorkflowDefinition()
    try:
        json_format.ParseDict(data, msg)
    except json_format.ParseError as exc:
        raise InvalidArgument(f"workflow: {exc}") from exc
    return msg


def definition_to_json(defn: WorkflowDefinition) -> dict[str, Any]:
    """The JSON form (camelCase, defaults omitted)."""
    return _plain(json_format.MessageToDict(definition_to_proto(defn)))  # type: ignore[no-any-return]


def _plain(value: Any) -> Any:
    """Struct/ListValue numbers are doubles: give integral ones back as ints (JSON has one number)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _struct_to_dict(struct: Any) -> dict[str, Any]:
    return _plain(json_format.MessageToDict(struct)) if struct.fields else {}


def definition_from_proto(msg: workflow_pb2.WorkflowDefinition) -> WorkflowDefinition:
    nodes = []
    for n in msg.nodes:
        retry = RetryPolicy()
        if n.HasField("retry"):
            retry = RetryPolicy(
                max_attempts=n.retry.max_attempts or 1,
                initial_interval_ms=n.retry.initial_interval_ms or 1000,
                backoff_coefficient=n.retry.backoff_coefficient or 2.0,
                max_interval_ms=n.retry.max_interval_ms,
            )
        nodes.append(
            Node(
                id=n.id,
                type=n.type,
                name=n.name,
                parent=n.parent,
                config=_struct_to_dict(n.config),
                retry=retry,
                timeout_ms=n.timeout_ms,
            )
        )
    edges = tuple(
        Edge(source=e.source, target=e.target, source_handle=e.source_handle or "out", id=e.id)
        for e in msg.edges
    )
    return WorkflowDefinition(
        id=msg.id,
        name=msg.name,
        description=msg.description,
        nodes=tuple(nodes),
        edges=edges,
        input_schema=_struct_to_dict(msg.input_schema) if msg.HasField("input_schema") else None,
        variables=_struct_to_dict(msg.variables),
    )


def definition_to_proto(defn: WorkflowDefinition) -> workflow_pb2.WorkflowDefinition:
    msg = workflow_pb2.WorkflowDefinition(id=defn.id, name=defn.name, description=defn.description)
    if defn.input_schema is not None:
        msg.input_schema.update(dict(defn.input_schema))
    if defn.variables:
        msg.variables.update(dict(defn.variables))
    for n in defn.nodes:
        pn = msg.nodes.add(id=n.id, type=n.type, name=n.name, parent=n.parent, timeout_ms=n.timeout_ms)
        if n.config:
            pn.config.update(dict(n.config))
        if n.retry != RetryPolicy():
            pn.retry.CopyFrom(
                workflow_pb2.RetryPolicy(
                    max_attempts=n.retry.max_attempts,
                    initial_interval_ms=n.retry.initial_interval_ms,
                    backoff_coefficient=n.retry.backoff_coefficient,
                    max_interval_ms=n.retry.max_interval_ms,
                )
            )
    for e in defn.edges:
        msg.edges.add(
            id=e.id, source=e.source, target=e.target,
            source_handle="" if e.source_handle == "out" else e.source_handle,
        )
    return msg

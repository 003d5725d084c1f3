"""The compiled DAG: what the dag-builder produces and the executor runs (domain form).

Everything the run loop needs is precomputed here so that the executor never scans the graph:
per node its incoming/outgoing edges, container membership, entries/exits, topological position,
and which later nodes read its output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from weft.workflow.v1 import workflow_pb2

from . import jsonutil
from .workflow import RetryPolicy

__all__ = [
    "CompiledDag",
    "CompiledEdge",
    "CompiledNode",
    "HandleKind",
    "dag_from_proto",
    "dag_to_proto",
    "parse_handle",
]


class HandleKind(IntEnum):
    OUT = workflow_pb2.HANDLE_KIND_OUT
    ERROR = workflow_pb2.HANDLE_KIND_ERROR
    CONDITION = workflow_pb2.HANDLE_KIND_CONDITION
    ROUTE = workflow_pb2.HANDLE_KIND_ROUTE


def parse_handle(handle: str) -> tuple[HandleKind, str] | None:
    """``"out"`` → (OUT, ""), ``"condition:big"`` → (CONDITION, "big"); None when malformed."""
    if handle in ("", "out"):
        return HandleKind.OUT, ""
    if handle == "error":
        return HandleKind.ERROR, ""
    kind, sep, value = handle.partition(":")
    if sep and value:
        if kind == "condition":
            return HandleKind.CONDITION, value
        if kind == "route":
            return HandleKind.ROUTE, value
    return None


@dataclass(frozen=True, slots=True)
class CompiledEdge:
    index: int
    source: str
    target: str
    handle_kind: HandleKind
    handle_value: str = ""
    id: str = ""

    @property
    def handle(self) -> str:
        if self.handle_kind is HandleKind.OUT:
            return "out"
        if self.handle_kind is HandleKind.ERROR:
            return "error"
        prefix = "condition" if self.handle_kind is HandleKind.CONDITION else "route"
        return f"{prefix}:{self.handle_value}"


@dataclass(frozen=True, slots=True)
class CompiledNode:
    id: str
    type: str
    config: Mapping[str, Any]
    name: str = ""
    parent: str = ""
    retry: RetryPolicy = RetryPolicy()
    timeout_ms: int = 0
    incoming: tuple[int, ...] = ()
    outgoing: tuple[int, ...] = ()
    depth: int = 0
    topo_index: int = 0
    readers: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    entries: tuple[str, ...] = ()
    exits: tuple[str, ...] = ()

    @property
    def is_container(self) -> bool:
        return self.type in ("loop", "parallel")


@dataclass(frozen=True, slots=True)
class CompiledDag:
    workflow_id: str
    start_node: str
    nodes: Mapping[str, CompiledNode]  # insertion order = topological order
    edges: tuple[CompiledEdge, ...]
    top_level: tuple[str, ...]
    input_schema: Mapping[str, Any] | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)
    output_nodes: tuple[str, ...] = ()
    definition_hash: str = ""


def _retry_from_proto(msg: workflow_pb2.RetryPolicy) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=msg.max_attempts or 1,
        initial_interval_ms=msg.initial_interval_ms or 1000,
        backoff_coefficient=msg.backoff_coefficient or 2.0,
        max_interval_ms=msg.max_interval_ms,
    )


def dag_from_proto(msg: workflow_pb2.CompiledDag) -> CompiledDag:
    nodes = {
        n.id: CompiledNode(
            id=n.id,
            type=n.type,
            name=n.name,
            parent=n.parent,
            config=jsonutil.loads(n.config_json) or {},
            retry=_retry_from_proto(n.retry),
            timeout_ms=n.timeout_ms,
            incoming=tuple(n.incoming),
            outgoing=tuple(n.outgoing),
            depth=n.depth,
            topo_index=n.topo_index,
            readers=tuple(n.readers),
            references=tuple(n.references),
            children=tuple(n.children),
            entries=tuple(n.entries),
            exits=tuple(n.exits),
        )
        for n in msg.nodes
    }
    edges = tuple(
        CompiledEdge(
            index=e.index, id=e.id, source=e.source, target=e.target,
            handle_kind=HandleKind(e.handle_kind), handle_value=e.handle_value,
        )
        for e in msg.edges
    )
    return CompiledDag(
        workflow_id=msg.workflow_id,
        start_node=msg.start_node,
        nodes=nodes,
        edges=edges,
        top_level=tuple(msg.top_level),
        input_schema=jsonutil.loads(msg.input_schema_json),
        variables=jsonutil.loads(msg.variables_json) or {},
        output_nodes=tuple(msg.output_nodes),
        definition_hash=msg.definition_hash,
    )


def dag_to_proto(dag: CompiledDag) -> workflow_pb2.CompiledDag:
    msg = workflow_pb2.CompiledDag(
        workflow_id=dag.workflow_id,
        start_node=dag.start_node,
        top_level=list(dag.top_level),
        input_schema_json="" if dag.input_schema is None else jsonutil.dumps_canonical(dag.input_schema),
        variables_json=jsonutil.dumps_canonical(dict(dag.variables)) if dag.variables else "",
        output_nodes=list(dag.output_nodes),
        definition_hash=dag.definition_hash,
    )
    for n in dag.nodes.values():
        pn = msg.nodes.add(
            id=n.id, type=n.type, name=n.name, parent=n.parent,
            config_json=jsonutil.dumps_canonical(dict(n.config)) if n.config else "",
            timeout_ms=n.timeout_ms, incoming=n.incoming, outgoing=n.outgoing, depth=n.depth,
            topo_index=n.topo_index, readers=n.readers, references=n.references,
            children=n.children, entries=n.entries, exits=n.exits,
        )
        pn.retry.CopyFrom(
            workflow_pb2.RetryPolicy(
                max_attempts=n.retry.max_attempts,
                initial_interval_ms=n.retry.initial_interval_ms,
                backoff_coefficient=n.retry.backoff_coefficient,
                max_interval_ms=n.retry.max_interval_ms,
            )
        )
    for e in dag.edges:
        msg.edges.add(
            index=e.index, id=e.id, source=e.source, target=e.target,
            handle_kind=int(e.handle_kind), handle_value=e.handle_value,
        )
    return msg

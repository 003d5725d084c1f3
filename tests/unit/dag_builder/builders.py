"""Small builders for workflow definitions in dag-builder tests."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from weft_common.workflow import Edge, Node, RetryPolicy, WorkflowDefinition
from weft_dag_builder import Diagnostic, Limits, validate_workflow


def node(node_id: str, node_type: str, *, parent: str = "", retry: RetryPolicy | None = None,
         timeout_ms: int = 0, **config: Any) -> Node:
    return Node(id=node_id, type=node_type, parent=parent, config=config,
                retry=retry or RetryPolicy(), timeout_ms=timeout_ms)


def start() -> Node:
    return Node(id="start", type="start")


def out(node_id: str, value: Any = "x", *, parent: str = "") -> Node:
    return node(node_id, "output", parent=parent, value=value)


def tr(node_id: str, expression: str = "1", *, parent: str = "") -> Node:
    return node(node_id, "transform", parent=parent, expression=expression)


def edge(source: str, target: str, handle: str = "out", edge_id: str = "") -> Edge:
    return Edge(source=source, target=target, source_handle=handle, id=edge_id)


def chain(*ids: str) -> list[Edge]:
    return [edge(a, b) for a, b in pairwise(ids)]


def workflow(nodes: list[Node], edges: list[Edge], **kw: Any) -> WorkflowDefinition:
    return WorkflowDefinition(id=kw.pop("id", "wf"), nodes=tuple(nodes), edges=tuple(edges), **kw)


def diagnose(defn: WorkflowDefinition, limits: Limits | None = None) -> list[Diagnostic]:
    return validate_workflow(defn, limits=limits) if limits else validate_workflow(defn)


def found(defn: WorkflowDefinition, limits: Limits | None = None) -> set[tuple[str, str]]:
    """(code, node id) of every diagnostic."""
    return {(d.code, d.node_id) for d in diagnose(defn, limits)}


def only(defn: WorkflowDefinition, code: str, limits: Limits | None = None) -> list[Diagnostic]:
    """The diagnostics with ``code``; fails when any other code shows up."""
    diags = diagnose(defn, limits)
    others = [d for d in diags if d.code != code]
    assert not others, f"unexpected diagnostics besides {code}: {others}"
    matching = [d for d in diags if d.code == code]
    assert matching, f"expected a {code} diagnostic, got none"
    return matching

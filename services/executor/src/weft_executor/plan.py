"""What the run loop precomputes once per compiled DAG (cached): membership, routing facts and
the output-retention plan, so that scheduling a node never scans the graph."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from weft_common.compiled import CompiledDag, CompiledEdge, CompiledNode, HandleKind

__all__ = ["MAX_NESTING_DEPTH", "ExecutionPlan", "plan_for"]

# Containers nest at most this deep (SPEC section 3 says "any depth"; the dag-builder enforces the
# same bound, ``Limits.max_nesting_depth``, documented in docs/engine.md).
MAX_NESTING_DEPTH = 64


@dataclass(frozen=True, slots=True)
class ExecutionPlan:
    dag: CompiledDag
    nodes: Mapping[str, CompiledNode]
    edges: tuple[CompiledEdge, ...]
    edge_handles: tuple[str, ...]  # edges[i].handle, precomputed
    # Body members and entries by container id ("" = top level).
    members: Mapping[str, tuple[str, ...]]
    entries: Mapping[str, tuple[str, ...]]
    exits: Mapping[str, tuple[str, ...]]
    has_error_edge: frozenset[str]
    # Retention: a node's output in a frame is dropped once `reader_count[x]` sibling "anchors"
    # (the readers themselves, or the sibling containers holding them) have settled there.
    reader_count: Mapping[str, int]
    releases: Mapping[str, tuple[str, ...]]  # anchor -> outputs it stops needing when it settles
    keep: frozenset[str]  # never dropped within their frame (exits, outputs, leaves, ...)
    output_nodes: tuple[str, ...]
    # The DAG carries no reader lists (an older compile): keep every output in its frame.
    retain_all: bool
    leaf_outputs: frozenset[str]  # top-level leaves whose outputs are the execution's outputs
    # Derived once, for the hot path: the nodes whose output is stored when they complete
    # (everything when ``retain_all``; else ``keep`` and those with readers), the execution-output
    # name of each ``output`` node, and each body's entry nodes and member count.
    retained: frozenset[str]
    output_names: Mapping[str, str]
    entry_nodes: Mapping[str, tuple[CompiledNode, ...]]
    member_count: Mapping[str, int]


_CACHE: dict[int, ExecutionPlan] = {}
_CACHE_MAX = 256


def plan_for(dag: CompiledDag) -> ExecutionPlan:
    """The plan of ``dag`` (cached by identity; a DAG is immutable)."""
    plan = _CACHE.get(id(dag))
    if plan is not None and plan.dag is dag:
        return plan
    plan = _build(dag)
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[id(dag)] = plan
    return plan


def _build(dag: CompiledDag) -> ExecutionPlan:
    nodes = dag.nodes
    members: dict[str, tuple[str, ...]] = {"": tuple(dag.top_level)}
    entries: dict[str, tuple[str, ...]] = {}
    exits: dict[str, tuple[str, ...]] = {}
    for n in nodes.values():
        if n.is_container:
            children = n.children or tuple(c.id for c in nodes.values() if c.parent == n.id)
            members[n.id] = children
            entries[n.id] = n.entries or tuple(c for c in children if not nodes[c].incoming)
            exits[n.id] = n.exits or tuple(c for c in children if not nodes[c].outgoing)
        if n.depth > MAX_NESTING_DEPTH:
            raise ValueError(
                f"node {n.id}: containers nest {n.depth} deep, the limit is {MAX_NESTING_DEPTH}"
            )
    for i, e in enumerate(sorted(dag.edges, key=lambda e: e.index)):
        if e.index != i:
            raise ValueError(f"edge {e.source}->{e.target}: index {e.index}, expected {i}")
    top_entries = tuple(t for t in dag.top_level if not nodes[t].incoming)
    entries[""] = top_entries or (dag.start_node,)

    has_error = frozenset(e.source for e in dag.edges if e.handle_kind is HandleKind.ERROR)
    output_nodes = tuple(dag.output_nodes) or tuple(
        n.id for n in nodes.values() if n.type == "output"
    )
    leaves = (
        frozenset()
        if output_nodes
        else frozenset(t for t in dag.top_level if not nodes[t].outgoing)
    )

    reader_count: dict[str, int] = {}
    releases: dict[str, list[str]] = {}
    keep: set[str] = set(output_nodes) | set(leaves)
    for ex in exits.values():
        keep.update(ex)
    for n in nodes.values():
        anchors: set[str] = set()
        for r in n.readers:
            anchor = _anchor(nodes, r, n.parent)
            if anchor is None:
                keep.add(n.id)  # read from outside its frame (e.g. its own container): keep
                break
            if anchor != n.id:
                anchors.add(anchor)
        else:
            reader_count[n.id] = len(anchors)
            for a in anchors:
                releases.setdefault(a, []).append(n.id)
    retain_all = not any(n.readers for n in nodes.values()) and any(
        n.references for n in nodes.values()
    )
    retained = (
        frozenset(nodes)
        if retain_all
        else frozenset(n for n in nodes if n in keep or reader_count.get(n, 0))
    )
    return ExecutionPlan(
        dag=dag,
        nodes=nodes,
        edges=tuple(sorted(dag.edges, key=lambda e: e.index)),
        edge_handles=tuple(e.handle for e in sorted(dag.edges, key=lambda e: e.index)),
        members=members,
        entries=entries,
        exits=exits,
        has_error_edge=has_error,
        reader_count=reader_count,
        releases={k: tuple(v) for k, v in releases.items()},
        keep=frozenset(keep),
        output_nodes=output_nodes,
        leaf_outputs=leaves,
        retain_all=retain_all,
        retained=retained,
        output_names={o: str(nodes[o].config.get("name") or o) for o in output_nodes if o in nodes},
        entry_nodes={c: tuple(nodes[n] for n in ids) for c, ids in entries.items()},
        member_count={c: len(ids) for c, ids in members.items()},
    )


def _anchor(nodes: Mapping[str, CompiledNode], reader: str, parent: str) -> str | None:
    """The sibling (child of ``parent``) that is ``reader`` or contains it; None when outside."""
    cur: Any = nodes.get(reader)
    while cur is not None:
        if cur.parent == parent:
            return str(cur.id)
        cur = nodes.get(cur.parent) if cur.parent else None
    return None

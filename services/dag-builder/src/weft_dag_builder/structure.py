"""Structure pass: node ids, the start node, container nesting, edges and their handles.

Nodes are numbered by definition order. A node is *placed* when its id is its own (not a
duplicate) and its container chain is sound; only placed nodes and the edges between placed
siblings take part in ordering, reachability and reference checks, so one mistake does not
cascade into dozens of diagnostics.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from weft_common.compiled import HandleKind, parse_handle
from weft_common.workflow import CONTAINER_TYPES, NODE_TYPES, RESERVED_IDS, Edge, WorkflowDefinition

from .diagnostics import Code, DiagnosticSink
from .limits import Limits

__all__ = ["TOP", "Structure", "check_structure"]

TOP = -1  # the parent index of top-level nodes
_NODE_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")


@dataclass(slots=True)
class Structure:
    index: dict[str, int]  # node id -> its (first) node
    placed: list[bool]
    parent: list[int]  # TOP for top-level nodes
    depth: list[int]
    start: int  # -1 when there is no start node
    edge_ids: list[str]
    edge_handles: list[tuple[HandleKind, str] | None]
    # Edges between placed siblings: (edge index, source, target); they drive the ordering.
    graph_edges: list[tuple[int, int, int]] = field(default_factory=list)
    members: dict[int, list[int]] = field(default_factory=dict)  # parent -> placed children


def _node_label(node_id: str, node_type: str) -> str:
    return f"node {node_id!r} ({node_type})"


def check_structure(defn: WorkflowDefinition, sink: DiagnosticSink, limits: Limits) -> Structure:
    nodes = defn.nodes
    n = len(nodes)
    index: dict[str, int] = {}
    placed = [True] * n

    # -- ids and types --------------------------------------------------------------------------
    for i, node in enumerate(nodes):
        nid = node.id
        if not isinstance(nid, str) or not _NODE_ID.match(nid):
            shown = nid[:80] if isinstance(nid, str) else repr(nid)
            sink.add(
                Code.INVALID_NODE_ID,
                f"node #{i} id {shown!r} must match ^[A-Za-z_][A-Za-z0-9_]{{0,63}}$",
                node_id=shown if isinstance(nid, str) else "",
                field="id",
            )
        elif nid in RESERVED_IDS:
            sink.add(
                Code.RESERVED_NODE_ID,
                f"node id {nid!r} is reserved ({', '.join(sorted(RESERVED_IDS))} name built-in values)",
                node_id=nid,
                field="id",
            )
        if nid in index:
            placed[i] = False
            sink.add(
                Code.DUPLICATE_NODE_ID,
                f"node id {nid!r} is used by node #{index[nid]} and node #{i}; ids must be unique",
                node_id=nid,
                field="id",
            )
        else:
            index[nid] = i
        if node.type not in NODE_TYPES:
            sink.add(
                Code.UNKNOWN_NODE_TYPE,
                f"node {nid!r}: unknown type {str(node.type)[:80]!r} (known: {', '.join(sorted(NODE_TYPES))})",
                node_id=nid,
                field="type",
            )

    # -- start ------------------------------------------------------------------------------------
    start = -1
    for i, node in enumerate(nodes):
        if node.type != "start":
            continue
        if start == -1:
            start = i
        else:
            sink.add(
                Code.MULTIPLE_START,
                f"node {node.id!r}: a workflow has exactly one start node (already {nodes[start].id!r})",
                node_id=node.id,
                field="type",
            )
        if node.parent:
            sink.add(
                Code.START_NOT_TOP_LEVEL,
                f"node {node.id!r}: the start node must be at top level, not inside {node.parent!r}",
                node_id=node.id,
                field="parent",
            )
    if start == -1:
        sink.add(Code.MISSING_START, "the workflow has no start node (a node with type 'start')")

    parent, depth = _check_nesting(defn, index, placed, sink, limits)

    structure = Structure(
        index=index,
        placed=placed,
        parent=parent,
        depth=depth,
        start=start,
        edge_ids=[],
        edge_handles=[],
    )
    _check_edges(defn, structure, sink, limits)

    members: dict[int, list[int]] = {TOP: []}
    for i, node in enumerate(nodes):
        if node.type in CONTAINER_TYPES and placed[i]:
            members[i] = []
    for i in range(n):
        if placed[i]:
            members[parent[i]].append(i)
    named_as_parent = {parent[i] for i in range(n) if nodes[i].parent}
    for c in members:
        if c != TOP and c not in named_as_parent:
            node = nodes[c]
            sink.add(
                Code.EMPTY_CONTAINER,
                f'{_node_label(node.id, node.type)} holds no nodes (give nodes "parent": {node.id!r})',
                node_id=node.id,
            )
    structure.members = members
    return structure


def _check_nesting(
    defn: WorkflowDefinition,
    index: dict[str, int],
    placed: list[bool],
    sink: DiagnosticSink,
    limits: Limits,
) -> tuple[list[int], list[int]]:
    """Resolve each node's container; unsound chains unplace the node (and what is inside it)."""
    nodes = defn.nodes
    n = len(nodes)
    parent = [TOP] * n
    for i, node in enumerate(nodes):
        if not node.parent:
            continue
        p = index.get(node.parent, -1)
        if p == -1:
            placed[i] = False
            sink.add(
                Code.UNKNOWN_PARENT,
                f"node {node.id!r}: parent {str(node.parent)[:80]!r} is not a node of this workflow",
                node_id=node.id,
                field="parent",
            )
        elif nodes[p].type not in CONTAINER_TYPES:
            placed[i] = False
            sink.add(
                Code.PARENT_NOT_CONTAINER,
                f"node {node.id!r}: parent {node.parent!r} is a {nodes[p].type} node; only loop "
                "and parallel nodes hold other nodes",
                node_id=node.id,
                field="parent",
            )
        else:
            parent[i] = p

    UNSEEN, ACTIVE, DONE = 0, 1, 2
    state = [UNSEEN] * n
    depth = [0] * n
    for i in range(n):
        if state[i] != UNSEEN:
            continue
        path: list[int] = []
        c = i
        # Walk up until a resolved node, the top, or a node already on this path (a cycle).
        while c != TOP and state[c] == UNSEEN:
            state[c] = ACTIVE
            path.append(c)
            c = parent[c]
        if c != TOP and state[c] == ACTIVE:
            cycle = path[path.index(c) :]
            names = " -> ".join(nodes[k].id for k in [*cycle, c][:20])
            for k in sorted(cycle):
                sink.add(
                    Code.NESTING_CYCLE,
                    f"node {nodes[k].id!r}: containers nest inside each other in a circle ({names})",
                    node_id=nodes[k].id,
                    field="parent",
                )
            for k in cycle:
                placed[k] = False
                state[k] = DONE
        # Resolve the rest of the path from the top down.
        for k in reversed(path):
            if state[k] == DONE:
                continue
            state[k] = DONE
            p = parent[k]
            if p == TOP:
                depth[k] = 0
                continue
            depth[k] = depth[p] + 1
            if not placed[p]:
                placed[k] = False
            elif depth[k] > limits.max_nesting_depth:
                placed[k] = False
                sink.add(
                    Code.NESTING_TOO_DEEP,
                    f"node {nodes[k].id!r}: containers nest deeper than {limits.max_nesting_depth} levels",
                    node_id=nodes[k].id,
                    field="parent",
                )
    return parent, depth


def _declared_ids(config: Mapping[str, object], key: str) -> set[str]:
    items = config.get(key) if isinstance(config, Mapping) else None
    if not isinstance(items, list):
        return set()
    return {str(x["id"]) for x in items if isinstance(x, dict) and isinstance(x.get("id"), str)}


def _where(defn: WorkflowDefinition, parent: int) -> str:
    return "top level" if parent == TOP else f"container {defn.nodes[parent].id!r}"


def _edge_label(eid: str, edge: Edge) -> str:
    """``edge 'e3' (a -> b)``: formatted only when a diagnostic needs it."""
    return f"edge {eid[:80]!r} ({str(edge.source)[:80]} -> {str(edge.target)[:80]})"


def _check_edges(
    defn: WorkflowDefinition, s: Structure, sink: DiagnosticSink, limits: Limits
) -> None:
    nodes = defn.nodes
    given = [e.id for e in defn.edges if e.id]
    taken = set(given)
    seen: set[str] = set()
    branch_cache: dict[int, set[str]] = {}
    handle_cache: dict[str, tuple[HandleKind, str] | None] = {}
    for j, edge in enumerate(defn.edges):
        eid = edge.id
        if eid:
            if len(eid) > limits.max_name_chars:
                sink.add(
                    Code.INVALID_EDGE_ID,
                    f"edge #{j}: id is {len(eid)} characters (limit {limits.max_name_chars})",
                    edge_id=eid[:80],
                    field="id",
                )
            if eid in seen:
                sink.add(
                    Code.DUPLICATE_EDGE_ID,
                    f"edge id {eid[:80]!r} is used by more than one edge",
                    edge_id=eid[:80],
                    field="id",
                )
            seen.add(eid)
        else:
            eid = f"e{j}"
            k = 1
            while eid in taken:  # a generated id never collides with a given one
                eid = f"e{j}_{k}"
                k += 1
            taken.add(eid)
        s.edge_ids.append(eid)

        src = s.index.get(edge.source, -1)
        tgt = s.index.get(edge.target, -1)
        if src == -1:
            sink.add(
                Code.EDGE_UNKNOWN_SOURCE,
                f"{_edge_label(eid, edge)}: source {str(edge.source)[:80]!r} is not a node",
                edge_id=eid,
                field="source",
            )
        if tgt == -1:
            sink.add(
                Code.EDGE_UNKNOWN_TARGET,
                f"{_edge_label(eid, edge)}: target {str(edge.target)[:80]!r} is not a node",
                edge_id=eid,
                field="target",
            )

        raw_handle = edge.source_handle or "out"
        if raw_handle in handle_cache:
            handle = handle_cache[raw_handle]
        else:
            handle = handle_cache[raw_handle] = parse_handle(raw_handle)
        s.edge_handles.append(handle)
        if handle is None:
            sink.add(
                Code.INVALID_HANDLE,
                f"{_edge_label(eid, edge)}: sourceHandle {str(edge.source_handle)[:80]!r} must be 'out', 'error', "
                "'condition:<branchId>' or 'route:<routeId>'",
                edge_id=eid,
                node_id=edge.source if src != -1 else "",
                field="sourceHandle",
            )
        elif src != -1 and handle[0] in (HandleKind.CONDITION, HandleKind.ROUTE):
            want, key, noun = (
                ("condition", "branches", "branch")
                if handle[0] is HandleKind.CONDITION
                else ("router", "routes", "route")
            )
            source = nodes[src]
            if source.type != want:
                sink.add(
                    Code.HANDLE_WRONG_NODE_TYPE,
                    f"{_edge_label(eid, edge)}: sourceHandle {edge.source_handle!r} needs a {want} node, but "
                    f"{source.id!r} is a {source.type} node",
                    edge_id=eid,
                    node_id=source.id,
                    field="sourceHandle",
                )
            else:
                if src not in branch_cache:
                    branch_cache[src] = _declared_ids(source.config, key)
                declared = branch_cache[src]
                if handle[1] not in declared:
                    sink.add(
                        Code.UNKNOWN_BRANCH if noun == "branch" else Code.UNKNOWN_ROUTE,
                        f"{_edge_label(eid, edge)}: {source.id!r} has no {noun} {handle[1][:80]!r} "
                        f"(its {key}: {', '.join(sorted(declared)) or 'none'})",
                        edge_id=eid,
                        node_id=source.id,
                        field="sourceHandle",
                    )

        if src == -1 or tgt == -1 or not s.placed[src] or not s.placed[tgt]:
            continue
        if tgt == s.start:
            sink.add(
                Code.START_HAS_INCOMING,
                f"{_edge_label(eid, edge)}: nothing may lead into the start node",
                edge_id=eid,
                node_id=nodes[tgt].id,
                field="target",
            )
        if s.parent[src] != s.parent[tgt]:
            sink.add(
                Code.EDGE_CROSSES_CONTAINER,
                f"{_edge_label(eid, edge)}: edges join nodes in the same container; {nodes[src].id!r} is in "
                f"{_where(defn, s.parent[src])}, {nodes[tgt].id!r} in {_where(defn, s.parent[tgt])}",
                edge_id=eid,
                node_id=nodes[tgt].id,
            )
            continue
        s.graph_edges.append((j, src, tgt))

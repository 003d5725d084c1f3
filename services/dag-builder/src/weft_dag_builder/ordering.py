"""Ordering pass: per sibling graph a topological order, the cycles, and reachability.

Each container's children form their own graph (edges only join siblings), so every graph is
ordered on its own: Kahn's algorithm with ties broken by definition order. Nodes Kahn cannot
order sit on or behind a cycle; Tarjan's algorithm (iterative) names the nodes on cycles.
Reachability: from the start node at top level, from the entries inside a container; a
container's children count only when the container itself is reachable.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from weft_common.workflow import WorkflowDefinition

from .diagnostics import Code, DiagnosticSink
from .structure import TOP, Structure

__all__ = ["Ordering", "order_graphs"]


@dataclass(slots=True)
class Ordering:
    preds: list[list[int]]  # sibling predecessors (one entry per graph edge)
    succs: list[list[int]]
    # Per graph (TOP or a container): members in topological order, then any cyclic leftovers.
    group_order: dict[int, list[int]]
    position: list[int]  # index in its graph's topological order; -1 for cyclic leftovers
    reachable: list[bool]  # reachable within its own graph
    acyclic: bool
    global_order: list[int]  # top level in order, each container followed by its children


def order_graphs(defn: WorkflowDefinition, s: Structure, sink: DiagnosticSink) -> Ordering:
    nodes = defn.nodes
    n = len(nodes)
    preds: list[list[int]] = [[] for _ in range(n)]
    succs: list[list[int]] = [[] for _ in range(n)]
    for _, src, tgt in s.graph_edges:
        succs[src].append(tgt)
        preds[tgt].append(src)

    position = [-1] * n
    reachable = [False] * n
    group_order: dict[int, list[int]] = {}
    acyclic = True
    for group, members in s.members.items():
        order = _kahn(members, preds, succs)
        for pos, node in enumerate(order):
            position[node] = pos
        if len(order) < len(members):
            acyclic = False
            leftovers = [m for m in members if position[m] == -1]
            _report_cycles(defn, leftovers, succs, position, sink)
            order = order + leftovers
        group_order[group] = order
        if group == TOP:
            roots = [s.start] if s.start != -1 and s.placed[s.start] and s.parent[s.start] == TOP else []
        else:
            roots = [m for m in members if not preds[m]]
        _mark_reachable(roots, succs, reachable)

    # Report unreachable nodes whose container (if any) is reachable, walking top-down.
    effective = [False] * n
    global_order: list[int] = []
    has_start = s.start != -1
    stack = [iter(group_order.get(TOP, []))]
    while stack:
        following = next(stack[-1], None)
        if following is None:
            stack.pop()
            continue
        node = following
        global_order.append(node)
        p = s.parent[node]
        container_ok = p == TOP or effective[p]
        effective[node] = container_ok and reachable[node]
        # Extra start nodes are already reported as such.
        if container_ok and not reachable[node] and (p != TOP or has_start) \
                and nodes[node].type != "start":
            where = "from the start node" if p == TOP else f"inside container {nodes[p].id!r} (from its entries)"
            sink.add(Code.UNREACHABLE_NODE,
                     f"node {nodes[node].id!r} cannot be reached {where}: add an edge leading to it",
                     node_id=nodes[node].id)
        if node in group_order:
            stack.append(iter(group_order[node]))
    return Ordering(preds, succs, group_order, position, reachable, acyclic, global_order)


def _kahn(members: list[int], preds: list[list[int]], succs: list[list[int]]) -> list[int]:
    """Topological order; among ready nodes the one defined first goes first."""
    indegree = {m: len(preds[m]) for m in members}
    ready = [m for m in members if indegree[m] == 0]  # members are in definition order: a heap
    order: list[int] = []
    while ready:
        node = heapq.heappop(ready)
        order.append(node)
        for nxt in succs[node]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                heapq.heappush(ready, nxt)
    return order


def _mark_reachable(roots: list[int], succs: list[list[int]], reachable: list[bool]) -> None:
    stack = [r for r in roots if not reachable[r]]
    for r in stack:
        reachable[r] = True
    while stack:
        node = stack.pop()
        for nxt in succs[node]:
            if not reachable[nxt]:
                reachable[nxt] = True
                stack.append(nxt)


def _report_cycles(
    defn: WorkflowDefinition, leftovers: list[int], succs: list[list[int]], position: list[int],
    sink: DiagnosticSink,
) -> None:
    """Name every node that sits on a cycle (leftovers behind a cycle are not on one)."""
    nodes = defn.nodes
    for component in _strongly_connected(leftovers, succs, position):
        if len(component) == 1:
            only = component[0]
            if only not in succs[only]:
                continue  # behind a cycle, not on one
        members = set(component)
        path = _one_cycle(min(component), succs, members)
        shown = [nodes[k].id for k in path[:20]]
        text = " -> ".join([*shown, nodes[path[0]].id] if len(path) <= 20 else [*shown, "…"])
        extra = f"; {len(component)} nodes are on cycles together here" if len(component) > len(path) else ""
        for k in sorted(component):
            sink.add(Code.CYCLE,
                     f"node {nodes[k].id!r} is on a cycle, and cycles are only allowed through loop "
                     f"containers: {text}{extra}",
                     node_id=nodes[k].id)


def _strongly_connected(
    candidates: list[int], succs: list[list[int]], position: list[int]
) -> list[list[int]]:
    """Tarjan's algorithm without recursion, restricted to the unordered nodes."""
    inside = {c: True for c in candidates}
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    components: list[list[int]] = []
    counter = 0
    for root in candidates:
        if root in index:
            continue
        work: list[tuple[int, int]] = [(root, 0)]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, i = work[-1]
            nexts = succs[node]
            if i < len(nexts):
                work[-1] = (node, i + 1)
                nxt = nexts[i]
                if nxt not in inside or position[nxt] != -1:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[int] = []
                while True:
                    k = stack.pop()
                    on_stack.discard(k)
                    component.append(k)
                    if k == node:
                        break
                components.append(component)
    return components


def _one_cycle(start: int, succs: list[list[int]], members: set[int]) -> list[int]:
    """A concrete cycle inside a strongly connected component (every member has a successor in it)."""
    seen: dict[int, int] = {}
    path: list[int] = []
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(k for k in succs[node] if k in members)
    return path[seen[node]:]

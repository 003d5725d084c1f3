"""Reference pass: every name a node's config reads must be a node that has run before it.

A node may read (a) nodes upstream of it in its own sibling graph, (b) its enclosing containers
(``{{p.index}}``), and (c) whatever an enclosing container may read. Downstream of a container
the container's output (``{{L.results}}``) is readable but its children are not. A loop's own
``condition`` may also read the loop's descendants (it runs between iterations).

"Upstream" questions are answered with ancestor bitsets propagated along each sibling graph's
topological order (in bounded-memory chunks), so checking R references costs O((V + E) * R / w)
word operations instead of a graph search per reference.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from weft_common.references import BUILTIN_ROOTS
from weft_common.workflow import WorkflowDefinition

from .configs import ConfigReference
from .diagnostics import Code, DiagnosticSink
from .ordering import Ordering
from .structure import TOP, Structure

__all__ = ["resolve_references"]

_BITSET_BUDGET = 1 << 29  # bits held at once across one graph's nodes (64 MiB)


@dataclass(slots=True)
class _Query:
    """Does ``target`` run before ``via``? Asked once per (reader, target) pair."""

    reader: int
    target: int
    via: int  # the reader itself or its enclosing container that is a sibling of target
    refs: list[ConfigReference]  # every place in the reader's config that reads target


def resolve_references(
    defn: WorkflowDefinition,
    s: Structure,
    o: Ordering,
    refs: dict[int, list[ConfigReference]],
    sink: DiagnosticSink,
) -> dict[int, tuple[int, ...]]:
    """Check every reference; return, per reading node, the nodes it reads (sorted by id)."""
    nodes = defn.nodes
    reads: dict[int, set[int]] = {}
    pending: dict[int, list[_Query]] = defaultdict(list)
    reported: set[tuple[int, str, str]] = set()
    queries: dict[tuple[int, int], _Query] = {}

    def report(q_reader: int, ref: ConfigReference, code: str, why: str) -> None:
        key = (q_reader, ref.field, ref.root)
        if key in reported:
            return
        reported.add(key)
        node = nodes[q_reader]
        shown = ref.text if len(ref.text) <= 120 else ref.text[:120] + "…"
        sink.add(
            code,
            f"node {node.id!r}: {ref.field}: {shown!r} {why}",
            node_id=node.id,
            field=ref.field,
        )

    index, placed, parent = s.index, s.placed, s.parent
    for v, node_refs in refs.items():
        for ref in node_refs:
            root = ref.root
            if root in BUILTIN_ROOTS:
                if root in _SCOPED and s.placed[v] and not _in_scope(defn, s, v, root, ref):
                    report(
                        v,
                        ref,
                        Code.REFERENCE_OUT_OF_SCOPE,
                        f"reads {root!r}, but {nodes[v].id!r} is not inside a {root} container "
                        f"({root}.* names the innermost enclosing {root})",
                    )
                continue
            u = index.get(root, -1)
            if u == -1:
                report(
                    v,
                    ref,
                    Code.UNKNOWN_REFERENCE,
                    f"reads {root!r}, which is not a node of this workflow",
                )
                continue
            if u != v:  # a loop's condition reading its own index is no output dependency
                reads.setdefault(v, set()).add(u)
            if not placed[u] or not placed[v]:
                continue  # a misplaced node is already reported; its ancestry is unknown
            if (
                ref.expression
                and nodes[v].type == "loop"
                and ref.field == "config.condition"
                and _encloses(s, v, u, include_self=True)
            ):
                continue
            via = v
            verdict = ""
            while True:
                if via == u:
                    if via == v:
                        verdict = "reads the node's own output"
                    break  # an enclosing container: readable
                if parent[via] == parent[u]:
                    asked = queries.get((v, u))
                    if asked is None:
                        queries[(v, u)] = asked = _Query(v, u, via, [])
                        pending[parent[u]].append(asked)
                    asked.refs.append(ref)
                    break
                via = parent[via]
                if via == TOP:
                    verdict = (
                        f"reads {root!r}, which is inside container {nodes[s.parent[u]].id!r}; "
                        f"only nodes in that container can read it (downstream, read "
                        f"{{{{{nodes[s.parent[u]].id}.results}}}})"
                    )
                    break
            if verdict:
                report(v, ref, Code.REFERENCE_NOT_ANCESTOR, verdict)

    for group, group_queries in pending.items():
        for q, ok in _answer(group, group_queries, s, o):
            if ok:
                continue
            where = "" if q.via == q.reader else f" (nor before its container {nodes[q.via].id!r})"
            for ref in q.refs:
                report(
                    q.reader,
                    ref,
                    Code.REFERENCE_NOT_ANCESTOR,
                    f"reads {ref.root!r}, which does not run before {nodes[q.reader].id!r}{where}: "
                    f"a node can only read nodes upstream of it",
                )
    ids = [node.id for node in nodes]
    return {
        v: tuple(us) if len(us) == 1 else tuple(sorted(us, key=ids.__getitem__))
        for v, us in reads.items()
    }


_SCOPED = frozenset({"loop", "parallel"})


def _in_scope(
    defn: WorkflowDefinition, s: Structure, reader: int, kind: str, ref: ConfigReference
) -> bool:
    """``loop.*`` / ``parallel.*`` need an enclosing container of that type (a loop's own
    ``condition`` runs inside its iterations, so ``loop.*`` is fine there)."""
    nodes = defn.nodes
    if kind == "loop" and nodes[reader].type == "loop" and ref.field == "config.condition":
        return True
    c = s.parent[reader]
    while c != TOP:
        if nodes[c].type == kind:
            return True
        c = s.parent[c]
    return False


def _encloses(s: Structure, container: int, node: int, *, include_self: bool) -> bool:
    c = node if include_self else s.parent[node]
    while c != TOP:
        if c == container:
            return True
        c = s.parent[c]
    return False


def _answer(
    group: int, queries: list[_Query], s: Structure, o: Ordering
) -> list[tuple[_Query, bool]]:
    answers: list[tuple[_Query, bool]] = []
    slow: list[_Query] = []
    for q in queries:
        u, via = q.target, q.via
        if o.position[u] == -1 or o.position[via] == -1:
            continue  # on or behind a cycle: the cycle is the diagnostic
        if o.position[u] >= o.position[via]:
            answers.append((q, False))
        elif u in o.preds[via]:
            answers.append((q, True))
        elif group == TOP and u == s.start and o.reachable[via]:
            answers.append((q, True))  # everything reachable at top level is downstream of start
        else:
            slow.append(q)
    if slow:
        answers.extend(_answer_with_bitsets(o.group_order[group], slow, o))
    return answers


def _answer_with_bitsets(
    order: list[int], queries: list[_Query], o: Ordering
) -> list[tuple[_Query, bool]]:
    targets = sorted({q.target for q in queries})
    chunk = max(64, _BITSET_BUDGET // max(1, len(order)))
    answers: list[tuple[_Query, bool]] = []
    for start in range(0, len(targets), chunk):
        part = targets[start : start + chunk]
        bit = {t: 1 << k for k, t in enumerate(part)}
        masks: dict[int, int] = {}
        for node in order:
            if o.position[node] == -1:
                break  # cyclic leftovers come last and are never queried
            m = 0
            for p in o.preds[node]:
                m |= masks[p] | bit.get(p, 0)
            masks[node] = m
        for q in queries:
            b = bit.get(q.target)
            if b is not None:
                answers.append((q, bool(masks[q.via] & b)))
    return answers

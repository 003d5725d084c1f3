"""Property-based tests on random graphs: compile never crashes, every compiled DAG respects the
ordering contract, and validation finds every planted cycle."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weft_common.compiled import CompiledDag, dag_to_proto
from weft_common.errors import InvalidArgument
from weft_common.workflow import Edge, Node, WorkflowDefinition
from weft_dag_builder import Code, compile_workflow, validate_workflow

from .builders import node, start

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Plan:
    defn: WorkflowDefinition
    # Sibling groups (parent id, "" = top) -> member ids in creation order.
    groups: dict[str, list[str]]


@st.composite
def valid_plans(draw: st.DrawFn, max_nodes: int = 40) -> Plan:
    """A valid random workflow: nested containers, edges only forward between siblings, every
    top-level node fed by an earlier one, each node reading one of its ancestors."""
    count = draw(st.integers(min_value=1, max_value=max_nodes))
    nodes: list[Node] = [start()]
    edges: list[Edge] = []
    groups: dict[str, list[str]] = {"": ["start"]}
    depth = {"": -1}
    upstream: dict[str, list[str]] = {"start": []}  # readable nodes per node
    parent_of = {"start": ""}
    containers: list[str] = []
    for i in range(count):
        nid = f"n{i}"
        parent = draw(st.sampled_from(["", *containers])) if containers else ""
        siblings = groups[parent]
        sources: list[str] = []
        if siblings:
            sources = draw(st.lists(st.sampled_from(siblings), min_size=1 if parent == "" else 0, max_size=3,
                                    unique=True))
        readable = set(upstream[parent]) if parent else set()
        if parent:
            readable.add(parent)
        for s in sources:
            readable |= set(upstream[s]) | {s}
        is_container = depth[parent] < 3 and draw(st.booleans()) and draw(st.booleans())
        ref = draw(st.sampled_from(sorted(readable))) if readable else None
        if is_container:
            kind = draw(st.sampled_from(["loop", "parallel"]))
            items = "{{" + ref + "}}" if ref else "{{start.items}}"
            config = {"kind": "forEach", "items": items} if kind == "loop" else {"kind": "collection", "items": items}
            nodes.append(node(nid, kind, parent=parent, **config))
            containers.append(nid)
            groups[nid] = []
            depth[nid] = depth[parent] + 1
        else:
            expr = f"{ref}.value + {i}" if ref else str(i)
            nodes.append(node(nid, "transform", parent=parent, expression=expr))
        for s in sources:
            edges.append(Edge(source=s, target=nid))
        upstream[nid] = sorted(readable)
        parent_of[nid] = parent
        siblings.append(nid)
    # Containers left empty get one child so that the workflow stays valid.
    for c in containers:
        if not groups[c]:
            kid = f"{c}_kid"
            nodes.append(node(kid, "transform", parent=c, expression="1"))
            groups[c].append(kid)
    return Plan(WorkflowDefinition(id="random", nodes=tuple(nodes), edges=tuple(edges)), groups)


def _check_order(dag: CompiledDag) -> None:
    index = {nid: n.topo_index for nid, n in dag.nodes.items()}
    assert sorted(index.values()) == list(range(len(index)))
    assert [n.topo_index for n in dag.nodes.values()] == list(range(len(index)))
    for e in dag.edges:
        assert index[e.source] < index[e.target], e
        assert dag.nodes[e.source].parent == dag.nodes[e.target].parent
        assert e.index in dag.nodes[e.source].outgoing and e.index in dag.nodes[e.target].incoming
    order = list(dag.nodes)
    for nid, n in dag.nodes.items():
        if n.parent:
            assert index[n.parent] < index[nid]
            assert dag.nodes[n.parent].depth + 1 == n.depth
        if n.is_container:
            # The container's whole subtree comes right after it.
            subtree: list[str] = []
            stack = list(reversed(n.children))
            while stack:
                kid = stack.pop()
                subtree.append(kid)
                stack.extend(reversed(dag.nodes[kid].children))
            assert order[index[nid] + 1 : index[nid] + 1 + len(subtree)] == subtree
            assert set(n.entries) == {k for k in n.children if not dag.nodes[k].incoming}
            assert set(n.exits) == {k for k in n.children if not dag.nodes[k].outgoing}
        for r in n.references:
            assert nid in dag.nodes[r].readers


@SETTINGS
@given(valid_plans())
def test_random_valid_workflows_compile_in_order(plan: Plan) -> None:
    assert validate_workflow(plan.defn) == []
    dag = compile_workflow(plan.defn)
    assert set(dag.nodes) == {n.id for n in plan.defn.nodes}
    _check_order(dag)
    again = dag_to_proto(compile_workflow(plan.defn)).SerializeToString(deterministic=True)
    assert dag_to_proto(dag).SerializeToString(deterministic=True) == again


@SETTINGS
@given(valid_plans(), st.data())
def test_every_planted_cycle_is_found(plan: Plan, data: st.DataObject) -> None:
    """Add back edges (later sibling -> earlier sibling on a path): each closes a cycle."""
    successors: dict[str, list[str]] = {}
    for e in plan.defn.edges:
        successors.setdefault(e.source, []).append(e.target)

    def reaches(a: str, b: str) -> bool:
        stack, seen = [a], {a}
        while stack:
            x = stack.pop()
            if x == b:
                return True
            for y in successors.get(x, []):
                if y not in seen:
                    seen.add(y)
                    stack.append(y)
        return False

    candidates = [(b, a) for members in plan.groups.values() for a in members for b in members
                  if reaches(a, b) and a != "start"]
    planted = data.draw(st.lists(st.sampled_from(candidates), min_size=1, max_size=3, unique=True)) \
        if candidates else []
    if not planted:
        return
    defn = WorkflowDefinition(
        id=plan.defn.id, nodes=plan.defn.nodes,
        edges=(*plan.defn.edges, *[Edge(source=s, target=t) for s, t in planted]),
    )
    on_cycle = {d.node_id for d in validate_workflow(defn) if d.code == Code.CYCLE}
    for source, target in planted:
        assert {source, target} <= on_cycle, (source, target, on_cycle)
    try:
        compile_workflow(defn)
    except InvalidArgument as err:
        assert any(d["code"] == Code.CYCLE for d in err.details["diagnostics"])
    else:
        raise AssertionError("a cyclic workflow compiled")


ids = st.sampled_from(["start", "a", "b", "c", "L", "P", "ghost", "input", "1x", ""])
types = st.sampled_from(["start", "transform", "loop", "parallel", "output", "condition", "router", "bogus"])
handles = st.sampled_from(["out", "error", "condition:yes", "route:r", "weird", "condition:"])
configs = st.dictionaries(
    st.sampled_from(["expression", "kind", "count", "items", "value", "branches", "routes", "select", "condition"]),
    st.one_of(st.sampled_from(["for", "forEach", "while", "count", "collection", "{{a}}", "{{ghost.x}}", "a +",
                               "b.c", "{{", "$$.a"]),
              st.integers(-2, 5), st.none(), st.lists(st.fixed_dictionaries({"id": st.sampled_from(["yes", "r"])}),
                                                     max_size=2)),
    max_size=4,
)
garbage_nodes = st.builds(lambda i, t, p, c: Node(id=i, type=t, parent=p, config=c), ids, types,
                          st.sampled_from(["", "L", "P", "a", "ghost"]), configs)
garbage_edges = st.builds(lambda s, t, h: Edge(source=s, target=t, source_handle=h), ids, ids, handles)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(garbage_nodes, max_size=12), st.lists(garbage_edges, max_size=15))
def test_compile_never_crashes_on_garbage(nodes: list[Node], edges: list[Edge]) -> None:
    defn = WorkflowDefinition(id="junk", nodes=tuple(nodes), edges=tuple(edges))
    diagnostics = validate_workflow(defn)
    try:
        dag = compile_workflow(defn)
    except InvalidArgument as err:
        assert diagnostics
        assert len(err.details["diagnostics"]) == len(diagnostics)
    else:
        assert diagnostics == []
        _check_order(dag)

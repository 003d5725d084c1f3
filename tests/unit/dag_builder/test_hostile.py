"""Hostile input gets a clear diagnostic or a bounded answer: never a crash, a hang or a
RecursionError. (No timing assertions: bench/compile.py measures time.)"""

from __future__ import annotations

from weft_common.workflow import Edge, Node, WorkflowDefinition
from weft_dag_builder import DEFAULT_LIMITS, Code, Limits, compile_workflow, validate_workflow

from .builders import edge, node, out, start, tr, workflow


def test_more_nodes_than_the_limit_is_one_diagnostic() -> None:
    nodes = tuple(Node(id=f"n{i}", type="transform") for i in range(DEFAULT_LIMITS.max_nodes + 1))
    [diag] = validate_workflow(WorkflowDefinition(id="huge", nodes=nodes, edges=()))
    assert diag.code == Code.WORKFLOW_TOO_LARGE and str(DEFAULT_LIMITS.max_nodes) in diag.message


def test_more_edges_than_the_limit_is_one_diagnostic() -> None:
    edges = tuple(Edge(source="start", target="o") for _ in range(11))
    [diag] = validate_workflow(workflow([start(), out("o")], list(edges)), limits=Limits(max_edges=10))
    assert diag.code == Code.WORKFLOW_TOO_LARGE and diag.field == "edges"


def test_a_long_chain_compiles_without_recursion() -> None:
    n = 20_000
    nodes = [start(), *[tr(f"n{i}", f"n{i - 1}.v + 1" if i else "start.x") for i in range(n)]]
    edges = [edge("start", "n0"), *[edge(f"n{i - 1}", f"n{i}") for i in range(1, n)]]
    dag = compile_workflow(workflow(nodes, edges))
    assert len(dag.nodes) == n + 1 and dag.nodes[f"n{n - 1}"].topo_index == n
    assert dag.nodes["n0"].readers == ("n1",)


def test_a_long_cycle_is_found_without_recursion() -> None:
    n = 20_000
    nodes = [start(), *[out(f"n{i}", 1) for i in range(n)]]
    edges = [edge("start", "n0"), *[edge(f"n{i - 1}", f"n{i}") for i in range(1, n)], edge(f"n{n - 1}", "n0")]
    diags = validate_workflow(workflow(nodes, edges))
    assert len(diags) == DEFAULT_LIMITS.max_diagnostics + 1  # capped, with a closing note
    assert all(d.code == Code.CYCLE for d in diags[:-1])
    assert diags[-1].code == Code.TOO_MANY_DIAGNOSTICS and str(n - DEFAULT_LIMITS.max_diagnostics) in diags[-1].message


def test_cycles_everywhere() -> None:
    k = 60
    nodes = [start(), *[out(f"n{i}", 1) for i in range(k)]]
    edges = [edge("start", "n0")] + [edge(f"n{i}", f"n{j}") for i in range(k) for j in range(k) if i != j]
    diags = validate_workflow(workflow(nodes, edges), limits=Limits(max_diagnostics=50))
    assert len(diags) == 51 and {d.code for d in diags[:-1]} == {Code.CYCLE}


def test_containers_nested_thousands_deep() -> None:
    depth = 5_000
    nodes = [start(), node("c0", "loop", kind="for", count=1)]
    nodes += [node(f"c{i}", "loop", parent=f"c{i - 1}", kind="for", count=1) for i in range(1, depth)]
    nodes.append(tr("leaf", parent=f"c{depth - 1}"))
    diags = validate_workflow(workflow(nodes, [edge("start", "c0")]))
    assert [(d.code, d.node_id) for d in diags] == [
        (Code.NESTING_TOO_DEEP, f"c{DEFAULT_LIMITS.max_nesting_depth + 1}")
    ]


def test_a_long_parent_cycle() -> None:
    n = 5_000
    nodes = [start(), *[node(f"c{i}", "loop", parent=f"c{(i + 1) % n}", kind="for", count=1) for i in range(n)]]
    diags = validate_workflow(workflow(nodes, []))
    assert {d.code for d in diags} <= {Code.NESTING_CYCLE, Code.TOO_MANY_DIAGNOSTICS}
    assert len(diags) == DEFAULT_LIMITS.max_diagnostics + 1


def test_deeply_nested_jsonata() -> None:
    for source in ("(" * 3_000 + "1" + ")" * 3_000, "[" * 3_000 + "]" * 3_000, "-" * 5_000 + "1",
                   "a" + ".b" * 4_000):
        diags = validate_workflow(workflow([start(), tr("t", source)], [edge("start", "t")]))
        assert all(d.node_id == "t" for d in diags)
        assert {d.code for d in diags} <= {Code.INVALID_EXPRESSION, Code.UNKNOWN_REFERENCE}


def test_huge_strings_are_refused_before_parsing() -> None:
    big = "{{start.x}}" * 200_000  # 2.2 MB of templates
    diags = validate_workflow(workflow([start(), out("o", big)], [edge("start", "o")]))
    assert [(d.code, d.field) for d in diags] == [(Code.VALUE_TOO_LARGE, "config.value")]
    huge_expr = "1 + " * 10_000 + "1"
    diags = validate_workflow(workflow([start(), tr("t", huge_expr)], [edge("start", "t")]))
    assert [(d.code, d.field) for d in diags] == [(Code.VALUE_TOO_LARGE, "config.expression")]


def test_huge_ids_and_handles_are_quoted_briefly() -> None:
    long_id = "x" * 100_000
    nodes = [start(), tr(long_id, "ghost + 1"), node("c", "condition", branches=[{"id": "b" * 100_000}])]
    edges = [edge("start", long_id, "h" * 100_000), edge("start", "c"), edge("c", long_id, "condition:" + "z" * 99_999)]
    diags = validate_workflow(workflow(nodes, edges))
    assert len(diags) >= 4
    assert all(len(d.message) <= 1_000 and len(d.node_id) <= 300 and len(d.edge_id) <= 300 for d in diags)


def test_template_scanning_is_linear_on_hostile_strings() -> None:
    # Many unclosed "{{" and long whitespace runs inside a template: both used to make the
    # template regex rescan quadratically (minutes for strings this size).
    unclosed = "{{a" * 300_000
    spaced = "{{a" + " " * 900_000 + "b}}"
    diags = validate_workflow(workflow([start(), out("o1", unclosed), out("o2", spaced)],
                                       [edge("start", "o1"), edge("start", "o2")]))
    assert [(d.code, d.node_id) for d in diags] == [(Code.INVALID_TEMPLATE, "o1"), (Code.INVALID_TEMPLATE, "o2")]
    assert "unclosed" in diags[0].message


def test_too_many_references_is_one_diagnostic() -> None:
    refs = " ".join(["{{start.x}}"] * 30)
    defn = workflow([start(), out("a", refs), out("b", refs)], [edge("start", "a"), edge("start", "b")])
    [diag] = validate_workflow(defn, limits=Limits(max_references=50))
    assert diag.code == Code.WORKFLOW_TOO_LARGE and "60 references" in diag.message
    assert validate_workflow(defn) == []


def test_many_places_reading_the_same_node_are_all_named() -> None:
    nodes = [start(), tr("side"), node("o", "output", value="{{side}}", name="{{side.name}}")]
    diags = validate_workflow(workflow(nodes, [edge("start", "side"), edge("start", "o")]))
    assert sorted((d.code, d.field) for d in diags) == [
        (Code.REFERENCE_NOT_ANCESTOR, "config.name"), (Code.REFERENCE_NOT_ANCESTOR, "config.value")]

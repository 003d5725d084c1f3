"""References ({{ }} templates and JSONata paths) must name nodes that run before the reader."""

from __future__ import annotations

from weft_dag_builder import Code, compile_workflow

from .builders import chain, diagnose, edge, node, only, out, start, tr, workflow


def test_unknown_reference_quotes_the_text() -> None:
    defn = workflow([start(), out("out", "{{ghost.value}}")], [edge("start", "out")])
    [diag] = only(defn, Code.UNKNOWN_REFERENCE)
    assert (diag.node_id, diag.field) == ("out", "config.value")
    assert "{{ghost.value}}" in diag.message and "'ghost'" in diag.message


def test_unknown_name_in_jsonata() -> None:
    defn = workflow([start(), tr("t", "start.x + phantom.y")], [edge("start", "t")])
    [diag] = only(defn, Code.UNKNOWN_REFERENCE)
    assert (diag.node_id, diag.field) == ("t", "config.expression") and "phantom" in diag.message


def test_builtins_are_not_node_references() -> None:
    expr = "input.a + var.b + execution.id"  # loop.* / parallel.*: see the scope test below
    defn = workflow([start(), tr("t", expr), out("o", "{{env.KEY}} {{var.x}} {{input.y}}")],
                    chain("start", "t", "o"))
    assert diagnose(defn) == []
    assert compile_workflow(defn).nodes["o"].references == ()


def test_reading_a_node_that_is_not_upstream() -> None:
    # start -> a, start -> b: b cannot read a (parallel paths), and a cannot read o (downstream).
    defn = workflow([start(), tr("a", "o"), out("b", "{{a}}"), out("o", "1")],
                    [edge("start", "a"), edge("start", "b"), edge("a", "o")])
    diags = only(defn, Code.REFERENCE_NOT_ANCESTOR)
    assert {(d.node_id, d.field) for d in diags} == {("a", "config.expression"), ("b", "config.value")}
    assert all("does not run before" in d.message for d in diags)


def test_reading_any_transitive_ancestor() -> None:
    defn = workflow([start(), tr("a"), tr("b"), tr("c"), out("o", "{{a}} {{b}} {{c}} {{start.x}}")],
                    chain("start", "a", "b", "c", "o"))
    assert diagnose(defn) == []
    assert compile_workflow(defn).nodes["o"].references == ("a", "b", "c", "start")


def test_reading_itself() -> None:
    [diag] = only(workflow([start(), tr("a", "a + 1")], [edge("start", "a")]), Code.REFERENCE_NOT_ANCESTOR)
    assert "own output" in diag.message


def _loop_workflow(inner_expr: str, after_value: str, *, loop_config: dict | None = None) -> list:  # type: ignore[type-arg]
    cfg = loop_config or {"kind": "forEach", "items": "{{pre}}"}
    return [
        start(), tr("pre", "start.items"), node("L", "loop", **cfg),
        tr("first", "loop.item", parent="L"), tr("second", inner_expr, parent="L"),
        out("after", after_value),
    ]


def _edges() -> list:  # type: ignore[type-arg]
    return [*chain("start", "pre", "L", "after"), edge("first", "second")]


def test_children_read_siblings_upstream_enclosing_containers_and_what_the_container_may_read() -> None:
    defn = workflow(_loop_workflow("first + L.index + pre + start.x", "{{L.results}}"), _edges())
    assert diagnose(defn) == []
    dag = compile_workflow(defn)
    assert dag.nodes["second"].references == ("L", "first", "pre", "start")
    assert dag.nodes["L"].readers == ("second", "after")


def test_downstream_of_a_container_its_children_are_not_readable() -> None:
    defn = workflow(_loop_workflow("first", "{{second}}"), _edges())
    [diag] = only(defn, Code.REFERENCE_NOT_ANCESTOR)
    assert diag.node_id == "after" and "inside container 'L'" in diag.message
    assert "{{L.results}}" in diag.message


def test_a_child_cannot_read_what_runs_after_its_container() -> None:
    defn = workflow(_loop_workflow("after", "{{L.results}}"), _edges())
    [diag] = only(defn, Code.REFERENCE_NOT_ANCESTOR)
    assert diag.node_id == "second" and "container 'L'" in diag.message


def test_a_container_cannot_read_its_own_children_in_its_items() -> None:
    defn = workflow(_loop_workflow("first", "{{L.results}}", loop_config={"kind": "forEach", "items": "{{first}}"}),
                    _edges())
    [diag] = only(defn, Code.REFERENCE_NOT_ANCESTOR)
    assert (diag.node_id, diag.field) == ("L", "config.items")


def test_a_loop_condition_may_read_its_own_children() -> None:
    defn = workflow(
        _loop_workflow("first", "{{L.results}}", loop_config={"kind": "doWhile", "condition": "second.more and L.index < 9"}),
        _edges(),
    )
    assert diagnose(defn) == []
    dag = compile_workflow(defn)
    assert dag.nodes["L"].references == ("second",)  # itself (L.index) is no output dependency
    assert dag.nodes["second"].readers == ("L",)


def test_nested_containers_read_outer_container_ids() -> None:
    defn = workflow(
        [start(), node("p", "parallel", kind="collection", items="{{start.groups}}"),
         node("l", "loop", parent="p", kind="forEach", items="{{parallel.item}}"),
         tr("dbl", "loop.item * 2 + p.index * 100", parent="l"), out("result", "{{p.results}}")],
        [*chain("start", "p", "result")],
    )
    assert diagnose(defn) == []
    assert compile_workflow(defn).nodes["dbl"].references == ("p",)


def test_sibling_child_in_another_container_is_not_readable() -> None:
    defn = workflow(
        [start(), node("A", "loop", kind="for", count=1), tr("a1", parent="A"),
         node("B", "loop", kind="for", count=1), tr("b1", "a1", parent="B")],
        chain("start", "A", "B"),
    )
    [diag] = only(defn, Code.REFERENCE_NOT_ANCESTOR)
    assert diag.node_id == "b1" and "inside container 'A'" in diag.message


def test_jsonata_names_inside_predicates_and_later_steps_are_not_references() -> None:
    defn = workflow([start(), tr("a", "start.items[price > limit].name ~> $count()"),
                     tr("b", "a.total{category: amount}"), tr("c", "$$.b + $sum(a.(x + y))")],
                    chain("start", "a", "b", "c"))
    assert diagnose(defn) == []
    dag = compile_workflow(defn)
    assert dag.nodes["a"].references == ("start",)
    assert dag.nodes["b"].references == ("a",)
    assert dag.nodes["c"].references == ("a", "b")


def test_reference_in_error_branch_to_the_failed_node() -> None:
    defn = workflow([start(), node("boom", "fail", message="x"), tr("h", "'handled: ' & boom.error.message")],
                    [edge("start", "boom"), edge("boom", "h", "error")])
    assert diagnose(defn) == []


def test_many_references_across_a_long_graph_are_checked() -> None:
    # Readers several hops from what they read: answered by the ancestor bitsets.
    n = 300
    nodes = [start(), tr("side"), *[tr(f"n{i}", f"n{i - 3}" if i >= 3 else "1") for i in range(n)]]
    edges = [edge("start", "side"), *chain("start", *[f"n{i}" for i in range(n)])]
    assert diagnose(workflow(nodes, edges)) == []
    nodes[-1] = tr(f"n{n - 1}", f"n{n - 50} + side")  # side is on a parallel path from start
    [diag] = only(workflow(nodes, edges), Code.REFERENCE_NOT_ANCESTOR)
    assert diag.node_id == f"n{n - 1}" and "'side'" in diag.message


def test_a_misplaced_reader_gets_no_ancestry_noise() -> None:
    defn = workflow([start(), tr("a"), tr("lost", "a + 1", parent="nowhere")], [edge("start", "a")])
    assert [d.code for d in diagnose(defn)] == [Code.UNKNOWN_PARENT]


def test_loop_and_parallel_builtins_need_an_enclosing_container() -> None:
    defn = workflow(
        [start(), tr("top", "loop.index"), out("o", "{{parallel.item}}"),
         node("P", "parallel", kind="count", count=2), tr("in_p", "parallel.index + loop.index", parent="P"),
         node("L", "loop", parent="P", kind="while", condition="loop.iteration < 3 and parallel.index > 0"),
         tr("in_l", "loop.item + parallel.item", parent="L")],
        [*chain("start", "top", "o"), edge("start", "P")],
    )
    found = {(d.code, d.node_id, d.field) for d in diagnose(defn)}
    assert found == {
        (Code.REFERENCE_OUT_OF_SCOPE, "top", "config.expression"),
        (Code.REFERENCE_OUT_OF_SCOPE, "o", "config.value"),
        (Code.REFERENCE_OUT_OF_SCOPE, "in_p", "config.expression"),  # loop.* inside a parallel only
    }

"""Structure rules: node ids, types, the start node, container nesting, edges and handles."""

from __future__ import annotations

from weft_dag_builder import Code, Limits

from .builders import chain, diagnose, edge, node, only, out, start, tr, workflow


def test_a_minimal_workflow_is_valid() -> None:
    assert diagnose(workflow([start(), out("o")], chain("start", "o"))) == []


def test_malformed_node_ids_are_reported() -> None:
    for bad in ("1abc", "a-b", "a" * 65, "", "a b"):
        defn = workflow([start(), tr(bad)], [edge("start", bad)])
        [diag] = only(defn, Code.INVALID_NODE_ID)
        assert diag.field == "id"
        assert "must match" in diag.message


def test_reserved_ids_are_reported() -> None:
    for reserved in ("input", "var", "env", "loop", "parallel", "execution"):
        [diag] = only(workflow([start(), tr(reserved)], [edge("start", reserved)]), Code.RESERVED_NODE_ID)
        assert diag.node_id == reserved


def test_duplicate_ids_are_reported_once_per_extra_node() -> None:
    defn = workflow([start(), tr("a"), tr("a")], chain("start", "a"))
    [diag] = only(defn, Code.DUPLICATE_NODE_ID)
    assert diag.node_id == "a"
    assert "#1" in diag.message and "#2" in diag.message


def test_unknown_node_type() -> None:
    [diag] = only(workflow([start(), node("x", "teleport")], chain("start", "x")), Code.UNKNOWN_NODE_TYPE)
    assert diag.node_id == "x" and diag.field == "type" and "teleport" in diag.message


def test_missing_start() -> None:
    assert only(workflow([tr("a")], []), Code.MISSING_START)


def test_extra_start_nodes() -> None:
    defn = workflow([start(), node("s2", "start"), out("o")], [edge("start", "o"), edge("s2", "o")])
    [diag] = only(defn, Code.MULTIPLE_START)
    assert diag.node_id == "s2"


def test_start_inside_a_container() -> None:
    defn = workflow(
        [node("L", "loop", kind="for", count=2), node("start", "start", parent="L")], []
    )
    assert (Code.START_NOT_TOP_LEVEL, "start") in {(d.code, d.node_id) for d in diagnose(defn)}


def test_edge_into_start() -> None:
    defn = workflow([start(), tr("a")], [edge("start", "a"), edge("a", "start")])
    codes = {(d.code, d.node_id) for d in diagnose(defn)}
    assert (Code.START_HAS_INCOMING, "start") in codes


def test_unknown_parent() -> None:
    [diag] = only(workflow([start(), tr("a", parent="nowhere")], []), Code.UNKNOWN_PARENT)
    assert diag.node_id == "a" and diag.field == "parent" and "nowhere" in diag.message


def test_parent_that_is_not_a_container() -> None:
    defn = workflow([start(), tr("a"), tr("b", parent="a")], chain("start", "a"))
    [diag] = only(defn, Code.PARENT_NOT_CONTAINER)
    assert diag.node_id == "b"


def test_containers_nesting_in_a_circle() -> None:
    defn = workflow(
        [start(), node("L1", "loop", parent="L2", kind="for", count=1),
         node("L2", "loop", parent="L1", kind="for", count=1), tr("inner", parent="L1")],
        [],
    )
    diags = only(defn, Code.NESTING_CYCLE)
    assert {d.node_id for d in diags} == {"L1", "L2"}
    assert "L1" in diags[0].message and "L2" in diags[0].message


def test_a_container_that_is_its_own_parent() -> None:
    defn = workflow([start(), node("L", "loop", parent="L", kind="for", count=1)], [])
    assert {d.node_id for d in only(defn, Code.NESTING_CYCLE)} == {"L"}


def test_nesting_deeper_than_the_limit() -> None:
    nodes = [start(), node("c0", "loop", kind="for", count=1)]
    for i in range(1, 6):
        nodes.append(node(f"c{i}", "loop", parent=f"c{i - 1}", kind="for", count=1))
    nodes.append(tr("leaf", parent="c5"))
    defn = workflow(nodes, [edge("start", "c0")])
    [diag] = only(defn, Code.NESTING_TOO_DEEP, Limits(max_nesting_depth=3))
    assert diag.node_id == "c4"  # depth 4 is the first level past the limit
    assert diagnose(defn, Limits(max_nesting_depth=6)) == []


def test_empty_container() -> None:
    defn = workflow([start(), node("L", "loop", kind="for", count=3)], chain("start", "L"))
    [diag] = only(defn, Code.EMPTY_CONTAINER)
    assert diag.node_id == "L"


def test_edges_to_unknown_nodes() -> None:
    defn = workflow([start(), out("o")], [edge("start", "o"), edge("ghost", "o", edge_id="x1"),
                                          edge("start", "phantom", edge_id="x2")])
    found = {(d.code, d.edge_id, d.field) for d in diagnose(defn)}
    assert found == {(Code.EDGE_UNKNOWN_SOURCE, "x1", "source"), (Code.EDGE_UNKNOWN_TARGET, "x2", "target")}


def test_edges_across_container_boundaries() -> None:
    defn = workflow(
        [start(), node("L", "loop", kind="for", count=2), tr("inside", parent="L"), out("after")],
        [edge("start", "L"), edge("L", "after"), edge("start", "inside", edge_id="in"),
         edge("inside", "after", edge_id="outward")],
    )
    diags = only(defn, Code.EDGE_CROSSES_CONTAINER)
    assert {d.edge_id for d in diags} == {"in", "outward"}
    assert "top level" in diags[0].message and "'L'" in diags[0].message


def test_malformed_handles() -> None:
    for handle in ("sideways", "condition:", "route", "condition"):
        defn = workflow([start(), out("o")], [edge("start", "o", handle, edge_id="h")])
        [diag] = only(defn, Code.INVALID_HANDLE)
        assert diag.edge_id == "h" and diag.field == "sourceHandle"


def _condition() -> list:  # type: ignore[type-arg]
    return [start(), node("c", "condition", branches=[{"id": "big", "when": "start.n > 1"}, {"id": "else"}]),
            out("o1"), out("o2")]


def test_condition_handle_naming_no_branch() -> None:
    defn = workflow(_condition(), [edge("start", "c"), edge("c", "o1", "condition:big"),
                                   edge("c", "o2", "condition:small", edge_id="bad")])
    [diag] = only(defn, Code.UNKNOWN_BRANCH)
    assert diag.edge_id == "bad" and diag.node_id == "c"
    assert "small" in diag.message and "big, else" in diag.message


def test_route_handle_naming_no_route() -> None:
    nodes = [start(), node("r", "router", routes=[{"id": "a"}, {"id": "b"}], select="start.kind"),
             out("oa"), out("oz")]
    defn = workflow(nodes, [edge("start", "r"), edge("r", "oa", "route:a"), edge("r", "oz", "route:z")])
    [diag] = only(defn, Code.UNKNOWN_ROUTE)
    assert diag.node_id == "r" and "'z'" in diag.message


def test_condition_or_route_handle_on_the_wrong_node_type() -> None:
    defn = workflow([start(), tr("a"), out("o1"), out("o2")],
                    [edge("start", "a"), edge("a", "o1", "condition:yes"), edge("a", "o2", "route:x")])
    diags = only(defn, Code.HANDLE_WRONG_NODE_TYPE)
    assert len(diags) == 2 and all(d.node_id == "a" for d in diags)


def test_error_handles_are_allowed_on_any_node() -> None:
    defn = workflow([start(), node("boom", "fail", message="no"), out("o")],
                    [edge("start", "boom"), edge("boom", "o", "error")])
    assert diagnose(defn) == []


def test_duplicate_edge_ids() -> None:
    defn = workflow([start(), tr("a"), out("o")],
                    [edge("start", "a", edge_id="same"), edge("a", "o", edge_id="same")])
    [diag] = only(defn, Code.DUPLICATE_EDGE_ID)
    assert diag.edge_id == "same"


def test_every_problem_is_reported_at_once() -> None:
    defn = workflow(
        [tr("1bad"), node("x", "teleport"), tr("a"), tr("a")],
        [edge("a", "ghost")],
    )
    codes = {d.code for d in diagnose(defn)}
    assert {Code.INVALID_NODE_ID, Code.UNKNOWN_NODE_TYPE, Code.DUPLICATE_NODE_ID, Code.MISSING_START,
            Code.EDGE_UNKNOWN_TARGET} <= codes

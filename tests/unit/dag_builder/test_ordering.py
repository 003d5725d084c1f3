"""Reachability and cycles."""

from __future__ import annotations

from weft_dag_builder import Code

from .builders import chain, diagnose, edge, found, node, only, out, start, tr, workflow


def test_node_not_reachable_from_start() -> None:
    defn = workflow([start(), out("o"), tr("island"), out("island_out")],
                    [edge("start", "o"), edge("island", "island_out")])
    diags = only(defn, Code.UNREACHABLE_NODE)
    assert {d.node_id for d in diags} == {"island", "island_out"}
    assert "start" in diags[0].message


def test_children_of_a_reachable_container_are_reachable_from_its_entries() -> None:
    defn = workflow(
        [start(), node("L", "loop", kind="for", count=2), tr("a", parent="L"), tr("b", parent="L"),
         tr("c", parent="L")],
        [edge("start", "L"), edge("a", "b")],
    )
    assert diagnose(defn) == []  # a and c are entries; b follows a


def test_children_unreachable_inside_a_container() -> None:
    defn = workflow(
        [start(), node("L", "loop", kind="for", count=2), tr("entry", parent="L"),
         tr("x", parent="L"), tr("y", parent="L")],
        [edge("start", "L"), edge("x", "y"), edge("y", "x")],
    )
    codes = found(defn)
    assert (Code.UNREACHABLE_NODE, "x") in codes and (Code.UNREACHABLE_NODE, "y") in codes
    assert (Code.CYCLE, "x") in codes and (Code.CYCLE, "y") in codes
    assert (Code.UNREACHABLE_NODE, "entry") not in codes


def test_children_of_an_unreachable_container_are_not_reported_again() -> None:
    defn = workflow([start(), out("o"), node("L", "loop", kind="for", count=2), tr("a", parent="L")],
                    [edge("start", "o")])
    [diag] = only(defn, Code.UNREACHABLE_NODE)
    assert diag.node_id == "L"


def test_cycle_names_every_node_on_it() -> None:
    defn = workflow([start(), tr("a"), tr("b"), tr("c"), out("o")],
                    [*chain("start", "a", "b", "c"), edge("c", "a"), edge("c", "o")])
    diags = only(defn, Code.CYCLE)
    assert {d.node_id for d in diags} == {"a", "b", "c"}
    assert "a -> b -> c -> a" in diags[0].message


def test_nodes_behind_a_cycle_are_not_on_it() -> None:
    defn = workflow([start(), tr("a"), tr("b"), out("after")],
                    [*chain("start", "a", "b"), edge("b", "a"), edge("b", "after")])
    assert {d.node_id for d in only(defn, Code.CYCLE)} == {"a", "b"}


def test_self_loop_is_a_cycle() -> None:
    defn = workflow([start(), tr("a")], [edge("start", "a"), edge("a", "a")])
    [diag] = only(defn, Code.CYCLE)
    assert diag.node_id == "a" and "a -> a" in diag.message


def test_two_separate_cycles_are_both_found() -> None:
    defn = workflow([start(), tr("a"), tr("b"), tr("c"), tr("d")],
                    [*chain("start", "a", "b", "c", "d"), edge("b", "a"), edge("d", "c")])
    assert {d.node_id for d in only(defn, Code.CYCLE)} == {"a", "b", "c", "d"}


def test_cycles_inside_a_container_are_errors_too() -> None:
    defn = workflow(
        [start(), node("L", "loop", kind="while", condition="var.go"), tr("a", parent="L"),
         tr("b", parent="L"), tr("c", parent="L")],
        [edge("start", "L"), *chain("a", "b", "c"), edge("c", "b")],
    )
    assert {d.node_id for d in only(defn, Code.CYCLE)} == {"b", "c"}


def test_a_loop_container_is_how_to_repeat() -> None:
    defn = workflow(
        [start(), node("L", "loop", kind="while", condition="var.n < 3"), tr("body", "var.n + 1", parent="L"),
         node("inc", "setVariable", parent="L", assign={"n": "{{body}}"}), out("o", "{{L.results}}")],
        [edge("start", "L"), edge("body", "inc"), edge("L", "o")],
    )
    assert diagnose(defn) == []

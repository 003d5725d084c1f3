"""The compiled DAG: every field the executor relies on."""

from __future__ import annotations

import hashlib

import pytest

from weft_common.compiled import HandleKind, dag_from_proto, dag_to_proto
from weft_common.errors import InvalidArgument
from weft_common.workflow import RetryPolicy, definition_from_json, definition_to_json
from weft_dag_builder import compile_workflow
from weft_dag_builder.hashing import canonical_definition_bytes

from .builders import chain, edge, node, out, start, tr, workflow


def _branchy():  # type: ignore[no-untyped-def]
    return workflow(
        [
            start(),
            node("check", "condition", branches=[{"id": "big", "when": "start.total > 100"}, {"id": "else"}]),
            tr("small", "'small'"),
            node("L", "loop", kind="forEach", items="{{start.lines}}"),
            tr("price", "loop.item.qty * loop.item.unit", parent="L"),
            tr("tax", "price * 0.2", parent="L"),
            tr("note", "'n'", parent="L"),
            node("boom", "fail", message="{{small}}"),
            out("done", "{{L.results}}"),
            out("fallback", "{{boom.error.message}}"),
        ],
        [
            edge("start", "check", edge_id="s"),
            edge("check", "L", "condition:big"),
            edge("check", "small", "condition:else"),
            edge("price", "tax"),
            edge("L", "done"),
            edge("small", "boom"),
            edge("boom", "fallback", "error", edge_id="err"),
        ],
        input_schema={"type": "object"},
        variables={"threshold": 100},
    )


def test_nodes_in_topological_order_with_children_after_their_container() -> None:
    dag = compile_workflow(_branchy())
    # Ready ties go to the node defined first: small (#2) before L (#3), tax (#5) before note (#6).
    assert list(dag.nodes) == ["start", "check", "small", "L", "price", "tax", "note", "boom", "done", "fallback"]
    assert [n.topo_index for n in dag.nodes.values()] == list(range(10))
    assert dag.top_level == ("start", "check", "small", "L", "boom", "done", "fallback")


def test_ties_follow_definition_order() -> None:
    defn = workflow([start(), out("z"), out("a"), out("m")], [edge("start", "z"), edge("start", "a"),
                                                              edge("start", "m")])
    assert list(compile_workflow(defn).nodes) == ["start", "z", "a", "m"]
    defn = workflow([start(), out("m"), out("a"), out("z")], [edge("start", "z"), edge("start", "a"),
                                                              edge("start", "m")])
    assert list(compile_workflow(defn).nodes) == ["start", "m", "a", "z"]


def test_edges_with_indexes_ids_and_handles() -> None:
    dag = compile_workflow(_branchy())
    assert [e.index for e in dag.edges] == list(range(7))
    assert [e.id for e in dag.edges] == ["s", "e1", "e2", "e3", "e4", "e5", "err"]
    assert (dag.edges[1].handle_kind, dag.edges[1].handle_value) == (HandleKind.CONDITION, "big")
    assert dag.edges[1].handle == "condition:big"
    assert dag.edges[0].handle_kind is HandleKind.OUT
    assert dag.edges[6].handle_kind is HandleKind.ERROR
    route = workflow([start(), node("r", "router", routes=[{"id": "x"}], select="'x'"), out("o")],
                     [edge("start", "r"), edge("r", "o", "route:x")])
    assert compile_workflow(route).edges[1].handle_kind is HandleKind.ROUTE


def test_generated_edge_ids_never_collide_with_given_ones() -> None:
    defn = workflow([start(), tr("a"), out("o")], [edge("start", "a"), edge("a", "o", edge_id="e0")])
    assert [e.id for e in compile_workflow(defn).edges] == ["e0_1", "e0"]


def test_incoming_and_outgoing_edges() -> None:
    dag = compile_workflow(_branchy())
    assert dag.nodes["check"].incoming == (0,)
    assert dag.nodes["check"].outgoing == (1, 2)
    assert dag.nodes["boom"].outgoing == (6,)
    assert dag.nodes["tax"].incoming == (3,)
    assert dag.nodes["L"].incoming == (1,) and dag.nodes["L"].outgoing == (4,)


def test_container_membership_entries_and_exits() -> None:
    dag = compile_workflow(_branchy())
    loop = dag.nodes["L"]
    assert loop.children == ("price", "tax", "note")
    assert loop.entries == ("price", "note")
    assert loop.exits == ("tax", "note")
    assert loop.is_container and loop.depth == 0 and loop.parent == ""
    assert dag.nodes["price"].parent == "L" and dag.nodes["price"].depth == 1
    assert dag.nodes["done"].children == ()


def test_depth_counts_enclosing_containers() -> None:
    defn = workflow(
        [start(), node("p", "parallel", kind="count", count=2), node("l", "loop", parent="p", kind="for", count=2),
         tr("leaf", parent="l")],
        chain("start", "p"),
    )
    dag = compile_workflow(defn)
    assert [dag.nodes[k].depth for k in ("p", "l", "leaf")] == [0, 1, 2]
    assert dag.nodes["p"].children == ("l",) and dag.nodes["l"].children == ("leaf",)


def test_references_and_readers() -> None:
    dag = compile_workflow(_branchy())
    assert dag.nodes["check"].references == ("start",)
    assert dag.nodes["tax"].references == ("price",)
    assert dag.nodes["boom"].references == ("small",)
    assert dag.nodes["start"].readers == ("check", "L")
    assert dag.nodes["L"].readers == ("done",)
    assert dag.nodes["boom"].readers == ("fallback",)
    assert dag.nodes["done"].readers == ()


def test_workflow_level_fields() -> None:
    dag = compile_workflow(_branchy())
    assert dag.workflow_id == "wf"
    assert dag.start_node == "start"
    assert dag.output_nodes == ("done", "fallback")
    assert dag.input_schema == {"type": "object"}
    assert dag.variables == {"threshold": 100}


def test_node_fields_are_carried_over() -> None:
    retry = RetryPolicy(max_attempts=3, initial_interval_ms=50)
    defn = workflow([start(), node("h", "http", method="GET", url="x", retry=retry, timeout_ms=900)],
                    [edge("start", "h")])
    h = compile_workflow(defn).nodes["h"]
    assert h.config == {"method": "GET", "url": "x"}
    assert h.retry == retry and h.timeout_ms == 900 and h.type == "http"


def test_definition_hash_is_sha256_of_the_canonical_json_and_ignores_key_order() -> None:
    defn = _branchy()
    dag = compile_workflow(defn)
    assert dag.definition_hash == hashlib.sha256(canonical_definition_bytes(defn)).hexdigest()
    as_json = definition_to_json(defn)
    reordered = definition_from_json({k: as_json[k] for k in reversed(list(as_json))})
    assert compile_workflow(reordered).definition_hash == dag.definition_hash
    changed = workflow([*defn.nodes[:-1], out("fallback", "{{boom.error.code}}")], list(defn.edges),
                       input_schema={"type": "object"}, variables={"threshold": 100})
    assert compile_workflow(changed).definition_hash != dag.definition_hash


def test_same_input_gives_byte_identical_proto() -> None:
    first = dag_to_proto(compile_workflow(_branchy())).SerializeToString(deterministic=True)
    second = dag_to_proto(compile_workflow(_branchy())).SerializeToString(deterministic=True)
    assert first == second
    assert dag_from_proto(dag_to_proto(compile_workflow(_branchy()))) == compile_workflow(_branchy())


def test_invalid_workflow_raises_with_every_diagnostic_as_json() -> None:
    defn = workflow([start(), tr("a", "ghost"), tr("b")], [edge("start", "a"), edge("a", "nowhere", edge_id="x")])
    with pytest.raises(InvalidArgument) as err:
        compile_workflow(defn)
    listed = err.value.details["diagnostics"]
    assert {"code": "UNKNOWN_REFERENCE", "nodeId": "a", "field": "config.expression"}.items() <= next(
        d for d in listed if d["code"] == "UNKNOWN_REFERENCE").items()
    assert any(d.get("edgeId") == "x" and d["code"] == "EDGE_UNKNOWN_TARGET" for d in listed)
    assert any(d.get("nodeId") == "b" and d["code"] == "UNREACHABLE_NODE" for d in listed)
    assert "more problems" in err.value.message

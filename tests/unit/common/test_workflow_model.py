"""The workflow JSON form loads into the proto message and the domain types and back without loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from weft_common.errors import InvalidArgument
from weft_common.workflow import (
    RetryPolicy,
    definition_from_json,
    definition_to_json,
    definition_to_proto,
)

CASES = sorted((Path(__file__).parents[4] / "shared" / "acceptance" / "cases").glob("*.json"))

SPEC_EXAMPLE = {
    "id": "order_triage",
    "name": "Order triage",
    "inputSchema": {"type": "object", "required": ["orderId"]},
    "variables": {"threshold": 100},
    "nodes": [
        {"id": "start", "type": "start"},
        {
            "id": "fetch",
            "type": "http",
            "config": {"method": "GET", "url": "{{env.ORDERS_URL}}/orders/{{start.orderId}}"},
            "retry": {"maxAttempts": 3, "initialIntervalMs": 200, "backoffCoefficient": 2.5},
            "timeoutMs": 5000,
        },
        {"id": "check", "type": "condition", "config": {"branches": [
            {"id": "big", "when": "fetch.body.total > var.threshold"}, {"id": "else"}]}},
        {"id": "each_line", "type": "loop", "config": {"kind": "forEach", "items": "{{fetch.body.lines}}"}},
        {"id": "price", "type": "transform", "parent": "each_line",
         "config": {"expression": "loop.item.qty * loop.item.unit"}},
        {"id": "done", "type": "output", "config": {"value": "{{each_line.results}}"}},
    ],
    "edges": [
        {"source": "start", "target": "fetch"},
        {"source": "fetch", "target": "check"},
        {"source": "check", "sourceHandle": "condition:big", "target": "each_line"},
        {"source": "each_line", "target": "done"},
    ],
}


def test_spec_example_round_trips_exactly() -> None:
    assert definition_to_json(definition_from_json(SPEC_EXAMPLE)) == SPEC_EXAMPLE


def test_domain_types_carry_every_field() -> None:
    defn = definition_from_json(SPEC_EXAMPLE)
    fetch = defn.nodes[1]
    assert fetch.retry == RetryPolicy(max_attempts=3, initial_interval_ms=200, backoff_coefficient=2.5)
    assert fetch.timeout_ms == 5000
    assert defn.nodes[4].parent == "each_line"
    assert defn.variables == {"threshold": 100}
    assert isinstance(defn.variables["threshold"], int)
    assert defn.edges[2].source_handle == "condition:big"
    assert defn.edges[0].source_handle == "out"


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_acceptance_workflows_round_trip(path: Path) -> None:
    wf = json.loads(path.read_text())["workflow"]
    again = definition_to_json(definition_from_json(wf))
    # Equal as JSON values (1 == 1.0 aside, which JSON does not distinguish).
    assert json.loads(json.dumps(again)) == json.loads(json.dumps(wf))
    assert definition_to_proto(definition_from_json(again)) == definition_to_proto(definition_from_json(wf))


def test_unknown_field_is_named() -> None:
    bad = {"id": "x", "nodes": [{"id": "start", "type": "start", "timeoutMS": 5}], "edges": []}
    with pytest.raises(InvalidArgument, match="timeoutMS"):
        definition_from_json(bad)


def test_wrong_shape_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="JSON object"):
        definition_from_json([1, 2])


def test_retry_backoff_is_exponential_and_capped() -> None:
    policy = RetryPolicy(max_attempts=5, initial_interval_ms=100, backoff_coefficient=2.0, max_interval_ms=300)
    assert [policy.delay_ms(a) for a in (1, 2, 3, 4)] == [100, 200, 300, 300]

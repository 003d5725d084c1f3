"""Per-type config rules, JSONata syntax, templates, size limits."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weft_common.workflow import Node
from weft_dag_builder import Code, Limits
from weft_dag_builder.configs import check_node_config
from weft_dag_builder.diagnostics import DiagnosticSink

from .builders import diagnose, edge, node, start, workflow


def _one(node_type: str, limits: Limits | None = None, **config: Any) -> list[tuple[str, str]]:
    """(code, field) of the diagnostics for a single node of ``node_type`` after start."""
    defn = workflow([start(), node("n", node_type, **config)], [edge("start", "n")])
    diags = diagnose(defn, limits)
    assert all(d.node_id == "n" for d in diags), diags
    return [(d.code, d.field) for d in diags]


VALID: list[tuple[str, dict[str, Any]]] = [
    ("transform", {"expression": "start.x + 1"}),
    ("condition", {"branches": [{"id": "a", "when": "start.x > 1"}, {"id": "else"}]}),
    ("router", {"routes": [{"id": "a"}, {"id": "b", "description": "B"}], "select": "start.kind"}),
    ("http", {"method": "GET", "url": "https://example.test/{{start.id}}", "headers": {"a": "b"}}),
    (
        "http",
        {"method": "post", "url": "x", "body": {"n": "{{start.n}}"}, "expectStatus": [200, 201]},
    ),
    ("llm", {"model": "m", "messages": [{"role": "user", "content": "{{start.q}}"}]}),
    ("llm", {"model": "m", "prompt": "hello", "stream": False}),
    ("wait", {"durationMs": 10}),
    ("wait", {"durationMs": "{{start.ms}}"}),
    ("wait", {"until": "2030-01-01T00:00:00Z"}),
    ("approval", {"reason": "ok?", "inputSchema": {"type": "object"}}),
    ("approval", {}),
    ("setVariable", {"assign": {"n": 1, "m": "{{start.m}}"}}),
    ("subworkflow", {"workflowId": "child", "input": {"a": "{{start.a}}"}}),
    ("output", {"value": None}),
    ("output", {"value": "{{start}}", "name": "result"}),
    ("fail", {"message": "no", "code": "E"}),
]


@pytest.mark.parametrize(
    ("node_type", "config"), VALID, ids=[f"{t}-{i}" for i, (t, _) in enumerate(VALID)]
)
def test_valid_configs(node_type: str, config: dict[str, Any]) -> None:
    assert _one(node_type, **config) == []


INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    ("transform", {}, Code.MISSING_CONFIG, "config.expression"),
    ("transform", {"expression": 5}, Code.INVALID_CONFIG, "config.expression"),
    ("transform", {"expression": "  "}, Code.INVALID_EXPRESSION, "config.expression"),
    ("condition", {}, Code.MISSING_CONFIG, "config.branches"),
    ("condition", {"branches": []}, Code.INVALID_CONFIG, "config.branches"),
    ("condition", {"branches": [{"when": "true"}]}, Code.MISSING_CONFIG, "config.branches[0].id"),
    (
        "condition",
        {"branches": [{"id": "a"}, {"id": "b"}]},
        Code.INVALID_CONFIG,
        "config.branches[1]",
    ),
    (
        "condition",
        {"branches": [{"id": "a", "when": "1"}, {"id": "a", "when": "2"}]},
        Code.INVALID_CONFIG,
        "config.branches[1].id",
    ),
    ("condition", {"branches": ["a"]}, Code.INVALID_CONFIG, "config.branches[0]"),
    ("router", {"select": "start.k"}, Code.MISSING_CONFIG, "config.routes"),
    ("router", {"routes": [{"id": "a"}]}, Code.MISSING_CONFIG, "config.select"),
    ("http", {"method": "GET"}, Code.MISSING_CONFIG, "config.url"),
    ("http", {"url": "x"}, Code.MISSING_CONFIG, "config.method"),
    ("http", {"url": "x", "method": "FETCH"}, Code.INVALID_CONFIG, "config.method"),
    ("http", {"url": "x", "method": "GET", "headers": [1]}, Code.INVALID_CONFIG, "config.headers"),
    ("llm", {"messages": []}, Code.MISSING_CONFIG, "config.model"),
    ("llm", {"model": "m"}, Code.MISSING_CONFIG, "config.messages"),
    ("wait", {}, Code.MISSING_CONFIG, "config.durationMs"),
    ("wait", {"durationMs": "soon"}, Code.INVALID_CONFIG, "config.durationMs"),
    ("wait", {"durationMs": -1}, Code.INVALID_CONFIG, "config.durationMs"),
    (
        "wait",
        {"durationMs": 5, "until": "2030-01-01T00:00:00Z"},
        Code.INVALID_CONFIG,
        "config.until",
    ),
    ("approval", {"inputSchema": "object"}, Code.INVALID_SCHEMA, "config.inputSchema"),
    ("approval", {"inputSchema": {"type": "banana"}}, Code.INVALID_SCHEMA, "config.inputSchema"),
    (
        "approval",
        {"inputSchema": {"required": "approved"}},
        Code.INVALID_SCHEMA,
        "config.inputSchema",
    ),
    ("setVariable", {}, Code.MISSING_CONFIG, "config.assign"),
    ("setVariable", {"assign": [1]}, Code.INVALID_CONFIG, "config.assign"),
    ("setVariable", {"assign": {"bad name": 1}}, Code.INVALID_CONFIG, "config.assign.bad name"),
    ("subworkflow", {}, Code.MISSING_CONFIG, "config.workflowId"),
    ("output", {}, Code.MISSING_CONFIG, "config.value"),
    ("fail", {}, Code.MISSING_CONFIG, "config.message"),
    ("fail", {"message": 3}, Code.INVALID_CONFIG, "config.message"),
]


@pytest.mark.parametrize(
    ("node_type", "config", "code", "field"),
    INVALID,
    ids=[f"{t}-{c}-{f}" for t, _, c, f in INVALID],
)
def test_invalid_configs(node_type: str, config: dict[str, Any], code: str, field: str) -> None:
    assert (code, field) in _one(node_type, **config)


def _container(node_type: str, **config: Any) -> list[tuple[str, str]]:
    defn = workflow(
        [start(), node("C", node_type, **config), node("body", "output", parent="C", value=1)],
        [edge("start", "C")],
    )
    return [(d.code, d.field) for d in diagnose(defn)]


@pytest.mark.parametrize(
    "config",
    [
        {"kind": "for", "count": 3},
        {"kind": "for", "count": "{{start.n}}"},
        {"kind": "for", "count": 0},
        {"kind": "forEach", "items": "{{start.list}}"},
        {"kind": "forEach", "items": [1, 2]},
        {"kind": "forEach", "items": {"a": 1}},
        {"kind": "while", "condition": "var.n < 3"},
        {"kind": "doWhile", "condition": "var.n < 3", "maxIterations": 5},
    ],
)
def test_valid_loops(config: dict[str, Any]) -> None:
    assert _container("loop", **config) == []


@pytest.mark.parametrize(
    ("config", "code", "field"),
    [
        ({}, Code.MISSING_CONFIG, "config.kind"),
        ({"kind": "repeat"}, Code.INVALID_CONFIG, "config.kind"),
        ({"kind": "for"}, Code.MISSING_CONFIG, "config.count"),
        ({"kind": "for", "count": "three"}, Code.INVALID_CONFIG, "config.count"),
        ({"kind": "for", "count": 2.5}, Code.INVALID_CONFIG, "config.count"),
        ({"kind": "for", "count": True}, Code.INVALID_CONFIG, "config.count"),
        ({"kind": "forEach"}, Code.MISSING_CONFIG, "config.items"),
        ({"kind": "forEach", "items": 5}, Code.INVALID_CONFIG, "config.items"),
        ({"kind": "forEach", "items": "a b c"}, Code.INVALID_CONFIG, "config.items"),
        ({"kind": "while"}, Code.MISSING_CONFIG, "config.condition"),
        ({"kind": "doWhile", "condition": "var.n <"}, Code.INVALID_EXPRESSION, "config.condition"),
        (
            {"kind": "for", "count": 1, "maxIterations": 0},
            Code.INVALID_CONFIG,
            "config.maxIterations",
        ),
    ],
)
def test_invalid_loops(config: dict[str, Any], code: str, field: str) -> None:
    assert (code, field) in _container("loop", **config)


def test_parallel_configs() -> None:
    assert (
        _container("parallel", kind="count", count=4, maxConcurrency=2, continueOnError=True) == []
    )
    assert _container("parallel", kind="collection", items="{{start.items}}") == []
    assert (Code.INVALID_CONFIG, "config.kind") in _container("parallel", kind="forEach")
    assert (Code.MISSING_CONFIG, "config.count") in _container("parallel", kind="count")
    assert (Code.MISSING_CONFIG, "config.items") in _container("parallel", kind="collection")
    assert (Code.INVALID_CONFIG, "config.maxConcurrency") in _container(
        "parallel", kind="count", count=2, maxConcurrency=0
    )
    assert (Code.INVALID_CONFIG, "config.continueOnError") in _container(
        "parallel", kind="count", count=2, continueOnError="yes"
    )


def test_invalid_jsonata_names_the_field_and_the_parser_position() -> None:
    defn = workflow(
        [start(), node("t", "transform", expression="start.x + (1")], [edge("start", "t")]
    )
    [diag] = diagnose(defn)
    assert (diag.code, diag.node_id, diag.field) == (
        Code.INVALID_EXPRESSION,
        "t",
        "config.expression",
    )
    assert "position" in diag.message and "start.x + (1" in diag.message


def test_invalid_jsonata_in_branches_and_select() -> None:
    found = _one("condition", branches=[{"id": "a", "when": "start.x >"}, {"id": "else"}])
    assert found == [(Code.INVALID_EXPRESSION, "config.branches[0].when")]
    found = _one("router", routes=[{"id": "a"}], select="$string(")
    assert found == [(Code.INVALID_EXPRESSION, "config.select")]


def test_malformed_templates() -> None:
    for bad in ("{{}}", "{{ 1abc }}", "a {{start.x!}} b", "{{start.x}} and {{ unclosed"):
        found = _one("output", value={"nested": [bad]})
        assert found == [(Code.INVALID_TEMPLATE, "config.value.nested[0]")], bad


def test_strings_over_the_limit() -> None:
    limits = Limits(max_string_chars=100, max_expression_chars=50)
    assert _one("output", limits, value="x" * 101) == [(Code.VALUE_TOO_LARGE, "config.value")]
    assert _one("transform", limits, expression="1+" * 30 + "1") == [
        (Code.VALUE_TOO_LARGE, "config.expression")
    ]


def test_config_nested_too_deeply() -> None:
    deep: Any = "leaf"
    for _ in range(10_000):  # far past Python's recursion limit: the walk stops at the depth limit
        deep = {"a": deep}
    found = _one("output", Limits(max_config_depth=20), value=deep)
    assert found == [(Code.VALUE_TOO_LARGE, "config.value" + ".a" * 19)]


def test_retry_and_timeout() -> None:
    from weft_common.workflow import RetryPolicy

    bad = node(
        "t",
        "transform",
        expression="1",
        retry=RetryPolicy(max_attempts=0, backoff_coefficient=0.5),
        timeout_ms=-5,
    )
    diags = diagnose(workflow([start(), bad], [edge("start", "t")]))
    assert {(d.code, d.field) for d in diags} == {
        (Code.INVALID_RETRY, "retry.maxAttempts"),
        (Code.INVALID_RETRY, "retry.backoffCoefficient"),
        (Code.INVALID_TIMEOUT, "timeoutMs"),
    }


def test_the_workflow_input_schema_must_be_a_valid_schema() -> None:
    nodes, edges = [start(), node("o", "output", value="{{start.x}}")], [edge("start", "o")]
    good = {
        "type": "object",
        "required": ["x"],
        "properties": {"x": {"type": "integer", "minimum": 0}},
    }
    assert diagnose(workflow(nodes, edges, input_schema=good)) == []
    [diag] = diagnose(
        workflow(nodes, edges, input_schema={"type": "object", "properties": {"x": {"type": 5}}})
    )
    assert (diag.code, diag.field, diag.node_id) == (Code.INVALID_SCHEMA, "inputSchema", "")
    assert "inputSchema/properties/x/type" in diag.message


_LEAVES = st.sampled_from(
    ["plain", "{{a.b}}", "x {{c}} y", "{{d[0]}}{{e}}", "{{bad", "L" * 30, 1, None, True]
)
_JSON = st.recursive(
    _LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "c", "x-y"]), inner, max_size=3)
    ),
    max_leaves=25,
)


def _walk_plainly(config: dict[str, Any], limits: Limits) -> list[tuple[str, str, Any]]:
    """The documented walk, written the obvious way: top-level strings, then the top-level
    objects and arrays from the last to the first, each depth-first in document order.
    Yields (what, field, value) for each string or container that needs a look."""
    found: list[tuple[str, str, Any]] = []

    def walk(field: str, value: Any, depth: int) -> None:
        if isinstance(value, str):
            if len(value) > limits.max_string_chars:
                found.append(("too large", field, value))
            elif "{{" in value:
                found.append(("template", field, value))
        elif isinstance(value, dict | list):
            if depth >= limits.max_config_depth:
                found.append(("too large", field, value))
                return
            for key, item in value.items() if isinstance(value, dict) else enumerate(value):
                walk(
                    f"{field}[{key}]" if isinstance(value, list) else f"{field}.{key}",
                    item,
                    depth + 1,
                )

    for key, value in config.items():
        if isinstance(value, str):
            walk(f"config.{key}", value, 0)
    for key, value in reversed([(k, v) for k, v in config.items() if isinstance(v, dict | list)]):
        walk(f"config.{key}", value, 1)
    return found


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(["value", "extra", "more", "other"]), _JSON, min_size=1),
    st.integers(2, 6),
)
def test_every_string_in_the_config_is_checked_at_its_field(
    config: dict[str, Any], depth: int
) -> None:
    config.setdefault("value", 1)
    limits = Limits(max_string_chars=20, max_config_depth=depth)
    sink = DiagnosticSink(1000)
    refs = check_node_config(Node(id="o", type="output", config=config), sink, limits)
    problems = [(d.code, d.field) for d in sink.result()]
    walked = _walk_plainly(config, limits)
    templates = [(field, value) for what, field, value in walked if what == "template"]
    # references in walk order (one per {{ }}), unclosed ones reported at their field instead
    assert [(r.field, r.root) for r in refs] == [
        (field, root)
        for field, value in templates
        for root in re.findall(r"\{\{([a-z]+)", value)
        if value != "{{bad"
    ]
    assert [f for code, f in problems if code == Code.INVALID_TEMPLATE] == [
        field for field, value in templates if value == "{{bad"
    ]
    assert [f for code, f in problems if code == Code.VALUE_TOO_LARGE] == [
        field for what, field, _ in walked if what == "too large"
    ]
    assert {code for code, _ in problems} <= {Code.INVALID_TEMPLATE, Code.VALUE_TOO_LARGE}

"""The JSONata sandbox: number/boolean fidelity, errors with positions, time and depth bounds."""

from __future__ import annotations

import time
from typing import Any

import pytest

from weft_executor.expressions import compile_expression, is_truthy, to_json
from weft_executor.handlers.base import NodeFailure
from weft_executor.resolve import ReferenceResolver


def make(data: dict[str, Any], **kw: Any) -> ReferenceResolver:
    return ReferenceResolver(lambda k: data[k], execution_id="e", env_allow=(), **kw)


def test_integers_stay_integers_and_booleans_stay_booleans() -> None:
    r = make({"input": {"x": 3}, "a": 4})
    assert r.evaluate("start.x + 1") == 4 and type(r.evaluate("start.x + 1")) is int
    assert type(r.evaluate("a * 2")) is int and r.evaluate("a * 2") == 8
    assert type(r.evaluate("a / 2")) is int
    assert r.evaluate("a / 8") == 0.5
    assert r.evaluate("a > 3") is True
    assert r.evaluate("a > 5") is False
    assert r.evaluate("[1, 2.0, {'k': 3.0}]") == [1, 2, {"k": 3}]
    assert type(r.evaluate("{'k': 3.0}")["k"]) is int


def test_floats_from_protobuf_like_inputs_come_back_integral() -> None:
    # Values that crossed a proto Struct are doubles; integral ones come back as ints.
    r = make({"input": {"x": 3.0}})
    out = r.evaluate("start.x + 1")
    assert out == 4 and type(out) is int


def test_undefined_is_none_and_strings_are_strings() -> None:
    r = make({"input": {"name": "Ada"}})
    assert r.evaluate("nothing_here") is None
    assert r.evaluate("start.missing") is None
    assert r.evaluate("'hi ' & start.name") == "hi Ada"
    assert r.evaluate("$string(42)") == "42"


def test_syntax_error_names_expression_and_position() -> None:
    r = make({})
    with pytest.raises(NodeFailure) as info:
        r.evaluate("a + ")
    assert info.value.code == "EXPRESSION_ERROR"
    assert "'a + '" in info.value.message and "position" in info.value.message
    assert info.value.retryable is False


def test_runtime_error_names_the_expression() -> None:
    r = make({"a": 1})
    with pytest.raises(NodeFailure) as info:
        r.evaluate("a + 'x'")
    assert info.value.code == "EXPRESSION_ERROR"
    assert "a + 'x'" in info.value.message


def test_infinite_tail_recursion_hits_the_time_bound() -> None:
    r = make({}, timeout_ms=100)
    started = time.perf_counter()
    with pytest.raises(NodeFailure) as info:
        r.evaluate("($f := function($n){ $f($n + 1) }; $f(1))")
    assert info.value.code == "EXPRESSION_TIMEOUT"
    assert "100 ms" in info.value.message
    assert time.perf_counter() - started < 5


def test_deep_recursion_hits_the_depth_bound() -> None:
    r = make({}, max_depth=200)
    with pytest.raises(NodeFailure) as info:
        r.evaluate("($f := function($n){ $n > 0 ? $f($n - 1) + 1 : 0 }; $f(100000))")
    assert info.value.code == "EXPRESSION_ERROR"
    assert "depth" in info.value.message


def test_bounded_recursion_within_limits_succeeds() -> None:
    r = make({})
    assert r.evaluate("($f := function($n){ $n > 0 ? $f($n - 1) + 1 : 0 }; $f(20))") == 20


def test_each_evaluation_gets_a_fresh_time_budget() -> None:
    # The library's own Timebox starts its clock at parse time; ours must not.
    r = make({"a": 1}, timeout_ms=50)
    assert r.evaluate("a + 1") == 2
    time.sleep(0.1)
    assert r.evaluate("a + 1") == 2


def test_compiled_form_is_cached_and_lists_its_roots() -> None:
    c = compile_expression("$exists(big) ? big.x : small[v > 1].w & $.other & env.NAME")
    assert c is compile_expression("$exists(big) ? big.x : small[v > 1].w & $.other & env.NAME")
    assert {"big", "small", "other", "env"} <= set(c.roots)
    assert "x" not in c.roots and "w" not in c.roots
    assert c.env_names == ("NAME",)


def test_truthiness_follows_jsonata() -> None:
    assert [is_truthy(v) for v in (True, 1, "a", [1], {"a": 1})] == [True] * 5
    assert [is_truthy(v) for v in (False, 0, "", [], None)] == [False] * 5


def test_to_json_keeps_big_floats_as_floats() -> None:
    assert to_json(2.0**60) == 2.0**60 and type(to_json(2.0**60)) is float
    assert to_json({"a": [1.0, 1.5]}) == {"a": [1, 1.5]}


CONTEXTS: list[dict[str, Any]] = [
    {"a": {"b": {"c": 1.0}}},
    {"a": {"b": {"c": [1, 2]}}},
    {"a": {"b": [{"c": 1}, {"c": 2}]}},
    {"a": [{"b": {"c": 3}}]},
    {"a": {"b": None}},
    {"a": {"b": "text"}},
    {"a": 5},
    {"a": None},
    {"a": {"b": {"c": {"d": [True]}}}},
    {"a": {"b": {"c": []}}},
    {},
]


@pytest.mark.parametrize("expression", ["a", "a.b", "a.b.c", "'lit'", "42", "true", "null", "2.5"])
@pytest.mark.parametrize("index", range(len(CONTEXTS)))
def test_fast_paths_agree_with_the_interpreter(expression: str, index: int) -> None:
    context = CONTEXTS[index]
    compiled = compile_expression(expression)
    fast = compiled.evaluate(lambda k: context[k], timeout_ms=1000, max_depth=200)
    compiled.budget.reset(1000, 200)
    slow = to_json(compiled.program.evaluate(dict(context)))
    assert fast == slow and type(fast) is type(slow)


def test_threads_get_their_own_compiled_programs() -> None:
    import threading

    here = compile_expression("a + 1")
    there: list[Any] = []
    t = threading.Thread(target=lambda: there.append(compile_expression("a + 1")))
    t.start()
    t.join()
    assert there[0] is not here
    assert there[0].evaluate(lambda k: {"a": 1}[k], timeout_ms=1000, max_depth=200) == 2

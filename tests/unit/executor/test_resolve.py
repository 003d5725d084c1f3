"""ReferenceResolver: templates (SPEC section 2), env allow-list, roots for JSONata."""

from __future__ import annotations

from typing import Any

import pytest

from weft_executor.handlers.base import NodeFailure
from weft_executor.resolve import ReferenceResolver

INPUT = {"n": 5, "x": 3, "obj": {"a": 1, "list": [{"v": "x"}, {"v": "y"}]}, "flag": True}


def make(
    roots: dict[str, Any] | None = None,
    *,
    env_allow: tuple[str, ...] = (),
    environ: dict[str, str] | None = None,
) -> ReferenceResolver:
    data = {"input": INPUT, **(roots or {})}

    def lookup(name: str) -> Any:
        return data[name]  # KeyError for absent or skipped roots, like the engine

    return ReferenceResolver(
        lookup, execution_id="ex-1", env_allow=env_allow, environ=environ or {}
    )


def test_whole_template_keeps_the_json_type() -> None:
    r = make({"n1": {"k": [1, 2]}})
    assert r.render("{{start.obj}}") == INPUT["obj"]
    assert r.render("{{start.n}}") == 5
    assert r.render("{{ start.flag }}") is True
    assert r.render("{{n1.k}}") == [1, 2]
    assert r.render("{{input.obj.list[1].v}}") == "y"


def test_template_inside_text_renders_strings_as_is_and_others_as_compact_json() -> None:
    r = make({"n1": None})
    assert r.render("n={{start.n}} ok") == "n=5 ok"
    assert r.render("v={{start.obj.list[0].v}}") == "v=x"
    assert r.render("obj={{start.obj.list[1]}}") == 'obj={"v":"y"}'
    assert r.render("{{start.flag}}!") == "true!"
    assert r.render("{{start.n}}{{start.x}}") == "53"
    assert r.render("missing={{nope.a}}") == "missing=null"


def test_render_walks_objects_and_arrays_and_leaves_other_values_alone() -> None:
    r = make()
    config = {
        "a": ["{{start.n}}", "t {{start.n}}", 7, None],
        "b": {"c": "{{execution.id}}"},
        "d": 1.5,
    }
    assert r.render(config) == {"a": [5, "t 5", 7, None], "b": {"c": "ex-1"}, "d": 1.5}
    assert r.render("plain text") == "plain text"


def test_deep_paths_and_missing_paths_resolve_to_null() -> None:
    r = make({"fetch": {"body": {"lines": [{"qty": 2}, {"qty": 3}]}}})
    assert r.render("{{fetch.body.lines[1].qty}}") == 3
    assert r.render("{{fetch.body.lines[-1].qty}}") == 3
    assert r.render("{{fetch.body.lines[9].qty}}") is None
    assert r.render("{{fetch.body.nothing.deeper}}") is None
    assert r.render("{{fetch.body.lines.qty}}") is None  # a name on an array is not a path
    assert r.render("{{fetch.body['lines'][0]['qty']}}") == 2


def test_skipped_or_absent_root_is_null_in_templates_and_absent_in_jsonata() -> None:
    r = make({"ran": "yes"})  # "skipped" is not in the lookup: the engine raises KeyError
    assert r.render("{{skipped}}") is None
    assert r.render("{{skipped.a.b}}") is None
    assert r.render("x={{skipped}}") == "x=null"
    assert r.evaluate("$exists(skipped)") is False
    assert r.evaluate("$exists(ran)") is True
    assert r.evaluate("$exists(skipped) ? skipped : ran") == "yes"


def test_start_and_input_both_mean_the_execution_input() -> None:
    r = make()
    assert r.render("{{start.x}}") == r.render("{{input.x}}") == 3
    assert r.evaluate("start.x + input.x") == 6


def test_a_start_root_provided_by_the_engine_wins() -> None:
    r = make({"start": {"x": 10}})
    assert r.render("{{start.x}}") == 10


def test_execution_id() -> None:
    r = make()
    assert r.render("{{execution.id}}") == "ex-1"
    assert r.render("id={{execution.id}}") == "id=ex-1"
    assert r.evaluate("execution.id") == "ex-1"


def test_env_allowed_by_name_and_prefix() -> None:
    environ = {"ORDERS_URL": "http://o", "WEFT_PUBLIC_GREETING": "hi", "OTHER": "no"}
    r = make(env_allow=("ORDERS_URL", "WEFT_PUBLIC_", "APP*"), environ=environ | {"APPX": "1"})
    assert r.render("{{env.ORDERS_URL}}/orders") == "http://o/orders"
    assert r.render("{{env.WEFT_PUBLIC_GREETING}}") == "hi"
    assert r.render("{{env.APPX}}") == "1"
    assert r.render("{{env.WEFT_PUBLIC_UNSET}}") is None
    assert r.evaluate("env.WEFT_PUBLIC_GREETING & ' there'") == "hi there"


@pytest.mark.parametrize(
    "use",
    [
        lambda r: r.render("{{env.WEFT_SECRET_TOKEN}}"),
        lambda r: r.render("Bearer {{env.WEFT_SECRET_TOKEN}}"),
        lambda r: r.render({"headers": {"a": "{{env.WEFT_SECRET_TOKEN}}"}}),
        lambda r: r.evaluate("env.WEFT_SECRET_TOKEN"),
        lambda r: r.evaluate("$uppercase(env.WEFT_SECRET_TOKEN)"),
    ],
)
def test_env_not_allowed_fails_and_never_shows_the_value(use: Any) -> None:
    secret = "s3cr3t-value-123"
    r = make(env_allow=("WEFT_PUBLIC_",), environ={"WEFT_SECRET_TOKEN": secret})
    with pytest.raises(NodeFailure) as info:
        use(r)
    err = info.value
    assert err.code == "ENV_NOT_ALLOWED"
    assert err.retryable is False
    assert "WEFT_SECRET_TOKEN" in err.message
    assert secret not in repr(err.to_error("n")) and secret not in str(err)


def test_env_values_are_never_read_for_refused_names() -> None:
    reads: list[str] = []

    class Environ(dict[str, str]):
        def get(self, key: str, default: Any = None) -> Any:
            reads.append(key)
            return super().get(key, default)

        def __getitem__(self, key: str) -> str:
            reads.append(key)
            return super().__getitem__(key)

    environ = Environ(SECRET="x", WEFT_PUBLIC_A="a")
    r = ReferenceResolver(
        lambda k: {}[k], execution_id="e", env_allow=("WEFT_PUBLIC_",), environ=environ
    )
    with pytest.raises(NodeFailure):
        r.render("{{env.SECRET}}")
    with pytest.raises(NodeFailure):
        r.evaluate("env.WEFT_PUBLIC_A & env.SECRET")
    assert "SECRET" not in reads


def test_jsonata_sees_only_named_env_entries() -> None:
    r = make(env_allow=("WEFT_PUBLIC_",), environ={"WEFT_PUBLIC_A": "a", "WEFT_PUBLIC_B": "b"})
    # $keys(env) lists what the expression names, never the whole allowed set.
    assert r.evaluate("[$keys(env), env.WEFT_PUBLIC_A]") == ["WEFT_PUBLIC_A", "a"]


def test_whole_env_reference_is_refused() -> None:
    r = make(env_allow=("*",), environ={"A": "1"})
    with pytest.raises(NodeFailure) as info:
        r.render("{{env}}")
    assert info.value.code == "ENV_NOT_ALLOWED"


def test_malformed_template_names_the_text() -> None:
    r = make()
    with pytest.raises(NodeFailure) as info:
        r.render("{{ 1abc }}")
    assert info.value.code == "TEMPLATE_ERROR"
    assert "1abc" in info.value.message


def test_evaluate_uses_only_roots_the_expression_names() -> None:
    asked: list[str] = []
    data = {"input": {"x": 1}, "a": 2, "b": 3}

    def lookup(name: str) -> Any:
        asked.append(name)
        return data[name]

    r = ReferenceResolver(lookup, execution_id="e", env_allow=())
    assert r.evaluate("a + 1") == 3
    assert asked == ["a"]

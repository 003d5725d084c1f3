"""The fast JSONata subset reader agrees with the full parser whenever it answers."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonata import parser

from weft_dag_builder.expressions import analyze_expression, root_names
from weft_dag_builder.jsonata_subset import subset_root_names

NAMES = [
    "a",
    "b",
    "start",
    "fetch",
    "loop",
    "var",
    "x_1",
    "and",
    "or",
    "in",
    "true",
    "null",
    "function",
]
ATOMS = [
    *NAMES,
    "$f",
    "$count",
    "$",
    "$$",
    "1",
    "0",
    "2.5",
    "1e3",
    "1e999",
    "01",
    "'s'",
    '"t"',
    "'a\\'b'",
    "`q`",
    "*",
    "**",
    "%",
    "#",
    "@",
    "^",
    "|",
    "~>",
    ":=",
    ";",
    "..",
    "??",
    "?:",
    "λ",
    "'",
    '"',
    "!",
    "~",
    "é",
    "\v",
    "a'b'",
    "x$",
    "2e3",
]
OPS = [
    ".",
    "[",
    "]",
    "(",
    ")",
    "{",
    "}",
    ",",
    "?",
    ":",
    "+",
    "-",
    "*",
    "/",
    "%",
    "&",
    "=",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    " and ",
    " or ",
    " in ",
]


def _reference(source: str) -> set[str] | None:
    """The full parser's verdict: root names, or None when it rejects the expression."""
    try:
        ast = parser.Parser().parse(source)
    except Exception:
        return None
    if getattr(ast, "errors", None):
        return None
    return root_names(ast)


def _expressions() -> st.SearchStrategy[str]:
    name = st.sampled_from(["a", "b", "start", "fetch", "items", "price"])
    literal = st.sampled_from(["1", "2.5", "'s'", '"t"', "true", "null", "0"])
    var = st.sampled_from(["$f", "$count", "$exists", "$string"])

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        binop = st.sampled_from(
            ["+", "-", "*", "/", "%", "&", "=", "!=", "<", "<=", ">", ">=", "and", "or", "in"]
        )
        return st.one_of(
            st.tuples(inner, binop, inner).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
            st.tuples(inner, name).map(lambda t: f"{t[0]}.{t[1]}"),
            st.tuples(inner, inner).map(lambda t: f"{t[0]}[{t[1]}]"),
            st.tuples(var, st.lists(inner, max_size=3)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
            st.tuples(inner, inner, inner).map(lambda t: f"{t[0]} ? {t[1]} : {t[2]}"),
            st.tuples(inner, inner).map(lambda t: f"{t[0]} ? {t[1]}"),
            inner.map(lambda e: f"({e})"),
            inner.map(lambda e: f"-{e}"),
            st.lists(inner, min_size=1, max_size=3).map(lambda xs: f"[{', '.join(xs)}]"),
            st.tuples(inner, inner).map(lambda t: "{" + f"{t[0]}: {t[1]}" + "}"),
        )

    return st.recursive(st.one_of(name, literal, var), extend, max_leaves=12)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_expressions())
def test_structured_expressions_agree(source: str) -> None:
    quick = subset_root_names(source)
    if quick is not None:
        assert _reference(source) == quick, source


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(ATOMS + OPS), min_size=1, max_size=9), st.booleans())
def test_token_soup_never_accepted_wrongly(tokens: list[str], spaced: bool) -> None:
    source = (" " if spaced else "").join(tokens)
    quick = subset_root_names(source)
    if quick is not None:
        assert _reference(source) == quick, source


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_expressions(), st.data())
def test_near_misses_never_accepted_wrongly(source: str, data: st.DataObject) -> None:
    """One character inserted, deleted or replaced: the reader's token classes and its state
    machine (brackets, steps, ternaries, object pairs) must refuse or agree."""
    pos = data.draw(st.integers(min_value=0, max_value=len(source)))
    edit = data.draw(st.sampled_from(["insert", "delete", "replace"]))
    char = data.draw(st.sampled_from(list("()[]{}.,:?-+'\"$ a1e_λ`")))
    if edit == "insert":
        mutated = source[:pos] + char + source[pos:]
    elif edit == "delete":
        mutated = source[:pos] + source[pos + 1 :]
    else:
        mutated = source[:pos] + char + source[pos + 1 :]
    quick = subset_root_names(mutated)
    if quick is not None:
        assert _reference(mutated) == quick, mutated


@pytest.mark.parametrize(
    "source",
    [
        # every bracket level, step shape and ternary/pair combination the reader knows
        "a ? b : c ? d : e",
        "a ? b ? c : d : e",
        "a ? b",
        "{a ? b : c: d}",
        "{'k': x ? y, 'l': z}",
        "$f(a ? b, c)",
        "$f()",
        "$f()[0].x",
        "a.$f()",
        "a.$f(b).c",
        "a.(b + c).d",
        "a.b[c.d > e][0].f",
        "[a, [b, {'k': c}]]",
        "($f(a)).b",
        "-(a)",
        "- -a.b",
        "x.$v[0]",
        "'s' & \"t\" & 1.5e3 & 2E-2",
        "(a ? b : c)[0]",
        "[{'k': a}][0].k = 1 ? x : y",
        "a in $f(b) and not_x",
    ],
)
def test_structures_the_reader_accepts_agree(source: str) -> None:
    quick = subset_root_names(source)
    assert quick is not None, source
    assert quick == _reference(source), source


@pytest.mark.parametrize(
    "source",
    [
        # structure errors and shapes the reader leaves to the full parser, one per rule it checks
        "a ? b : c : d",
        "{a ? b, c: d}",
        "{a}",
        "{a: b: c}",
        "{}",
        "[]",
        "()",
        "a[]",
        "(a, b)",
        "a[1, 2]",
        "[a,]",
        "$f(a,)",
        "$f(,)",
        "$f(-)",
        "a.1",
        "a.true",
        "1.5.x",
        "'s'[0]",
        "'s'.x",
        "{'k': 1}[0]",
        "a.-b",
        "a.[b]",
        "a.{'k': b}",
        "a.$v",
        "a.$v + 1",
        "$f(x)(y)",
        "a(x)",
        "a.b(x)",
        "(a)(x)",
        "a b",
        "a +",
        "+ a",
        "a..b",
        "a)",
        "(a",
        "a]",
        "a}",
        ":a",
        "a :",
        "a ? : b",
        "$",
        "$$",
        "$1",
        "$a$b",
        "1e",
        "1e999",
        "01",
        "'a\\'b'",
        "'abc",
        "a.function",
        "function",
        "and",
        "a and",
        "a.and",
        "a.in.b",
    ],
)
def test_structures_the_reader_refuses_go_to_the_full_parser(source: str) -> None:
    assert subset_root_names(source) is None, source
    expected = _reference(source)
    if expected is None:
        with pytest.raises(ValueError):
            analyze_expression(source)
    else:
        assert set(analyze_expression(source)) == expected


def test_nesting_beyond_the_bound_goes_to_the_full_parser() -> None:
    assert subset_root_names("(" * 100 + "a" + ")" * 100) == {"a"}
    assert subset_root_names("(" * 101 + "a" + ")" * 101) is None
    assert subset_root_names("-" * 100 + "a") == {"a"}
    assert subset_root_names("-" * 101 + "a") is None


@pytest.mark.parametrize(
    "source",
    [
        "start.x + 1",
        "a.b[c > 1].d",
        "$exists(a) ? a : b",
        "{'k': a.b}",
        "[a, b][0]",
        "-a.b",
        "a.$f(b)",
        "$count(fetch.body.items[price > 10]) > 2 and var.go",
        "a in [1, 2]",
        "$now()",
    ],
)
def test_common_expressions_take_the_fast_path(source: str) -> None:
    quick = subset_root_names(source)
    assert quick is not None
    assert quick == _reference(source)


@pytest.mark.parametrize(
    "source",
    [
        "$$.a",
        "$.a",
        "a ~> $f()",
        "a.'b'",
        "`a b`.c",
        "function($x){$x}",
        "(a; b)",
        "a{b: c}",
        "**.x",
        "a.*",
        "1e999",
        "a[]",
        # JSONata names run on through "$" and quotes: one odd name each
        "'s'or$count",
        "1e3and's'",
        "a$b + 1",
        "x and$y",
    ],
)
def test_constructs_outside_the_subset_go_to_the_full_parser(source: str) -> None:
    assert subset_root_names(source) is None
    expected = _reference(source)
    if expected is None:
        with pytest.raises(ValueError):
            analyze_expression(source)
    else:
        assert set(analyze_expression(source)) == expected

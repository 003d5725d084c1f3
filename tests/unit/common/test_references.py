"""Template parsing (SPEC section 2) shared by validation and evaluation."""

from __future__ import annotations

import pytest

from weft_common.references import TemplateError, compile_template, iter_references, parse_reference
from weft_common.settings import env_name_allowed


def test_whole_template_is_one_reference() -> None:
    tpl = compile_template("{{ start.obj.list[1].v }}")
    assert tpl.whole is not None
    assert tpl.whole.root == "start"
    assert tpl.whole.path == ("obj", "list", 1, "v")


def test_text_template_keeps_literal_parts() -> None:
    tpl = compile_template("n={{start.n}} ok {{var.x}}")
    assert tpl.whole is None
    assert [p if isinstance(p, str) else p.root for p in tpl.parts] == ["n=", "start", " ok ", "var"]


def test_literal_string_has_no_references() -> None:
    assert compile_template("plain").is_literal


def test_quoted_keys() -> None:
    assert parse_reference("fetch.body['content-type']").path == ("body", "content-type")


@pytest.mark.parametrize("text", ["{{ 1abc }}", "{{ a..b }}", "{{ a[x] }}", "{{}}"])
def test_malformed_references_are_refused_with_the_text(text: str) -> None:
    with pytest.raises(TemplateError):
        compile_template(text)


def test_iter_references_names_the_field() -> None:
    config = {"url": "{{start.u}}/x", "body": {"list": ["a", "{{ fetch.body }}"]}}
    found = [(f, r.root) for f, r in iter_references(config)]
    assert found == [("config.url", "start"), ("config.body.list[1]", "fetch")]


def test_iter_references_error_names_the_field() -> None:
    with pytest.raises(TemplateError, match=r"config\.headers\.x"):
        list(iter_references({"headers": {"x": "{{ 9 }}"}}))


@pytest.mark.parametrize(
    ("name", "allow", "ok"),
    [
        ("WEFT_PUBLIC_GREETING", ("WEFT_PUBLIC_",), True),
        ("WEFT_SECRET_TOKEN", ("WEFT_PUBLIC_",), False),
        ("API_KEY", ("API_KEY",), True),
        ("API_KEY_2", ("API_KEY",), False),
        ("OPENAI_KEY", ("OPENAI*",), True),
        ("ANY", (), False),
    ],
)
def test_env_allow_list(name: str, allow: tuple[str, ...], ok: bool) -> None:
    assert env_name_allowed(name, allow) is ok

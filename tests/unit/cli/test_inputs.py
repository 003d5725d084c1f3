"""`--input key=value | @file.json` parsing of the weft CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from weft_cli.inputs import UsageError, parse_inputs


def test_values_are_json_when_they_parse_else_text() -> None:
    assert parse_inputs(["n=3", "ok=true", "name=ada", "tags=[\"a\",1]", "empty=", "pi=3.5"]) == {
        "n": 3, "ok": True, "name": "ada", "tags": ["a", 1], "empty": "", "pi": 3.5}
    assert parse_inputs(["text=a=b"]) == {"text": "a=b"}  # only the first '=' splits


def test_dotted_keys_build_objects() -> None:
    assert parse_inputs(["a.b=1", "a.c.d=x"]) == {"a": {"b": 1, "c": {"d": "x"}}}
    with pytest.raises(UsageError, match="already a value"):
        parse_inputs(["a=1", "a.b=2"])


def test_files(tmp_path: Path) -> None:
    obj = tmp_path / "in.json"
    obj.write_text(json.dumps({"x": 1, "y": 2}))
    arr = tmp_path / "arr.json"
    arr.write_text("[1, 2]")
    assert parse_inputs([f"@{arr}"]) == [1, 2]  # alone: any JSON value
    assert parse_inputs([f"@{obj}", "y=3"]) == {"x": 1, "y": 3}  # merged in order
    with pytest.raises(UsageError, match="JSON object"):
        parse_inputs([f"@{arr}", "y=3"])
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(UsageError, match="line 1"):
        parse_inputs([f"@{bad}"])
    with pytest.raises(UsageError, match="cannot read"):
        parse_inputs([f"@{tmp_path / 'missing.json'}"])


def test_malformed_pairs() -> None:
    for item in ("novalue", "=x"):
        with pytest.raises(UsageError, match="key=value"):
            parse_inputs([item])
    assert parse_inputs([]) == {}

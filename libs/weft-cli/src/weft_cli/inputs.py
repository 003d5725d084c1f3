"""``--input key=value`` / ``--input @file.json``: the execution input the CLI sends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["UsageError", "load_json_file", "parse_inputs"]


class UsageError(Exception):
    """A mistake on the command line (exit code 3)."""


def load_json_file(path: str) -> Any:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None


def parse_inputs(items: list[str]) -> Any:
    """Merge ``@file.json`` objects and ``key=value`` pairs (values parsed as JSON when they are,
    else kept as text) into one input; dotted keys (``a.b=1``) build nested objects."""
    result: Any = {}
    for item in items:
        if item.startswith("@"):
            loaded = load_json_file(item[1:])
            if len(items) == 1:
                return loaded
            if not isinstance(loaded, dict):
                raise UsageError(f"{item}: must hold a JSON object to combine with other --input values")
            result.update(loaded)
            continue
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--input {item!r}: expected key=value or @file.json")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target = result
        *parents, leaf = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise UsageError(f"--input {item!r}: {part} is already a value")
        target[leaf] = value
    return result

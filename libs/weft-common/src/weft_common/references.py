"""``{{ ref }}`` templates (SPEC section 2): parsing, shared by validation and evaluation.

A string that is exactly one template keeps the referenced value's JSON type; a template inside
longer text renders (strings as is, other values as compact JSON). A reference is a root name
(``start``, ``input``, a node id, ``var``, ``env``, ``loop``, ``parallel``, ``execution`` or a
container id) followed by ``.name`` and ``[index]`` accessors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = [
    "BUILTIN_ROOTS",
    "Reference",
    "Template",
    "TemplateError",
    "compile_template",
    "iter_references",
    "parse_reference",
]

BUILTIN_ROOTS = frozenset({"input", "var", "env", "loop", "parallel", "execution"})

_TEMPLATE = re.compile(r"\{\{\s*(.*?)\s*\}\}", re.S)
_TOKEN = re.compile(r"""\.([A-Za-z_$][A-Za-z0-9_$-]*)|\[\s*(-?\d+)\s*\]|\[\s*(["'])(.*?)\3\s*\]""")
_ROOT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class TemplateError(ValueError):
    """A malformed reference; the message quotes the offending text."""


@dataclass(frozen=True, slots=True)
class Reference:
    root: str
    path: tuple[str | int, ...]
    text: str

    def __str__(self) -> str:
        return "{{" + self.text + "}}"


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed string: ``whole`` when the string is exactly one reference, else text ``parts``."""

    source: str
    whole: Reference | None
    parts: tuple[str | Reference, ...]

    @property
    def is_literal(self) -> bool:
        return self.whole is None and all(isinstance(p, str) for p in self.parts)

    @property
    def references(self) -> tuple[Reference, ...]:
        if self.whole is not None:
            return (self.whole,)
        return tuple(p for p in self.parts if isinstance(p, Reference))


@lru_cache(maxsize=4096)
def parse_reference(text: str) -> Reference:
    """Parse ``a.b[0].c``; raises TemplateError naming the text."""
    text = text.strip()
    m = _ROOT.match(text)
    if not m:
        raise TemplateError(f"invalid reference {{{{{text}}}}}: must start with a name")
    path: list[str | int] = []
    pos = m.end()
    while pos < len(text):
        t = _TOKEN.match(text, pos)
        if not t:
            raise TemplateError(f"invalid reference {{{{{text}}}}} at position {pos}")
        if t.group(1) is not None:
            path.append(t.group(1))
        elif t.group(2) is not None:
            path.append(int(t.group(2)))
        else:
            path.append(t.group(4))
        pos = t.end()
    return Reference(root=m.group(0), path=tuple(path), text=text)


def _find_templates(source: str) -> list[tuple[int, int, str]]:
    """``(start, end, inner text)`` of each ``{{ … }}``: what ``_TEMPLATE.finditer`` finds, in
    linear time (the regex rescans to the end of the string for every unclosed ``{{`` and
    backtracks over whitespace runs, which is quadratic on hostile input)."""
    found: list[tuple[int, int, str]] = []
    pos = 0
    while True:
        start = source.find("{{", pos)
        if start == -1:
            return found
        close = source.find("}}", start + 2)
        if close == -1:
            return found
        found.append((start, close + 2, source[start + 2 : close].strip()))
        pos = close + 2


@lru_cache(maxsize=8192)
def compile_template(source: str) -> Template:
    """Parse a config string once (cached); raises TemplateError on a malformed reference."""
    if "{{" not in source:
        return Template(source=source, whole=None, parts=(source,))
    matches = _find_templates(source)
    if len(matches) == 1 and matches[0][:2] == (0, len(source)):
        return Template(source=source, whole=parse_reference(matches[0][2]), parts=())
    parts: list[str | Reference] = []
    pos = 0
    for start, end, inner in matches:
        if start > pos:
            parts.append(source[pos:start])
        parts.append(parse_reference(inner))
        pos = end
    if pos < len(source):
        parts.append(source[pos:])
    return Template(source=source, whole=None, parts=tuple(parts))


def iter_references(value: Any, field: str = "config") -> Iterator[tuple[str, Reference]]:
    """Every reference in a JSON value, with the dotted field path it sits at.

    Raises TemplateError (with the field path in the message) on a malformed template.
    """
    if isinstance(value, str):
        if "{{" in value:
            try:
                tpl = compile_template(value)
            except TemplateError as exc:
                raise TemplateError(f"{field}: {exc}") from None
            for ref in tpl.references:
                yield field, ref
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from iter_references(v, f"{field}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from iter_references(v, f"{field}[{i}]")

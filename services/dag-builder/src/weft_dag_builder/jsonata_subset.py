"""A fast reader for the common subset of JSONata: paths, predicates, arithmetic, comparison,
boolean and string operators, ternaries, function calls, array and object constructors.

Parsing with the full JSONata parser costs ~0.3-0.7 ms per expression, which dominates compiling
a 10,000-node workflow. This reader only ever *accepts*: it answers the root names of an
expression it fully understands, and ``None`` for anything else (an unsupported construct or a
syntax error), in which case the caller asks the real parser, whose verdict and error message
are authoritative. Its answers are checked against the real parser by property-based tests
(tests/unit/dag_builder/test_jsonata_subset.py).
"""

from __future__ import annotations

import math
import re

__all__ = ["subset_root_names"]

# One token per match; only the four whitespace characters are skipped (findall steps over
# them), and any other character outside the subset matches the last alternative. A JSONata name
# runs on until whitespace or an operator character (so "a$b" and "and's'" are single names):
# names take in everything up to there, and any that is not a plain identifier is refused below.
_TOKEN = re.compile(
    r"""(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"""
    r"""|'[^'\\]*'|"[^"\\]*"|\$?[A-Za-z_][^ \t\r\n.\[\]{}(),@#;:?+\-*/%|=<>^&!~]*|!=|<=|>=|[^ \t\r\n]"""
)
_OPERATORS = frozenset(".()[],?:+-*/%&=<>{}") | {"!=", "<=", ">="}
_IDENTIFIER = re.compile(r"\$?[A-Za-z_][A-Za-z0-9_]*")
_DIGITS = frozenset("0123456789")
# The simplest and most common shape, checked by one regular expression: operands (optionally
# negated) joined by binary operators, where an operand is a literal or a dotted path of plain
# names (``fetch.body.total > var.threshold``, ``'a: ' & b.c``). No brackets, no exponents.
_WS = r"[ \t\r\n]*"
# What may follow a name for JSONata to end it there: whitespace, an operator character, the end.
_ENDS = r"(?=[ \t\r\n.\[\]{}(),@#;:?+\-*/%|=<>^&!~]|\Z)"
_PLAIN = rf"(?!(?:and|or|in|true|false|null|function){_ENDS})[A-Za-z_][A-Za-z0-9_]*{_ENDS}"
_OPERAND = (
    rf"(?:-{_WS}){{0,100}}(?:(?:\$[A-Za-z_][A-Za-z0-9_]*{_ENDS}|{_PLAIN})(?:{_WS}\.{_WS}{_PLAIN})*"
    r"|(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?![0-9A-Za-z_.])|'[^'\\]*'|\"[^\"\\]*\""
    rf"|(?:true|false|null){_ENDS})"
)
_BINARY = rf"(?:!=|<=|>=|[-+*/%&=<>]|(?:and|or|in){_ENDS})"
_SIMPLE = re.compile(rf"{_WS}{_OPERAND}(?:{_WS}{_BINARY}{_WS}{_OPERAND})*{_WS}")
# In a simple expression, a name not preceded by "." (or "$") is the first step of a path.
_SIMPLE_NAMES = re.compile(r"'[^']*'|\"[^\"]*\"|(\.[ \t\r\n]*|\$)?([A-Za-z_][A-Za-z0-9_]*)")
_NOT_ROOTS = frozenset({"and", "or", "in", "true", "false", "null"})

# Binding powers as in JSONata's parser.
_INFIX = {
    ".": 75, "[": 80, "(": 80, "*": 60, "/": 60, "%": 60, "+": 50, "-": 50, "&": 50,
    "=": 40, "!=": 40, "<": 40, "<=": 40, ">": 40, ">=": 40, "in": 40, "and": 30, "or": 25,
    "?": 20,
}
_KEYWORD_OPS = frozenset({"and", "or", "in"})
_VALUES = frozenset({"true", "false", "null"})
_MAX_TOKENS = 50_000  # bounded by the expression size limit anyway; the reader is linear
_MAX_NESTING = 100  # deeper nesting goes to the full parser

# Token kinds: an operator is its own text; other tokens are one of these (no operator is).
_NAME, _VAR, _LIT, _END = "N", "V", "L", "E"
# What a parsed operand is (decides which operators may follow it).
_K_NAME, _K_PATH, _K_VAR, _K_CALL, _K_BLOCK, _K_ARRAY, _K_LIT, _K_OTHER = range(8)
_DOT_LEFT = frozenset({_K_NAME, _K_PATH, _K_VAR, _K_CALL, _K_BLOCK, _K_ARRAY})
_STEP = frozenset({_K_NAME, _K_PATH, _K_CALL, _K_BLOCK})


class _Unsupported(Exception):
    """Outside the subset (or invalid): let the real parser decide."""


def _tokenize(source: str) -> tuple[list[str], list[str]]:
    """Token kinds and texts (names keep their text; the rest is not needed)."""
    kinds: list[str] = []
    names: list[str] = []
    kind = kinds.append
    name = names.append
    for text in _TOKEN.findall(source):
        first = text[0]
        if first in _DIGITS:
            if ("e" in text or "E" in text) and not math.isfinite(float(text)):
                raise _Unsupported  # JSONata rejects numbers out of range
            kind(_LIT)
            name("")
        elif first.isascii() and (first.isalpha() or first == "_"):
            if not _IDENTIFIER.fullmatch(text):
                raise _Unsupported
            if text in _KEYWORD_OPS:
                kind(text)
            elif text in _VALUES:
                kind(_LIT)
            elif text == "function":
                raise _Unsupported
            else:
                kind(_NAME)
            name(text)
        elif text in _OPERATORS:
            kind(text)
            name("")
        elif first == "$":
            if not _IDENTIFIER.fullmatch(text):
                raise _Unsupported  # $ and $$ (the context and the root)
            kind(_VAR)
            name("")
        elif first == "'" or first == '"':
            if len(text) < 2 or text[-1] != first:
                raise _Unsupported  # an unterminated string
            kind(_LIT)
            name("")
        else:
            raise _Unsupported  # a character outside the subset
    if len(kinds) > _MAX_TOKENS:
        raise _Unsupported
    kind(_END)
    return kinds, names


class _Reader:
    """A Pratt parser over token kinds that records root names and what each operand is."""

    __slots__ = ("depth", "kinds", "names", "pos", "roots")

    def __init__(self, kinds: list[str], names: list[str]) -> None:
        self.kinds = kinds
        self.names = names
        self.pos = 0
        self.roots: set[str] = set()
        self.depth = 0

    def take(self, op: str) -> None:
        if self.kinds[self.pos] != op:
            raise _Unsupported
        self.pos += 1

    def expression(self, rbp: int, at_root: bool) -> int:
        self.depth += 1
        if self.depth > _MAX_NESTING:
            raise _Unsupported
        left = self.nud(at_root)
        kinds = self.kinds
        while True:
            op = kinds[self.pos]
            bp = _INFIX.get(op)
            if bp is None or bp <= rbp:
                break  # the caller checks what follows (a closing bracket, the end...)
            self.pos += 1
            left = self.led(op, left, at_root)
        self.depth -= 1
        return left

    def nud(self, at_root: bool) -> int:
        pos = self.pos
        kind = self.kinds[pos]
        self.pos = pos + 1
        if kind == _NAME:
            if at_root:
                self.roots.add(self.names[pos])
            return _K_NAME
        if kind == _VAR:
            return _K_VAR
        if kind == _LIT:
            return _K_LIT
        if kind == "-":
            self.expression(70, at_root)
            return _K_OTHER
        if kind == "(":
            self.expression(0, at_root)
            self.take(")")
            return _K_BLOCK
        if kind == "[":
            self.items("]", at_root)
            return _K_ARRAY
        if kind == "{":
            self.pairs(at_root)
            return _K_OTHER
        raise _Unsupported

    def items(self, close: str, at_root: bool) -> None:
        """One or more comma-separated expressions, then ``close``."""
        while True:
            self.expression(0, at_root)
            if self.kinds[self.pos] == ",":
                self.pos += 1
                continue
            self.take(close)
            return

    def pairs(self, at_root: bool) -> None:
        while True:
            self.expression(0, at_root)
            self.take(":")
            self.expression(0, at_root)
            if self.kinds[self.pos] == ",":
                self.pos += 1
                continue
            self.take("}")
            return

    def led(self, op: str, left: int, at_root: bool) -> int:
        if op == ".":
            if left not in _DOT_LEFT:
                raise _Unsupported
            first = self.kinds[self.pos]
            step = self.expression(75, False)  # later steps are relative to the first
            if step not in _STEP or first == _LIT:
                raise _Unsupported
            return _K_PATH
        if op == "[":
            if left == _K_LIT or left == _K_OTHER:
                raise _Unsupported
            self.expression(0, False)  # a predicate or index: relative to the items
            self.take("]")
            return _K_PATH
        if op == "(":
            if left != _K_VAR:
                raise _Unsupported
            if self.kinds[self.pos] == ")":
                self.pos += 1
            else:
                self.items(")", at_root)
            return _K_CALL
        if op == "?":
            self.expression(0, at_root)
            if self.kinds[self.pos] == ":":
                self.pos += 1
                self.expression(0, at_root)
            return _K_OTHER
        self.expression(_INFIX[op], at_root)
        return _K_OTHER


def subset_root_names(source: str) -> set[str] | None:
    """Root names of ``source`` when it is a valid expression of the subset; otherwise None."""
    if _SIMPLE.fullmatch(source):
        return {
            name for lead, name in _SIMPLE_NAMES.findall(source)
            if name and not lead and name not in _NOT_ROOTS
        }
    try:
        reader = _Reader(*_tokenize(source))
        reader.expression(0, True)
        if reader.kinds[reader.pos] != _END:
            return None
        return reader.roots
    except (_Unsupported, IndexError):
        return None

"""A fast reader for the common subset of JSONata: paths, predicates, arithmetic, comparison,
boolean and string operators, ternaries, function calls, array and object constructors.

Parsing with the full JSONata parser costs ~0.3-0.7 ms per expression, which dominates compiling
a 10,000-node workflow. This reader only ever *accepts*: it answers the root names of an
expression it fully understands, and ``None`` for anything else (an unsupported construct or a
syntax error), in which case the caller asks the real parser, whose verdict and error message
are authoritative. Its answers are checked against the real parser by property-based tests
(tests/unit/dag_builder/test_jsonata_subset.py).

How it reads: one compiled regular expression splits the source into tokens (``findall``, no
per-character work in Python) and a dictionary gives each operator its kind. One left-to-right
pass then checks the token sequence with a small state machine instead of a recursive parser.
That is enough because in this subset every binary operator, unary minus and ternary is valid
between any two operands: operator precedence decides the shape of the tree, not whether the
text parses, nor which names read the root. What does depend on structure is local:

* brackets must match: ``(`` a block or a call's arguments, ``[`` an array or a predicate,
  ``{`` an object of ``key: value`` pairs; each level keeps its own state on a stack;
* ``.``, ``[`` and ``(`` after an operand bind tighter than any other operator, so they always
  apply to the operand just read (the "chain"), whose kind decides whether they may: ``(`` only
  calls a ``$variable``, ``[`` and ``.`` never follow a literal or an object;
* after ``.`` comes one path step (a name, a block, or a ``$f(...)`` call, then any predicates);
  names in a step are relative to the previous step, as are names inside a predicate;
* a ``:`` closes the latest ``?`` still open at its bracket level, else it separates an object
  key from its value.

A name read at an operand position, outside any step or predicate, is a root name.
"""

from __future__ import annotations

import math
import re

__all__ = ["subset_root_names"]

# One token per match (C speed); only the four whitespace characters are skipped (findall steps
# over them) and any other character outside the subset comes out on its own. A JSONata name runs
# on until whitespace or an operator character, so "a$b" and "and's'" are single names (refused).
_TOKEN = re.compile(
    r"""(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"""
    r"""|'[^'\\]*'|"[^"\\]*"|\$?[A-Za-z_][^ \t\r\n.\[\]{}(),@#;:?+\-*/%|=<>^&!~]*|!=|<=|>=|[^ \t\r\n]"""
)
# Token kinds. Operators, keywords and the literal keywords are looked up by their text; every
# other token (a name, a $variable, a number, a string, or something outside the subset) has
# kind _WORD and is told apart by its first character when an operand is expected.
(
    _WORD,
    _DOT,
    _BINARY,
    _LITERAL,
    _MINUS,
    _LPAREN,
    _RPAREN,
    _LBRACKET,
    _RBRACKET,
    _LBRACE,
    _RBRACE,
    _COMMA,
    _QUESTION,
    _COLON,
) = range(14)
_KINDS = {
    ".": _DOT,
    "-": _MINUS,
    "(": _LPAREN,
    ")": _RPAREN,
    "[": _LBRACKET,
    "]": _RBRACKET,
    "{": _LBRACE,
    "}": _RBRACE,
    ",": _COMMA,
    "?": _QUESTION,
    ":": _COLON,
    "true": _LITERAL,
    "false": _LITERAL,
    "null": _LITERAL,
    **dict.fromkeys(
        ["+", "*", "/", "%", "&", "=", "!=", "<", "<=", ">", ">=", "and", "or", "in"], _BINARY
    ),
}
_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_DIGITS = frozenset("0123456789")

# What the operand being read is (decides which of ".", "[" and "(" may follow it).
_K_NAME, _K_PATH, _K_VAR, _K_CALL, _K_BLOCK, _K_ARRAY, _K_LIT, _K_OBJECT, _K_NONE = range(9)
_DOT_LEFT = frozenset({_K_NAME, _K_PATH, _K_VAR, _K_CALL, _K_BLOCK, _K_ARRAY})

# Bracket levels: what opened them.
_TOP, _BLOCK, _CALL, _ARRAY, _PREDICATE, _OBJECT = range(6)
_CLOSER = {
    _BLOCK: _RPAREN,
    _CALL: _RPAREN,
    _ARRAY: _RBRACKET,
    _PREDICATE: _RBRACKET,
    _OBJECT: _RBRACE,
}
_RESULT = {
    _BLOCK: _K_BLOCK,
    _CALL: _K_CALL,
    _ARRAY: _K_ARRAY,
    _PREDICATE: _K_PATH,
    _OBJECT: _K_OBJECT,
}

_MAX_NESTING = 100  # open brackets plus leading minus signs; deeper goes to the full parser


def subset_root_names(source: str) -> set[str] | None:
    """Root names of ``source`` when it is a valid expression of the subset; otherwise None."""
    roots: set[str] = set()
    # The state of the current bracket level; enclosing levels wait on the stack.
    level = _TOP
    at_root = True  # names at this level (outside steps) are evaluated against the root
    open_questions = 0  # "?" at this level still waiting for their ":"
    reading_key = False  # in an object: before the ":" of the current pair
    in_step = False  # reading the path step after a "."
    stack: list[tuple[int, bool, int, bool, bool]] = []
    # Position within the level: expecting an operand, or after one (``chain`` says what it is).
    want_operand = True
    chain = _K_NONE
    minus_signs = 0

    for text in _TOKEN.findall(source):
        token = _KINDS.get(text, _WORD)
        if want_operand:
            # -- an operand starts (after "." it is a path step: a name, a block or a $call) --
            if token == _WORD:
                first = text[0]
                if first in _NAME_START:
                    if not (text.isascii() and text.isidentifier()) or text == "function":
                        return None
                    if at_root and not in_step:
                        roots.add(text)
                    chain = _K_NAME
                elif first == "$":
                    if not (text.isascii() and text[1:].isidentifier()):
                        return None  # "$" and "$$" (the context and the root), "$a$b"
                    chain = _K_VAR
                elif in_step:
                    return None  # a step is never a literal
                elif first in _DIGITS:
                    if ("e" in text or "E" in text) and not math.isfinite(float(text)):
                        return None  # JSONata rejects numbers out of range
                    chain = _K_LIT
                elif (first == "'" or first == '"') and len(text) > 1 and text[-1] == first:
                    chain = _K_LIT
                else:
                    return None  # an unterminated string, a character outside the subset
            elif token == _LPAREN:
                stack.append((level, at_root, open_questions, reading_key, in_step))
                level, at_root = _BLOCK, at_root and not in_step
                open_questions, reading_key, in_step, chain = 0, False, False, _K_NONE
                if len(stack) + minus_signs > _MAX_NESTING:
                    return None
                continue  # still wants an operand
            elif in_step:
                return None  # a step is never a literal, a negation, an array or an object
            elif token == _LITERAL:
                chain = _K_LIT
            elif token == _MINUS:
                minus_signs += 1
                if len(stack) + minus_signs > _MAX_NESTING:
                    return None
                continue
            elif token == _LBRACKET or token == _LBRACE:
                stack.append((level, at_root, open_questions, reading_key, in_step))
                level = _ARRAY if token == _LBRACKET else _OBJECT
                open_questions, reading_key, chain = 0, level == _OBJECT, _K_NONE
                if len(stack) + minus_signs > _MAX_NESTING:
                    return None
                continue
            elif token == _RPAREN and level == _CALL and chain == _K_NONE and not minus_signs:
                chain = _K_CALL  # "$f()": a call without arguments
                level, at_root, open_questions, reading_key, in_step = stack.pop()
            else:
                return None
            want_operand = False
            minus_signs = 0
            continue

        # -- after an operand: extend it with ".", "[" or "(", or go on with an operator --
        if token == _DOT:
            if in_step:
                if chain == _K_VAR:
                    return None  # "a.$v" is no step (only "a.$f(...)" is)
                chain = _K_PATH
            elif chain not in _DOT_LEFT:
                return None
            in_step = True
            want_operand = True
            continue
        if token == _LBRACKET:
            if chain == _K_LIT or chain == _K_OBJECT:
                return None
            stack.append((level, at_root, open_questions, reading_key, in_step))
            level, at_root = _PREDICATE, False  # a predicate or index: relative to the items
        elif token == _LPAREN:
            if chain != _K_VAR:
                return None
            stack.append((level, at_root, open_questions, reading_key, in_step))
            level, at_root = _CALL, at_root and not in_step
        else:
            if in_step:  # the step ends here
                if chain == _K_VAR:
                    return None
                in_step = False
            if token == _BINARY or token == _MINUS:
                pass
            elif token == _QUESTION:
                open_questions += 1
            elif token == _COLON:
                if open_questions:
                    open_questions -= 1
                elif reading_key:
                    reading_key = False
                else:
                    return None
            elif token == _COMMA:
                if level == _OBJECT and not reading_key:
                    reading_key = True
                elif level != _CALL and level != _ARRAY:
                    return None
                open_questions = 0
            elif token == _CLOSER.get(level) and not reading_key:
                chain = _RESULT[level]
                level, at_root, open_questions, reading_key, in_step = stack.pop()
                continue  # the closed bracket is an operand: still after one
            else:
                return None
            want_operand = True
            continue
        # "[" or "(" opened a level inside the chain
        if len(stack) > _MAX_NESTING:
            return None
        open_questions, reading_key, in_step, chain = 0, False, False, _K_NONE
        want_operand = True

    if want_operand or stack or (in_step and chain == _K_VAR):
        return None
    return roots

"""JSONata expressions: syntax check and the root names they read (for reference validation).

Expressions are evaluated against an object holding every completed node's output by id (SPEC
section 2), so the first step of a path evaluated against that root (``fetch.body.total``) names a
node. Names inside predicates, group-by objects, sort terms or later path steps are relative to
some value and name no node. ``$$.x`` always starts at the root, so ``x`` counts there too.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jsonata import jexception, parser

from .jsonata_subset import subset_root_names

__all__ = ["ExpressionError", "analyze_expression"]


class ExpressionError(ValueError):
    """Invalid JSONata; ``position`` is the parser's character offset."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


def analyze_expression(source: str) -> tuple[str, ...]:
    """Root names an expression reads, sorted; raises ExpressionError with the parser's position."""
    outcome = _analyze(source)
    if isinstance(outcome, ExpressionError):
        raise outcome
    return outcome


@lru_cache(maxsize=16384)
def _analyze(source: str) -> tuple[str, ...] | ExpressionError:
    """The sorted root names, or the error (cached either way)."""
    if not source.strip():
        return ExpressionError("empty expression")
    quick = subset_root_names(source)
    if quick is not None:
        return tuple(sorted(quick))
    try:
        ast = parser.Parser().parse(source)
    except jexception.JException as exc:
        return ExpressionError(_describe(exc), exc.location)
    except RecursionError:
        return ExpressionError("expression is nested too deeply")
    except Exception as exc:  # the parser is a port; any internal error means "cannot parse"
        return ExpressionError(f"cannot parse expression ({type(exc).__name__})")
    errors = getattr(ast, "errors", None)
    if errors:
        first = errors[0]
        return ExpressionError(_describe(first), getattr(first, "location", None))
    return tuple(sorted(root_names(ast)))


def _describe(exc: BaseException) -> str:
    location = getattr(exc, "location", None)
    text = str(exc)
    return f"{text} (at position {location})" if location is not None else text


# Attributes whose sub-expressions are evaluated in the same context as the node itself.
_SAME_CONTEXT = (
    "lhs",
    "rhs",
    "expression",
    "expressions",
    "condition",
    "then",
    "_else",
    "arguments",
    "procedure",
    "body",
)
# Attributes evaluated against some relative value (a path step's items): never root names.
_RELATIVE = ("stages", "predicate", "pattern", "update", "delete")


def root_names(ast: Any) -> set[str]:
    """Names read from the evaluation root (iterative walk over the processed AST)."""
    found: set[str] = set()
    stack: list[tuple[Any, bool]] = [(ast, True)]
    while stack:
        node, at_root = stack.pop()
        if node is None:
            continue
        if isinstance(node, list | tuple):
            stack.extend((item, at_root) for item in node)
            continue
        if not isinstance(node, parser.Parser.Symbol):
            continue
        kind = node.type
        if kind == "path":
            steps = node.steps or []
            if steps:
                first = steps[0]
                if (
                    first.type == "variable"
                    and len(steps) > 1
                    and steps[1].type == "name"
                    and (first.value == "$" or (first.value == "" and at_root))
                ):
                    found.add(str(steps[1].value))  # $$.x (or $.x at the root)
                stack.append((first, at_root))
                stack.extend((step, False) for step in steps[1:])
        elif kind == "name":
            if at_root:
                found.add(str(node.value))
        for attr in _SAME_CONTEXT:
            child = getattr(node, attr, None)
            if child is not None and child is not node:
                stack.append((child, at_root))
        for attr in _RELATIVE:
            child = getattr(node, attr, None)
            if child is not None:
                stack.append((child, False))
        if node.type == "filter":
            stack.append((node.expr, False))
        if node.lhs_object is not None:
            # unary {...}: object constructor in the same context; on a group it is relative
            stack.append((node.lhs_object, at_root and kind == "unary"))
        if node.group is not None:
            stack.append((node.group.lhs_object, False))
        if node.terms is not None:
            stack.extend((term.expression, False) for term in node.terms)
    return found


def clear_caches() -> None:
    """Forget parsed expressions (benchmarks measure cold compiles)."""
    _analyze.cache_clear()

"""JSONata expressions (SPEC section 2), compiled once and evaluated in a sandbox.

An expression string is parsed once (cached) together with the root names it reads, so that an
evaluation builds a context holding only those roots. Evaluation is bounded in time and depth
through jsonata-python's evaluate callbacks (a fresh budget per evaluation, unlike the library's
own ``Timebox`` whose clock starts when the expression is parsed) and has no I/O: JSONata has no
functions that touch files, sockets or the environment.

Results come back as plain JSON values: JSONata ``undefined`` is ``None``, integral numbers are
``int`` (``start.x + 1`` with ``x = 3`` gives ``4``, never ``4.0``), booleans stay booleans.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jsonata import JException, Jsonata, Parser

from .handlers.base import NodeFailure

__all__ = [
    "CompiledExpression",
    "compile_expression",
    "is_truthy",
    "to_json",
]

# Integers above this are not exactly representable as doubles; keep such floats as floats.
_MAX_SAFE_INT = 2**53
_SYMBOL = Parser.Symbol
# Source shown in error messages is cut to this many characters.
_QUOTE_LIMIT = 120


def _quote(source: str) -> str:
    text = source if len(source) <= _QUOTE_LIMIT else source[: _QUOTE_LIMIT - 3] + "..."
    return repr(text)


class _Budget:
    """Time and depth bound of one evaluation, checked on every step the evaluator takes.

    One per compiled expression, bound into its environment once and reset per evaluation
    (evaluations are synchronous, so one program never runs two at a time on a thread).
    """

    __slots__ = ("deadline", "depth", "max_depth")

    def __init__(self) -> None:
        self.deadline = 0.0
        self.depth = 0
        self.max_depth = 0

    def reset(self, timeout_ms: int, max_depth: int) -> None:
        self.deadline = time.perf_counter() + timeout_ms / 1000.0
        self.depth = 0
        self.max_depth = max_depth

    def enter(self, expr: Any, input: Any, env: Any) -> None:
        self.depth += 1
        if self.depth > self.max_depth:
            raise _DepthExceeded(getattr(expr, "position", None))
        if time.perf_counter() > self.deadline:
            raise _TimedOut(getattr(expr, "position", None))

    def leave(self, expr: Any, input: Any, env: Any, result: Any) -> None:
        self.depth -= 1


class _DepthExceeded(Exception):
    def __init__(self, position: int | None) -> None:
        super().__init__(position)
        self.position = position


class _TimedOut(Exception):
    def __init__(self, position: int | None) -> None:
        super().__init__(position)
        self.position = position


@dataclass(frozen=True, slots=True)
class CompiledExpression:
    """A parsed expression and the root names it may read."""

    source: str
    program: Jsonata
    # Names the expression reads from its context (node ids, start/input, var, loop, ...).
    # Over-inclusive by design: a relative name inside a filter is listed too; absent ones are
    # simply left out of the context.
    roots: tuple[str, ...]
    # ``env.NAME`` names written out in the expression: the only env values it can ever see.
    env_names: tuple[str, ...]
    budget: _Budget
    # Fast forms that skip the interpreter: a constant, or a plain ``a.b.c`` path.
    constant: Any = None
    is_constant: bool = False
    path: tuple[str, ...] | None = None

    def evaluate(
        self,
        resolve_root: Callable[[str], Any],
        *,
        env: Mapping[str, Any] | None = None,
        timeout_ms: int,
        max_depth: int,
    ) -> Any:
        """Evaluate against the roots ``resolve_root`` gives; it raises KeyError for absent or
        skipped roots, which are then left out so ``$exists(x)`` is false."""
        if self.is_constant:
            return self.constant
        if self.path is not None:
            found, value = _walk(self.path, resolve_root, env)
            if found:
                return to_json(value)
        context: dict[str, Any] = {}
        for name in self.roots:
            if name == "env":
                if env is not None:
                    context["env"] = env
                continue
            try:
                context[name] = resolve_root(name)
            except KeyError:
                continue
        self.budget.reset(timeout_ms, max_depth)
        # jsonata-python evaluates through "the current instance of this thread"; make it ours so
        # that $now() and $eval() see this evaluation's state.
        Jsonata.CURRENT.jsonata = self.program
        try:
            result = self.program.evaluate(context)
        except _TimedOut as exc:
            raise NodeFailure(
                f"expression {_quote(self.source)} exceeded its time limit of {timeout_ms} ms"
                f"{_at(exc.position)}",
                code="EXPRESSION_TIMEOUT",
                retryable=False,
            ) from None
        except (_DepthExceeded, RecursionError) as exc:
            position = exc.position if isinstance(exc, _DepthExceeded) else None
            raise NodeFailure(
                f"expression {_quote(self.source)} exceeded its depth limit of {max_depth}"
                f"{_at(position)} (runaway recursion?)",
                code="EXPRESSION_ERROR",
                retryable=False,
            ) from None
        except JException as exc:
            raise NodeFailure(
                f"expression {_quote(self.source)} failed{_at(exc.location)}: {_message(exc)}",
                code="EXPRESSION_ERROR",
                retryable=False,
            ) from None
        except Exception as exc:  # the library raises plain Python errors on some bad inputs
            raise NodeFailure(
                f"expression {_quote(self.source)} failed: {type(exc).__name__}: {exc}",
                code="EXPRESSION_ERROR",
                retryable=False,
            ) from None
        return to_json(result)


def _at(position: int | None) -> str:
    return f" at position {position}" if isinstance(position, int) and position >= 0 else ""


def _message(exc: JException) -> str:
    """The library's message with its error code (``S0203``, ``T2001``, see docs.jsonata.org)."""
    text = str(exc).strip()
    code = getattr(exc, "error", None)
    return f"{text} ({code})" if code and code not in text else text


_CACHE_LIMIT = 4096
# Per thread: a compiled program carries evaluation state (its budget, the library's "$"
# binding), so two threads never share one.
_local = threading.local()


def compile_expression(source: str) -> CompiledExpression:
    """Parse once per thread (cached); raises NodeFailure(EXPRESSION_ERROR) naming the syntax
    error."""
    cache: dict[str, CompiledExpression] | None = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = {}
    compiled = cache.get(source)
    if compiled is None:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        compiled = cache[source] = _compile(source)
    return compiled


def _compile(source: str) -> CompiledExpression:
    if not isinstance(source, str) or not source.strip():
        raise NodeFailure("empty expression", code="EXPRESSION_ERROR", retryable=False)
    try:
        program = Jsonata(source)
    except JException as exc:
        raise NodeFailure(
            f"expression {_quote(source)} is invalid{_at(exc.location)}: {_message(exc)}",
            code="EXPRESSION_ERROR",
            retryable=False,
        ) from None
    # The context is built by us from JSON values; skip the library's O(size) input walk.
    program.set_validate_input(False)
    budget = _Budget()
    program.environment.bind("__evaluate_entry", budget.enter)
    program.environment.bind("__evaluate_exit", budget.leave)
    roots: dict[str, None] = {}
    env_names: dict[str, None] = {}
    _collect_roots(program.ast, roots, env_names)
    is_constant, constant = _constant_of(program.ast)
    return CompiledExpression(
        source=source,
        program=program,
        roots=tuple(roots),
        env_names=tuple(env_names),
        budget=budget,
        constant=constant,
        is_constant=is_constant,
        path=None if is_constant else _plain_path(program.ast),
    )


# Attributes a symbol has when it is nothing but itself (no filter, sort, group, focus, ...).
_PLAIN_ATTRS = frozenset(
    {"_outer_instance", "type", "value", "id", "bp", "lbp", "position", "level", "steps"}
)


def _is_plain(sym: Any) -> bool:
    return all(
        k in _PLAIN_ATTRS or v is None or v is False or (isinstance(v, list) and not v)
        for k, v in vars(sym).items()
    )


def _constant_of(ast: Any) -> tuple[bool, Any]:
    kind = getattr(ast, "type", None)
    if kind in ("string", "number") and _is_plain(ast):
        return True, to_json(ast.value)
    if kind == "value" and _is_plain(ast) and ast.value in (True, False, None):
        return True, ast.value
    return False, None


def _plain_path(ast: Any) -> tuple[str, ...] | None:
    """``a.b.c`` made of plain name steps only, else None."""
    if getattr(ast, "type", None) != "path" or not _is_plain(ast):
        return None
    names = []
    for step in ast.steps or ():
        if getattr(step, "type", None) != "name" or not _is_plain(step):
            return None
        names.append(step.value)
    return tuple(names) if names else None


def _walk(
    path: tuple[str, ...], resolve_root: Callable[[str], Any], env: Mapping[str, Any] | None
) -> tuple[bool, Any]:
    """(True, value) when ``path`` walks through objects only; (False, None) when an array is
    met and JSONata's mapping semantics apply (the interpreter then decides)."""
    root = path[0]
    if root == "env":
        value: Any = env
    else:
        try:
            value = resolve_root(root)
        except KeyError:
            return True, None
    for name in path[1:]:
        if value is None:
            return True, None
        if isinstance(value, dict):
            value = value.get(name)
        elif isinstance(value, list):
            return False, None
        else:
            return True, None
    if isinstance(value, list):
        return False, None
    return True, value


def _collect_roots(node: Any, roots: dict[str, None], env_names: dict[str, None]) -> None:
    """Walk the AST: the first name of every path is a root; ``env.NAME`` records NAME."""
    stack = [node]
    while stack:
        sym = stack.pop()
        if isinstance(sym, list):
            stack.extend(sym)
            continue
        if not isinstance(sym, _SYMBOL):
            continue
        kind = getattr(sym, "type", None)
        if kind == "path":
            steps = sym.steps or []
            first = 0
            # `$.x` and `$$.x` read the root context too.
            if (
                steps
                and getattr(steps[0], "type", None) == "variable"
                and steps[0].value in ("", "$")
                and len(steps) > 1
            ):
                first = 1
            if first < len(steps) and getattr(steps[first], "type", None) == "name":
                name = steps[first].value
                roots[name] = None
                if name == "env" and first + 1 < len(steps):
                    nxt = steps[first + 1]
                    if getattr(nxt, "type", None) == "name":
                        env_names[nxt.value] = None
            for step in steps:
                # A name step is a field of what came before, not a root: look inside it only
                # (its filters and stages hold expressions of their own).
                if getattr(step, "type", None) == "name":
                    _push_children(step, stack)
                else:
                    stack.append(step)
            _push_children(sym, stack, skip="steps")
            continue
        if kind == "name":
            roots[sym.value] = None
        _push_children(sym, stack)


def _push_children(sym: Any, stack: list[Any], skip: str = "") -> None:
    for attr, value in vars(sym).items():
        if attr == "_outer_instance" or attr == skip or value is None:
            continue
        if isinstance(value, (_SYMBOL, list)):
            stack.append(value)


def is_truthy(value: Any) -> bool:
    """JSONata's boolean cast (empty string/array/object, 0 and null are false)."""
    return bool(Jsonata.boolize(value))


def to_json(value: Any) -> Any:
    """Plain JSON from a JSONata result: integral floats → int, sequences → lists, functions →
    None (as JSON.stringify drops them)."""
    if value is None or value is True or value is False:
        return value
    cls = type(value)
    if cls is str or cls is int:
        return value
    if cls is float:
        if value.is_integer() and -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT:
            return int(value)
        return value
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    return None

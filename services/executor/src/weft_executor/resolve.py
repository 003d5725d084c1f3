"""References and expressions for one node run (SPEC section 2): the engine's ``Resolver``.

The engine gives a ``lookup(root)`` for the roots it owns (``start``/``input``, ``var``, ``loop``,
``parallel``, container ids, node ids), raising KeyError for absent or skipped ones. This module
adds ``env`` (only names the operator allowed; a refused name is never read) and ``execution``,
renders ``{{ }}`` templates and evaluates JSONata against the same roots.

Template rules: a string that is exactly one template keeps the value's JSON type; templates
inside longer text render strings as is and everything else as compact JSON (``null`` for a
missing value). A missing root, a skipped node or a path that does not exist resolves to null.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from weft_common.jsonutil import dumps
from weft_common.references import Reference, TemplateError, compile_template
from weft_common.settings import env_name_allowed

from .expressions import compile_expression
from .handlers.base import NodeFailure

__all__ = ["ReferenceResolver", "env_not_allowed"]


def env_not_allowed(name: str) -> NodeFailure:
    """The failure for an ``env`` name the operator did not allow (names the name, never a value)."""
    return NodeFailure(
        f"env.{name} is not allowed: add it to WEFT_ENV_ALLOW to let workflows read it",
        code="ENV_NOT_ALLOWED",
        retryable=False,
    )


class ReferenceResolver:
    """Implements ``handlers.base.Resolver`` over the engine's root lookup."""

    __slots__ = ("_env_allow", "_environ", "_execution", "_lookup", "_max_depth", "_timeout_ms")

    def __init__(
        self,
        lookup: Callable[[str], Any],
        *,
        execution_id: str,
        env_allow: tuple[str, ...],
        environ: Mapping[str, str] | None = None,
        timeout_ms: int = 1000,
        max_depth: int = 200,
    ) -> None:
        self._lookup = lookup
        self._execution = {"id": execution_id}
        self._env_allow = env_allow
        self._environ = os.environ if environ is None else environ
        self._timeout_ms = timeout_ms
        self._max_depth = max_depth

    # ------------------------------------------------------------------ roots

    def _root(self, name: str) -> Any:
        """A root's value; KeyError when absent or skipped. ``env`` is handled by the callers."""
        if name == "execution":
            return self._execution
        if name == "start":
            # `start` means the execution input, whatever the start node is called.
            try:
                return self._lookup("start")
            except KeyError:
                return self._lookup("input")
        return self._lookup(name)

    def env(self, name: str) -> str | None:
        """An allowed env value (None when unset); raises ENV_NOT_ALLOWED before reading it."""
        if not env_name_allowed(name, self._env_allow):
            raise env_not_allowed(name)
        return self._environ.get(name)

    # -------------------------------------------------------------- templates

    def render(self, value: Any) -> Any:
        """Render templates in a config value, recursively through objects and arrays."""
        if isinstance(value, str):
            if "{{" not in value:
                return value
            return self._render_string(value)
        if isinstance(value, Mapping):
            return {k: self.render(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.render(v) for v in value]
        return value

    def _render_string(self, source: str) -> Any:
        try:
            tpl = compile_template(source)
        except TemplateError as exc:
            raise NodeFailure(str(exc), code="TEMPLATE_ERROR", retryable=False) from None
        if tpl.whole is not None:
            return self.resolve(tpl.whole)
        out: list[str] = []
        for part in tpl.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            val = self.resolve(part)
            out.append(val if isinstance(val, str) else dumps(val))
        return "".join(out)

    def resolve(self, ref: Reference) -> Any:
        """One reference's value; null when the root is absent/skipped or the path is missing."""
        root = ref.root
        path = ref.path
        if root == "env":
            if not path or not isinstance(path[0], str):
                raise NodeFailure(
                    f"{ref} must name one variable, like {{{{env.NAME}}}}",
                    code="ENV_NOT_ALLOWED",
                    retryable=False,
                )
            value: Any = self.env(path[0])
            path = path[1:]
        else:
            try:
                value = self._root(root)
            except KeyError:
                return None
        for step in path:
            value = _step(value, step)
            if value is None:
                return None
        return value

    # ------------------------------------------------------------ expressions

    def evaluate(self, expression: str) -> Any:
        """Evaluate JSONata against the roots it names (absent roots are left out)."""
        compiled = compile_expression(expression)
        env: dict[str, Any] | None = None
        if "env" in compiled.roots:
            # Only names written out in the expression, each checked before it is read.
            env = {}
            for name in compiled.env_names:
                val = self.env(name)
                if val is not None:
                    env[name] = val
        return compiled.evaluate(
            self._root, env=env, timeout_ms=self._timeout_ms, max_depth=self._max_depth
        )


def _step(value: Any, step: str | int) -> Any:
    if isinstance(step, int):
        if isinstance(value, list):
            try:
                return value[step]
            except IndexError:
                return None
        if isinstance(value, Mapping):
            return value.get(str(step))
        return None
    if isinstance(value, Mapping):
        return value.get(step)
    return None

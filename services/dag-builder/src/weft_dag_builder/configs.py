"""Per-type config validation (SPEC section 3) and the references each node's config makes.

``check_node_config`` reports problems into the sink and returns every reference the config
holds: ``{{ }}`` templates in any string, and the root names of the JSONata fields
(``transform.expression``, ``condition.branches[].when``, ``router.select``, ``loop.condition``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from weft_common.references import TemplateError, compile_template
from weft_common.workflow import Node

from .diagnostics import Code, DiagnosticSink
from .expressions import ExpressionError, analyze_expression
from .limits import Limits
from .schemas import check_schema

__all__ = ["ConfigReference", "check_node_config"]

HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
LOOP_KINDS = ("for", "forEach", "while", "doWhile")
PARALLEL_KINDS = ("count", "collection")
_CONTAINERS = (dict, list)
_BRANCH_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")


class ConfigReference(NamedTuple):
    """A root name read by a node's config, where it sits, and the text that reads it."""

    root: str
    field: str
    text: str
    expression: bool  # JSONata (True) or a {{ }} template (False)


def _quote(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


class _Checker:
    __slots__ = ("config", "expression_fields", "limits", "node", "refs", "sink")

    def __init__(self, node: Node, sink: DiagnosticSink, limits: Limits) -> None:
        self.node = node
        self.sink = sink
        self.limits = limits
        self.config: Mapping[str, Any] = node.config
        self.refs: list[ConfigReference] = []
        self.expression_fields: set[str] = set()

    # -- reporting -----------------------------------------------------------------------------
    def error(self, code: str, field: str, message: str) -> None:
        self.sink.add(
            code,
            f"node {self.node.id!r} ({self.node.type}): {field}: {message}",
            node_id=self.node.id,
            field=field,
        )

    def missing(self, key: str, what: str) -> None:
        self.error(Code.MISSING_CONFIG, f"config.{key}", f"required: {what}")

    # -- field kinds ---------------------------------------------------------------------------
    def expression(self, field: str, value: Any, *, required: bool = True) -> None:
        """A JSONata field: syntax, size, and the node names it reads."""
        self.expression_fields.add(field)
        if value is None:
            if required:
                self.error(Code.MISSING_CONFIG, field, "required: a JSONata expression")
            return
        if not isinstance(value, str):
            self.error(
                Code.INVALID_CONFIG,
                field,
                f"must be a JSONata expression (a string), got {_json_type(value)}",
            )
            return
        if len(value) > self.limits.max_expression_chars:
            self.error(
                Code.VALUE_TOO_LARGE,
                field,
                f"expression is {len(value)} characters (limit {self.limits.max_expression_chars})",
            )
            return
        try:
            roots = analyze_expression(value)
        except ExpressionError as exc:
            self.error(Code.INVALID_EXPRESSION, field, f"invalid JSONata {_quote(value)!r}: {exc}")
            return
        for root in roots:
            self.refs.append(ConfigReference(root, field, value, True))

    def number_or_template(self, key: str, *, required: bool, minimum: int = 0) -> None:
        value = self.config.get(key)
        if value is None:
            if required:
                self.missing(key, "a number or a {{template}}")
            return
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            self.error(
                Code.INVALID_CONFIG,
                f"config.{key}",
                f"must be a number or a {{{{template}}}}, got {_json_type(value)}",
            )
        elif isinstance(value, str):
            if not _is_whole_template(value):
                self.error(
                    Code.INVALID_CONFIG,
                    f"config.{key}",
                    f"must be a number or a {{{{template}}}}, got the string {_quote(value)!r}",
                )
        elif not _is_whole(value) or value < minimum:
            self.error(
                Code.INVALID_CONFIG,
                f"config.{key}",
                f"must be a whole number >= {minimum}, got {value}",
            )

    def positive_int(self, key: str) -> None:
        value = self.config.get(key)
        if value is None:
            return
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not _is_whole(value)
            or value < 1
        ):
            self.error(
                Code.INVALID_CONFIG, f"config.{key}", f"must be a whole number >= 1, got {value!r}"
            )

    def string(self, key: str, *, required: bool, what: str = "a string") -> str | None:
        value = self.config.get(key)
        if value is None:
            if required:
                self.missing(key, what)
            return None
        if not isinstance(value, str):
            self.error(
                Code.INVALID_CONFIG, f"config.{key}", f"must be {what}, got {_json_type(value)}"
            )
            return None
        if required and not value.strip():
            self.error(Code.MISSING_CONFIG, f"config.{key}", f"must not be empty ({what})")
            return None
        return value

    def typed(self, key: str, types: tuple[type, ...], what: str) -> None:
        value = self.config.get(key)
        if value is not None and (
            isinstance(value, bool) != (bool in types) or not isinstance(value, types)
        ):
            self.error(
                Code.INVALID_CONFIG, f"config.{key}", f"must be {what}, got {_json_type(value)}"
            )

    def kind(self, allowed: tuple[str, ...]) -> str | None:
        value = self.config.get("kind")
        if value is None:
            self.missing("kind", "one of " + ", ".join(allowed))
            return None
        if value not in allowed:
            self.error(
                Code.INVALID_CONFIG,
                "config.kind",
                f"must be one of {', '.join(allowed)}, got {_quote(str(value))!r}",
            )
            return None
        return str(value)

    def items(self, key: str) -> None:
        value = self.config.get(key)
        if value is None:
            self.missing(key, "an array, an object or a {{template}}")
        elif isinstance(value, str):
            if not _is_whole_template(value):
                self.error(
                    Code.INVALID_CONFIG,
                    f"config.{key}",
                    f"must be an array, an object or a {{{{template}}}}, got the string {_quote(value)!r}",
                )
        elif not isinstance(value, (list, dict)):
            self.error(
                Code.INVALID_CONFIG,
                f"config.{key}",
                f"must be an array, an object or a {{{{template}}}}, got {_json_type(value)}",
            )

    def id_list(self, key: str, what: str) -> list[tuple[int, Mapping[str, Any]]]:
        """A non-empty list of ``{id, ...}`` objects with unique ids; returns the well-formed ones."""
        value = self.config.get(key)
        if value is None:
            self.missing(key, f"a list of {what}")
            return []
        if not isinstance(value, list) or not value:
            self.error(Code.INVALID_CONFIG, f"config.{key}", f"must be a non-empty list of {what}")
            return []
        seen: set[str] = set()
        good: list[tuple[int, Mapping[str, Any]]] = []
        for i, item in enumerate(value):
            field = f"config.{key}[{i}]"
            if not isinstance(item, dict):
                self.error(
                    Code.INVALID_CONFIG,
                    field,
                    f"must be an object with an id, got {_json_type(item)}",
                )
                continue
            ident = item.get("id")
            if not isinstance(ident, str) or not ident:
                self.error(Code.MISSING_CONFIG, f"{field}.id", "required: a non-empty string id")
                continue
            if len(ident) > self.limits.max_name_chars or not _BRANCH_ID.match(ident):
                self.error(
                    Code.INVALID_CONFIG,
                    f"{field}.id",
                    f"{_quote(ident)!r} must be letters, digits, '_', '-' or '.'",
                )
                continue
            if ident in seen:
                self.error(Code.INVALID_CONFIG, f"{field}.id", f"duplicate id {ident!r}")
                continue
            seen.add(ident)
            good.append((i, item))
        return good

    # -- node types ----------------------------------------------------------------------------
    def check_type(self) -> None:
        check = _TYPE_CHECKS.get(self.node.type)
        if check is not None:
            check(self)

    def _check_transform(self) -> None:
        cfg = self.config
        self.expression("config.expression", cfg.get("expression"))

    def _check_condition(self) -> None:
        elses = 0
        for i, branch in self.id_list("branches", "branches {id, when}"):
            if "when" in branch:
                self.expression(f"config.branches[{i}].when", branch.get("when"))
            else:
                elses += 1
                if elses > 1:
                    self.error(
                        Code.INVALID_CONFIG,
                        f"config.branches[{i}]",
                        "only one branch may omit 'when' (the else branch)",
                    )

    def _check_router(self) -> None:
        cfg = self.config
        self.id_list("routes", "routes {id, description?}")
        if cfg.get("mode") == "llm":  # a model picks the route (executor: llm/route_select)
            self.string("model", required=True, what="a model name (string or template)")
            if cfg.get("messages") is None and cfg.get("prompt") is None:
                self.missing("messages", "'messages' (a list) or 'prompt' (a string)")
        else:
            self.expression("config.select", cfg.get("select"))

    def _check_http(self) -> None:
        self.string("url", required=True, what="a URL (string or template)")
        method = self.string("method", required=True, what="an HTTP method")
        if (
            method is not None
            and method.strip()
            and method.upper() not in HTTP_METHODS
            and not _is_whole_template(method)
        ):
            self.error(
                Code.INVALID_CONFIG,
                "config.method",
                f"must be one of {', '.join(sorted(HTTP_METHODS))}, got {_quote(method)!r}",
            )
        self.typed("headers", (dict, str), "an object or a {{template}}")
        self.typed("query", (dict, str), "an object or a {{template}}")
        self.typed(
            "expectStatus",
            (int, float, list, str),
            "a status, a list of statuses or a {{template}}",
        )

    def _check_llm(self) -> None:
        cfg = self.config
        self.string("model", required=True, what="a model name (string or template)")
        if cfg.get("messages") is None and cfg.get("prompt") is None:
            self.missing("messages", "'messages' (a list) or 'prompt' (a string)")
        self.typed("messages", (list, str), "a list of messages or a {{template}}")
        self.typed("prompt", (str,), "a string")
        self.typed("stream", (bool,), "true or false")

    def _check_wait(self) -> None:
        cfg = self.config
        has_duration = cfg.get("durationMs") is not None
        has_until = cfg.get("until") is not None
        if has_duration and has_until:
            self.error(Code.INVALID_CONFIG, "config.until", "give durationMs or until, not both")
        elif has_duration:
            self.number_or_template("durationMs", required=True)
        elif has_until:
            self.string("until", required=True, what="an RFC 3339 time or a {{template}}")
        else:
            self.missing("durationMs", "'durationMs' (a number) or 'until' (an RFC 3339 time)")

    def _check_approval(self) -> None:
        self.typed("reason", (str,), "a string")
        if self.config.get("inputSchema") is not None:
            check_schema(
                self.config["inputSchema"],
                field="config.inputSchema",
                owner=f"node {self.node.id!r} (approval)",
                node_id=self.node.id,
                sink=self.sink,
                limits=self.limits,
            )

    def _check_setVariable(self) -> None:
        cfg = self.config
        assign = cfg.get("assign")
        if assign is None:
            self.missing("assign", "an object of variable name -> value")
        elif not isinstance(assign, dict) or not assign:
            self.error(
                Code.INVALID_CONFIG,
                "config.assign",
                "must be a non-empty object of variable name -> value",
            )
        else:
            for name in assign:
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name):
                    self.error(
                        Code.INVALID_CONFIG,
                        f"config.assign.{name}",
                        f"variable name {_quote(name)!r} must match [A-Za-z_][A-Za-z0-9_]{{0,63}}",
                    )

    def _check_subworkflow(self) -> None:
        self.string("workflowId", required=True, what="a workflow id")
        self.typed("version", (int, float, str), "a version number")

    def _check_output(self) -> None:
        cfg = self.config
        if "value" not in cfg:
            self.missing("value", "the value (or {{template}}) to output")
        self.typed("name", (str,), "a string")

    def _check_fail(self) -> None:
        self.string("message", required=True, what="an error message")
        self.typed("code", (str,), "a string")

    def _check_loop(self) -> None:
        cfg = self.config
        loop_kind = self.kind(LOOP_KINDS)
        if loop_kind == "for":
            self.number_or_template("count", required=True)
        elif loop_kind == "forEach":
            self.items("items")
        elif loop_kind in ("while", "doWhile"):
            self.expression("config.condition", cfg.get("condition"))
        self.positive_int("maxIterations")

    def _check_parallel(self) -> None:
        par_kind = self.kind(PARALLEL_KINDS)
        if par_kind == "count":
            self.number_or_template("count", required=True)
        elif par_kind == "collection":
            self.items("items")
        self.positive_int("maxConcurrency")
        self.typed("continueOnError", (bool,), "true or false")

    # -- every string: size, templates ---------------------------------------------------------
    def scan_strings(self) -> None:
        """Walk the whole config: depth, string sizes, {{ }} references.

        Order (kept stable, it is the order of references and diagnostics): the top-level
        strings first, then the top-level objects and arrays from the last to the first, each
        walked depth-first in document order.
        """
        max_chars = self.limits.max_string_chars
        nested: list[tuple[str, Any]] = []
        for key, value in self.config.items():
            if isinstance(value, str):
                if len(value) > max_chars or "{{" in value:
                    field = f"config.{key}"
                    if field not in self.expression_fields:
                        self.string_value(field, value)
            elif isinstance(value, _CONTAINERS):
                nested.append((f"config.{key}", value))
        for field, value in reversed(nested):
            self.scan_container(field, value, 1)

    def scan_container(self, field: str, container: dict[str, Any] | list[Any], depth: int) -> None:
        """One object or array at ``depth`` (recursion is bounded by the depth limit). Field
        names are formatted only for what needs one: a string to check, a container to enter."""
        limits = self.limits
        if depth >= limits.max_config_depth:
            self.error(
                Code.VALUE_TOO_LARGE, field, f"nested deeper than {limits.max_config_depth} levels"
            )
            return
        max_chars = limits.max_string_chars
        is_list = isinstance(container, list)
        pairs: Iterable[tuple[Any, Any]] = (
            enumerate(container) if isinstance(container, list) else container.items()
        )
        for key, value in pairs:
            if isinstance(value, str):
                if len(value) > max_chars or "{{" in value:
                    at = f"{field}[{key}]" if is_list else f"{field}.{key}"
                    if at not in self.expression_fields:
                        self.string_value(at, value)
            elif isinstance(value, _CONTAINERS):
                self.scan_container(
                    f"{field}[{key}]" if is_list else f"{field}.{key}", value, depth + 1
                )

    def string_value(self, field: str, value: str) -> None:
        if len(value) > self.limits.max_string_chars:
            self.error(
                Code.VALUE_TOO_LARGE,
                field,
                f"string is {len(value)} characters (limit {self.limits.max_string_chars})",
            )
        else:
            self.template(field, value)

    def template(self, field: str, value: str) -> None:
        try:
            tpl = compile_template(value)
        except TemplateError as exc:
            self.error(Code.INVALID_TEMPLATE, field, str(exc))
            return
        refs = self.refs
        if tpl.whole is not None:
            ref = tpl.whole
            refs.append(ConfigReference(ref.root, field, str(ref), False))
            return
        unclosed = False
        for part in tpl.parts:
            if isinstance(part, str):
                unclosed = unclosed or "{{" in part
            else:
                refs.append(ConfigReference(part.root, field, str(part), False))
        if unclosed:
            self.error(
                Code.INVALID_TEMPLATE,
                field,
                f"unclosed '{{{{' in {_quote(value)!r} (a template is {{{{ name.path }}}})",
            )


_TYPE_CHECKS: dict[str, Callable[[_Checker], None]] = {
    "transform": _Checker._check_transform,
    "condition": _Checker._check_condition,
    "router": _Checker._check_router,
    "http": _Checker._check_http,
    "llm": _Checker._check_llm,
    "wait": _Checker._check_wait,
    "approval": _Checker._check_approval,
    "setVariable": _Checker._check_setVariable,
    "subworkflow": _Checker._check_subworkflow,
    "output": _Checker._check_output,
    "fail": _Checker._check_fail,
    "loop": _Checker._check_loop,
    "parallel": _Checker._check_parallel,
}


def _is_whole_template(value: str) -> bool:
    try:
        return compile_template(value).whole is not None
    except TemplateError:
        return False


def _is_whole(value: float) -> bool:
    return math.isfinite(value) and value == int(value)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def check_node_config(node: Node, sink: DiagnosticSink, limits: Limits) -> list[ConfigReference]:
    """Validate ``node.config`` for its type; return the references it makes (in field order)."""
    checker = _Checker(node, sink, limits)
    # dict first: an isinstance check against the Mapping ABC is slow, and configs are dicts.
    if not isinstance(node.config, dict) and not isinstance(node.config, Mapping):
        checker.error(Code.INVALID_CONFIG, "config", "must be an object")
        return []
    checker.check_type()
    checker.scan_strings()
    return checker.refs

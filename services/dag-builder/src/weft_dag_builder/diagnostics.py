"""Validation diagnostics: one problem, naming the node/edge and the field it sits in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Code", "Diagnostic", "DiagnosticSink", "diagnostics_to_json"]


class Code:
    """Diagnostic codes (stable strings: clients match on them)."""

    WORKFLOW_TOO_LARGE = "WORKFLOW_TOO_LARGE"
    TOO_MANY_DIAGNOSTICS = "TOO_MANY_DIAGNOSTICS"
    INVALID_NODE_ID = "INVALID_NODE_ID"
    RESERVED_NODE_ID = "RESERVED_NODE_ID"
    DUPLICATE_NODE_ID = "DUPLICATE_NODE_ID"
    UNKNOWN_NODE_TYPE = "UNKNOWN_NODE_TYPE"
    MISSING_START = "MISSING_START"
    MULTIPLE_START = "MULTIPLE_START"
    START_NOT_TOP_LEVEL = "START_NOT_TOP_LEVEL"
    START_HAS_INCOMING = "START_HAS_INCOMING"
    UNKNOWN_PARENT = "UNKNOWN_PARENT"
    PARENT_NOT_CONTAINER = "PARENT_NOT_CONTAINER"
    NESTING_CYCLE = "NESTING_CYCLE"
    NESTING_TOO_DEEP = "NESTING_TOO_DEEP"
    EMPTY_CONTAINER = "EMPTY_CONTAINER"
    INVALID_EDGE_ID = "INVALID_EDGE_ID"
    DUPLICATE_EDGE_ID = "DUPLICATE_EDGE_ID"
    EDGE_UNKNOWN_SOURCE = "EDGE_UNKNOWN_SOURCE"
    EDGE_UNKNOWN_TARGET = "EDGE_UNKNOWN_TARGET"
    EDGE_CROSSES_CONTAINER = "EDGE_CROSSES_CONTAINER"
    INVALID_HANDLE = "INVALID_HANDLE"
    HANDLE_WRONG_NODE_TYPE = "HANDLE_WRONG_NODE_TYPE"
    UNKNOWN_BRANCH = "UNKNOWN_BRANCH"
    UNKNOWN_ROUTE = "UNKNOWN_ROUTE"
    UNREACHABLE_NODE = "UNREACHABLE_NODE"
    CYCLE = "CYCLE"
    MISSING_CONFIG = "MISSING_CONFIG"
    INVALID_CONFIG = "INVALID_CONFIG"
    INVALID_RETRY = "INVALID_RETRY"
    INVALID_TIMEOUT = "INVALID_TIMEOUT"
    INVALID_EXPRESSION = "INVALID_EXPRESSION"
    INVALID_TEMPLATE = "INVALID_TEMPLATE"
    INVALID_SCHEMA = "INVALID_SCHEMA"
    VALUE_TOO_LARGE = "VALUE_TOO_LARGE"
    UNKNOWN_REFERENCE = "UNKNOWN_REFERENCE"
    REFERENCE_NOT_ANCESTOR = "REFERENCE_NOT_ANCESTOR"
    REFERENCE_OUT_OF_SCOPE = "REFERENCE_OUT_OF_SCOPE"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One validation problem. ``field`` is the dotted path inside the node ("config.expression")."""

    code: str
    message: str
    node_id: str = ""
    edge_id: str = ""
    field: str = ""

    def to_json(self) -> dict[str, Any]:
        """The SPEC section 6 form: ``{code, message, nodeId?, edgeId?, field?}``."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.node_id:
            out["nodeId"] = self.node_id
        if self.edge_id:
            out["edgeId"] = self.edge_id
        if self.field:
            out["field"] = self.field
        return out


def diagnostics_to_json(diagnostics: list[Diagnostic]) -> list[dict[str, Any]]:
    return [d.to_json() for d in diagnostics]


_MAX_MESSAGE = 1_000
_MAX_NAME = 300


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class DiagnosticSink:
    """Collects diagnostics up to a cap, so hostile input gets a bounded answer."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: list[Diagnostic] = []
        self.dropped = 0

    def add(
        self, code: str, message: str, *, node_id: str = "", edge_id: str = "", field: str = ""
    ) -> None:
        if len(self.items) >= self.limit:
            self.dropped += 1
            return
        # Hostile ids and values must not blow up the answer: every text is bounded.
        self.items.append(Diagnostic(code, _clip(message, _MAX_MESSAGE), _clip(node_id, _MAX_NAME),
                                     _clip(edge_id, _MAX_NAME), _clip(field, _MAX_NAME)))

    def __bool__(self) -> bool:
        return bool(self.items)

    def result(self) -> list[Diagnostic]:
        if not self.dropped:
            return list(self.items)
        return [
            *self.items,
            Diagnostic(
                Code.TOO_MANY_DIAGNOSTICS,
                f"{self.dropped} more problems not listed (at most {self.limit} are reported)",
            ),
        ]

"""The node handler interface: one handler per node type, registered by type name.

A handler turns a node's config (already able to resolve references through ``ctx``) into a
``NodeResult``: data plus signals (which handles fire, pause, variable assignments). Failures are
``NodeFailure`` exceptions carrying a code a user can route on. Handlers never touch the database,
the event bus or the graph: the engine does. A new node type is a new handler, not an engine change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from weft_common.compiled import CompiledNode

    from ..records import Scope

__all__ = [
    "HANDLERS",
    "NodeContext",
    "NodeFailure",
    "NodeHandler",
    "NodeResult",
    "Pause",
    "Resolver",
    "register",
]


class NodeFailure(Exception):
    """A node failed. ``code`` is what error edges and users route on (``HTTP_STATUS``,
    ``TIMEOUT``, ``ENV_NOT_ALLOWED``, ``ROUTE_UNKNOWN``, ``OUTPUT_TOO_LARGE``, ...)."""

    def __init__(
        self,
        message: str,
        code: str = "NODE_FAILED",
        *,
        status: int | None = None,
        details: dict[str, Any] | None = None,
        retryable: bool = True,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.details = details
        self.retryable = retryable

    def to_error(self, node_id: str) -> dict[str, Any]:
        """The SPEC error object ``{message, code, nodeId, status?}``."""
        err: dict[str, Any] = {"message": self.message, "code": self.code, "nodeId": node_id}
        if self.status is not None:
            err["status"] = self.status
        if self.details:
            err["details"] = self.details
        return err


@dataclass(slots=True)
class Pause:
    """Park this node: the execution pauses until a resume (approval) or ``wake_at`` (wait)."""

    reason: str = ""
    input_schema: dict[str, Any] | None = None
    wake_at: float | None = None  # epoch seconds, durable waits


@dataclass(slots=True)
class NodeResult:
    output: Any = None
    # Handles whose edges fire. Default: the plain "out" edges.
    handles: tuple[str, ...] = ("out",)
    pause: Pause | None = None
    # setVariable: names → values, applied execution-wide (last write wins).
    variables: dict[str, Any] | None = None
    token_usage: dict[str, Any] | None = None
    # The resolved input, recorded in the node log (defaults to the resolved config).
    input: Any = None
    # Extra fields for this run's node:completed event (a sub-workflow's childExecutionId).
    event_fields: dict[str, Any] | None = None


class Resolver(Protocol):
    """Resolves references for one node run (its scope, the execution's variables, env)."""

    def render(self, value: Any) -> Any:
        """Render templates in a config value (whole-template strings keep their type)."""

    def evaluate(self, expression: str) -> Any:
        """Evaluate a JSONata expression (sandboxed: bounded time and depth, no I/O)."""


@dataclass(slots=True)
class NodeContext:
    execution_id: str
    node: CompiledNode
    scope: Scope
    attempt: int
    resolver: Resolver
    # `{{execution.id}}`-scoped key, the same on every attempt and after a crash.
    idempotency_key: str
    # Emit a `stream:chunk` event (LLM tokens); the engine orders and persists them.
    emit_chunk: Callable[[str], None]
    # Set when an approval node is being resumed: the validated resume input.
    resume_input: Any = None
    resumed: bool = False
    # Services a handler may use (the shared httpx client, settings, sub-workflow starter, ...).
    services: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


class NodeHandler(Protocol):
    type: ClassVar[str]

    async def execute(self, ctx: NodeContext) -> NodeResult: ...


HANDLERS: dict[str, NodeHandler] = {}


def register(handler: NodeHandler) -> NodeHandler:
    """Register a handler instance under its ``type``."""
    HANDLERS[handler.type] = handler
    return handler

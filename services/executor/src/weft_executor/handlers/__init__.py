"""Node handlers by type; importing this package registers the built-in ones."""

from __future__ import annotations

from . import (  # noqa: F401  (registration)
    branching,
    http,
    llm,
    pausing,
    simple,
    start,
    subworkflow,
    transform,
)
from .base import HANDLERS, NodeContext, NodeFailure, NodeHandler, NodeResult, Pause, register

__all__ = [
    "HANDLERS",
    "NodeContext",
    "NodeFailure",
    "NodeHandler",
    "NodeResult",
    "Pause",
    "register",
]

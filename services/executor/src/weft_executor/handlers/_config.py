"""Small shared pieces for handlers: the executor settings a handler runs under, config access."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..settings import ExecutorSettings
from .base import NodeContext, NodeFailure

__all__ = ["config_of", "require", "settings_of"]

# Defaults without reading the environment (settings are read once, in __main__).
_DEFAULTS = ExecutorSettings.model_construct()


def settings_of(ctx: NodeContext) -> ExecutorSettings:
    """The settings the engine passed through ``ctx.services.settings``, else the defaults."""
    settings = getattr(ctx.services, "settings", None)
    return settings if isinstance(settings, ExecutorSettings) else _DEFAULTS


def config_of(ctx: NodeContext) -> Mapping[str, Any]:
    return ctx.node.config or {}


def require(ctx: NodeContext, key: str) -> Any:
    """A required config field; fails with CONFIG_INVALID naming the node and the field."""
    value = config_of(ctx).get(key)
    if value is None or value == "":
        raise NodeFailure(
            f"{ctx.node.type} node {ctx.node.id!r}: config.{key} is required",
            code="CONFIG_INVALID",
            retryable=False,
        )
    return value

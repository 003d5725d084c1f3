"""dag-builder settings: ``WEFT_*`` environment variables, read once in ``__main__``."""

from __future__ import annotations

from weft_common.settings import CommonSettings

from .limits import DEFAULT_LIMITS, Limits

__all__ = ["DagBuilderSettings"]


class DagBuilderSettings(CommonSettings):
    port: int = 50051
    # Size limits on the definitions it accepts (docs/dag-builder.md).
    max_nodes: int = DEFAULT_LIMITS.max_nodes
    max_edges: int = DEFAULT_LIMITS.max_edges
    max_nesting_depth: int = DEFAULT_LIMITS.max_nesting_depth
    max_string_chars: int = DEFAULT_LIMITS.max_string_chars
    max_expression_chars: int = DEFAULT_LIMITS.max_expression_chars
    max_diagnostics: int = DEFAULT_LIMITS.max_diagnostics

    def limits(self) -> Limits:
        return Limits(
            max_nodes=self.max_nodes,
            max_edges=self.max_edges,
            max_nesting_depth=self.max_nesting_depth,
            max_string_chars=self.max_string_chars,
            max_expression_chars=self.max_expression_chars,
            max_diagnostics=self.max_diagnostics,
        )

"""Size limits that keep validation and compilation bounded on hostile input (docs/dag-builder.md)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_LIMITS", "Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    max_nodes: int = 100_000
    max_edges: int = 500_000
    # Containers nested inside containers (a top-level node has depth 0).
    max_nesting_depth: int = 64
    # Any single string in a node's config (URL, template, prompt...), in characters.
    max_string_chars: int = 1_000_000
    # A JSONata expression, in characters.
    max_expression_chars: int = 10_000
    # Objects/arrays nested inside a node's config.
    max_config_depth: int = 32
    max_name_chars: int = 256  # edge ids, branch ids, route ids
    # References ({{ }} and JSONata names) across the whole workflow.
    max_references: int = 1_000_000
    max_diagnostics: int = 1_000


DEFAULT_LIMITS = Limits()

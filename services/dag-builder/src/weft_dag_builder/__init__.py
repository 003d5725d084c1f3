"""The dag-builder: validates workflow definitions and compiles them into executable DAGs."""

from __future__ import annotations

from .compiler import compile_workflow, validate_workflow
from .diagnostics import Code, Diagnostic, diagnostics_to_json
from .limits import DEFAULT_LIMITS, Limits

__all__ = [
    "DEFAULT_LIMITS",
    "Code",
    "Diagnostic",
    "Limits",
    "compile_workflow",
    "diagnostics_to_json",
    "validate_workflow",
]

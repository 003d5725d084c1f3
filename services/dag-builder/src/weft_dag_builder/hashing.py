"""``definition_hash``: sha256 of the definition's canonical JSON.

The canonical JSON is orjson's serialization of the domain ``WorkflowDefinition`` (dataclass
fields in declaration order, every field present, object keys sorted): the same definition
always gives the same bytes, whatever key order or default-omission its JSON form used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from weft_common.workflow import WorkflowDefinition

__all__ = ["canonical_definition_bytes", "definition_hash"]

_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def canonical_definition_bytes(defn: WorkflowDefinition) -> bytes:
    return orjson.dumps(defn, default=_default, option=_OPTIONS)


def definition_hash(defn: WorkflowDefinition) -> str:
    return hashlib.sha256(canonical_definition_bytes(defn)).hexdigest()

"""Workflow definitions the gateway tests send (the fakes understand them)."""

from __future__ import annotations

from typing import Any


def linear(workflow_id: str = "linear", delay_s: float | None = None) -> dict[str, Any]:
    middle: dict[str, Any] = {"id": "work", "type": "transform", "config": {"expression": "1 + 1", "value": 2}}
    if delay_s is not None:
        middle["config"]["delayS"] = delay_s
    return {
        "id": workflow_id,
        "nodes": [
            {"id": "start", "type": "start"},
            middle,
            {"id": "out", "type": "output", "config": {"value": 42}},
        ],
        "edges": [{"source": "start", "target": "work"}, {"source": "work", "target": "out"}],
    }


APPROVAL: dict[str, Any] = {
    "id": "approval",
    "nodes": [
        {"id": "start", "type": "start"},
        {"id": "approve", "type": "approval", "config": {
            "reason": "ok to ship?",
            "inputSchema": {"type": "object", "required": ["approved"]}}},
        {"id": "out", "type": "output", "config": {"value": "shipped"}},
    ],
    "edges": [{"source": "start", "target": "approve"}, {"source": "approve", "target": "out"}],
}

FAILING: dict[str, Any] = {
    "id": "failing",
    "nodes": [{"id": "start", "type": "start"},
              {"id": "boom", "type": "fail", "config": {"message": "no luck", "code": "NOPE"}}],
    "edges": [{"source": "start", "target": "boom"}],
}

INVALID: dict[str, Any] = {
    "id": "broken",
    "nodes": [{"id": "a", "type": "transform"}, {"id": "b", "type": "teleport"}],
    "edges": [{"id": "e1", "source": "a", "target": "ghost"}],
}

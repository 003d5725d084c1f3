"""Plain renderings the CLI prints: diagnostics, event-log lines, an execution's status."""

from __future__ import annotations

import json
from typing import Any, TextIO

__all__ = ["format_event", "print_diagnostics", "print_status"]


def print_diagnostics(diagnostics: list[dict[str, Any]], out: TextIO) -> None:
    for d in diagnostics:
        where = []
        if d.get("nodeId"):
            where.append(f"node {d['nodeId']}")
        if d.get("edgeId"):
            where.append(f"edge {d['edgeId']}")
        if d.get("field"):
            where.append(f"field {d['field']}")
        loc = f" ({', '.join(where)})" if where else ""
        out.write(f"  {d.get('code', 'INVALID')}{loc}: {d.get('message', '')}\n")


def format_event(data: dict[str, Any]) -> str:
    scope = "".join(f"[{s.get('container')}#{s.get('index')}]" for s in data.get("scope") or [])
    parts = [f"{data.get('seq', '?'):>4}", str(data.get("timestamp", "")), str(data.get("type", ""))]
    if data.get("nodeId"):
        parts.append(f"{data['nodeId']}{scope}")
    if data.get("error"):
        err = data["error"]
        parts.append(f"{err.get('code', '')}: {err.get('message', '')}")
    elif "content" in data:
        parts.append(json.dumps(data["content"]))
    elif "output" in data:
        text = json.dumps(data["output"], separators=(",", ":"))
        parts.append(text if len(text) <= 120 else text[:117] + "...")
    return " ".join(parts)


def print_status(execution: dict[str, Any], nodes: list[dict[str, Any]], out: TextIO) -> None:
    out.write(f"execution {execution['executionId']}  workflow {execution.get('workflowId')}\n")
    out.write(f"  status    {execution.get('status')}\n")
    out.write(f"  started   {execution.get('startedAt') or '-'}\n")
    out.write(f"  finished  {execution.get('finishedAt') or '-'}\n")
    if execution.get("error"):
        err = execution["error"]
        out.write(f"  error     {err.get('code')}: {err.get('message')} (node {err.get('nodeId')})\n")
    for p in execution.get("pausedNodes") or []:
        out.write(f"  paused at {p.get('nodeId')}: {p.get('reason') or ''}\n")
        if p.get("inputSchema"):
            out.write(f"            input schema {json.dumps(p['inputSchema'])}\n")
    if execution.get("outputs"):
        out.write(f"  outputs   {json.dumps(execution['outputs'])}\n")
    if nodes:
        out.write("  nodes:\n")
        for n in nodes:
            scope = "".join(f"[{s.get('container')}#{s.get('index')}]" for s in n.get("scope") or [])
            took = n.get("durationMs")
            took_s = f"{took:.1f} ms" if isinstance(took, (int, float)) else ""
            out.write(f"    {n.get('status', ''):<10} {n.get('nodeId')}{scope:<12} attempt {n.get('attempt')}  {took_s}\n")

"""Live progress of one execution in the terminal: nodes starting and finishing with durations,
LLM tokens as they stream, pauses, and a summary with timings.

With a terminal it uses ``rich`` (colours, symbols); otherwise one plain line per event, so logs
and CI output stay greppable. Progress goes to stderr; stdout carries only the outputs.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .api import SseEvent

__all__ = ["Progress"]


def _ts(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _scope_label(scope: Any) -> str:
    if not scope:
        return ""
    return "[" + ", ".join(f"{s.get('container')}#{s.get('index')}" for s in scope) + "]"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


class Progress:
    """Feed it SSE events (``on_event``), then ``summary(execution)`` at the end."""

    def __init__(self, stream: TextIO | None = None, *, rich_output: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.rich = self.stream.isatty() if rich_output is None else rich_output
        self.console = Console(file=self.stream, highlight=False, soft_wrap=True,
                               force_terminal=self.rich, no_color=not self.rich)
        self.started: dict[tuple[str, str], float] = {}
        self.runs: list[tuple[str, str, float, str]] = []  # node, scope, seconds, status
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.in_chunk = False
        self.events = 0

    # ------------------------------------------------------------------ output
    def _line(self, rich_text: str, plain_text: str) -> None:
        if self.in_chunk:
            self.stream.write("\n")
            self.in_chunk = False
        if self.rich:
            self.console.print(rich_text)
        else:
            self.stream.write(plain_text + "\n")
            self.stream.flush()

    def _chunk(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
        self.in_chunk = True

    # ------------------------------------------------------------------ events
    def on_event(self, event: SseEvent) -> None:
        d = event.data
        self.events += 1
        ts = _ts(d.get("timestamp"))
        if ts is not None:
            self.first_ts = self.first_ts if self.first_ts is not None else ts
            self.last_ts = ts
        node = str(d.get("nodeId") or "")
        scope = _scope_label(d.get("scope"))
        key = (node, scope)
        label = f"{node}{scope}"
        kind = d.get("nodeType") or ""
        t = event.type
        if t == "execution:started":
            self._line(f"[bold]▶ execution {escape(str(d.get('executionId')))}[/] started",
                       f"execution:started {d.get('executionId')}")
        elif t == "node:started":
            self.started[key] = ts or 0.0
            self._line(f"  [cyan]●[/] {escape(str(label))} [dim]{escape(str(kind))}[/]", f"node:started {label} {kind}".rstrip())
        elif t in ("node:completed", "node:error", "node:cancelled"):
            took = (ts or 0.0) - self.started.pop(key, ts or 0.0)
            status = {"node:completed": "ok", "node:error": "error", "node:cancelled": "cancelled"}[t]
            self.runs.append((node, scope, took, status))
            if t == "node:completed":
                self._line(f"  [green]✔[/] {escape(str(label))} [dim]{_ms(took)}[/]", f"{t} {label} {_ms(took)}")
            else:
                err = d.get("error") or {}
                msg = f"{err.get('code', '')}: {err.get('message', '')}" if err else ""
                self._line(f"  [red]✖[/] {escape(str(label))} [red]{escape(str(msg))}[/] [dim]{_ms(took)}[/]",
                           f"{t} {label} {_ms(took)} {msg}".rstrip())
        elif t == "node:retrying":
            err = d.get("error") or {}
            self._line(f"  [yellow]↻[/] {escape(str(label))} retrying [dim]{escape(str(err.get('message', '')))}[/]",
                       f"{t} {label} {err.get('message', '')}".rstrip())
        elif t == "node:skipped":
            self._line(f"  [dim]· {escape(str(label))} skipped[/]", f"{t} {label}")
        elif t == "stream:chunk":
            if not self.in_chunk:
                self._line(f"  [magenta]✎[/] {escape(str(label))}:", f"stream {label}:")
            self._chunk(str(d.get("content", "")))
        elif t == "stream:done":
            if self.in_chunk:
                self.stream.write("\n")
                self.in_chunk = False
        elif t == "execution:paused":
            self._line("[yellow]⏸ paused[/] — waiting for a resume", "execution:paused")
        elif t == "execution:resumed":
            self._line("[yellow]▶ resumed[/]", "execution:resumed")
        elif t in ("execution:completed", "execution:failed", "execution:cancelled"):
            colour = {"execution:completed": "green", "execution:failed": "red"}.get(t, "yellow")
            self._line(f"[bold {escape(str(colour))}]■ {escape(str(t.split(':')[1]))}[/]", t)
        else:
            self._line(f"  {t} {label}", f"{t} {label}".rstrip())

    def paused_nodes(self, execution: dict[str, Any]) -> None:
        """What each parked node waits for, and the command that resumes it."""
        eid = execution.get("executionId", "ID")
        for p in execution.get("pausedNodes") or []:
            node = str(p.get("nodeId"))
            schema = p.get("inputSchema")
            required = (schema or {}).get("required") if isinstance(schema, dict) else None
            args = " ".join(f"--input {name}=..." for name in required or []) or "--input key=value"
            scope = f" (scope {p['scope']})" if p.get("scope") else ""
            self._line(
                f"  [yellow]⏸[/] {escape(node)}{escape(scope)}: {escape(str(p.get('reason') or ''))}\n"
                f"    [dim]input schema {escape(json.dumps(schema))}[/]\n"
                f"    resume: [bold]weft resume {escape(str(eid))} {escape(node)} {escape(args)}[/]",
                f"paused {node}{scope}: {p.get('reason') or ''}\n"
                f"  resume: weft resume {eid} {node} {args}",
            )

    # ------------------------------------------------------------------ summary
    def summary(self, execution: dict[str, Any]) -> None:
        started, finished = _ts(execution.get("startedAt")), _ts(execution.get("finishedAt"))
        total = (finished - started) if started and finished else (
            (self.last_ts or 0.0) - (self.first_ts or 0.0))
        ok = sum(1 for r in self.runs if r[3] == "ok")
        failed = sum(1 for r in self.runs if r[3] != "ok")
        usage = execution.get("tokenUsage") or {}
        tokens = (f", tokens {usage.get('inputTokens', 0)} in / {usage.get('outputTokens', 0)} out"
                  if usage.get("inputTokens") or usage.get("outputTokens") else "")
        status = execution.get("status", "?")
        line = (f"{status} in {_ms(total)}: {ok} node run(s) ok, {failed} failed/cancelled, "
                f"{self.events} events{tokens}")
        slowest = sorted(self.runs, key=lambda r: r[2], reverse=True)[:5]
        if self.rich:
            colour = "green" if status == "SUCCEEDED" else "red"
            self._line(f"[bold {escape(str(colour))}]{escape(str(line))}[/]", line)
            if slowest:
                table = Table(title="slowest nodes", title_justify="left", box=None, pad_edge=False)
                table.add_column("node")
                table.add_column("time", justify="right")
                for node, scope, took, _ in slowest:
                    table.add_row(escape(f"{node}{scope}"), _ms(took))
                self.console.print(table)
        else:
            self._line(line, line)
            for node, scope, took, _ in slowest:
                self._line("", f"  slowest: {node}{scope} {_ms(took)}")
        err = execution.get("error")
        if err:
            self._line(f"[red]error at {escape(str(err.get('nodeId')))}: {escape(str(err.get('code')))}: {escape(str(err.get('message')))}[/]",
                       f"error at {err.get('nodeId')}: {err.get('code')}: {err.get('message')}")

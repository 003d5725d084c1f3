"""The CLI's live progress: one plain line per event without a terminal, tokens inline, a summary."""

from __future__ import annotations

import io

from weft_cli.api import SseEvent
from weft_cli.progress import Progress


def ev(seq: int, etype: str, ms: int, **fields: object) -> SseEvent:
    data = {"seq": seq, "type": etype, "executionId": "ex1",
            "timestamp": f"2026-01-01T00:00:00.{ms:03d}Z", **fields}
    return SseEvent(str(seq), etype, data)


def test_plain_progress_and_summary() -> None:
    out = io.StringIO()
    p = Progress(out, rich_output=False)
    for e in [
        ev(1, "execution:started", 0),
        ev(2, "node:started", 1, nodeId="fetch", nodeType="http", scope=[]),
        ev(3, "node:retrying", 5, nodeId="fetch", scope=[], error={"message": "503"}),
        ev(4, "node:completed", 41, nodeId="fetch", scope=[]),
        ev(5, "node:started", 42, nodeId="chat", nodeType="llm", scope=[{"container": "p", "index": 1}]),
        ev(6, "stream:chunk", 50, nodeId="chat", scope=[{"container": "p", "index": 1}], content="Hello"),
        ev(7, "stream:chunk", 60, nodeId="chat", scope=[{"container": "p", "index": 1}], content=" world"),
        ev(8, "stream:done", 61, nodeId="chat", scope=[{"container": "p", "index": 1}]),
        ev(9, "node:error", 70, nodeId="chat", scope=[{"container": "p", "index": 1}],
           error={"code": "LLM_HTTP", "message": "boom [x]"}),
        ev(10, "node:skipped", 71, nodeId="after"),
        ev(11, "execution:failed", 72),
    ]:
        p.on_event(e)
    p.summary({"status": "FAILED", "startedAt": "2026-01-01T00:00:00.000Z",
               "finishedAt": "2026-01-01T00:00:00.072Z",
               "error": {"nodeId": "chat", "code": "LLM_HTTP", "message": "boom [x]"},
               "tokenUsage": {"inputTokens": 7, "outputTokens": 2}})
    lines = out.getvalue().splitlines()
    assert lines[0] == "execution:started ex1"
    assert "node:started fetch http" in lines
    assert "node:retrying fetch 503" in lines
    assert "node:completed fetch 40.0 ms" in lines
    assert "stream chat[p#1]:" in lines
    assert "Hello world" in lines  # tokens stream inline on one line
    assert "node:error chat[p#1] 28.0 ms LLM_HTTP: boom [x]" in lines
    assert "node:skipped after" in lines
    summary = next(line for line in lines if line.startswith("FAILED in"))
    assert summary == ("FAILED in 72.0 ms: 1 node run(s) ok, 1 failed/cancelled, 11 events, "
                       "tokens 7 in / 2 out")
    assert "  slowest: fetch 40.0 ms" in lines
    assert lines[-1] == "error at chat: LLM_HTTP: boom [x]"


def test_rich_output_escapes_markup() -> None:
    out = io.StringIO()
    p = Progress(out, rich_output=True)
    p.on_event(ev(1, "node:started", 1, nodeId="n", nodeType="t", scope=[{"container": "loop", "index": 0}]))
    p.on_event(ev(2, "node:error", 2, nodeId="n", scope=[{"container": "loop", "index": 0}],
                  error={"code": "E", "message": "[bold]not markup[/bold]"}))
    text = out.getvalue()
    assert "n[loop#0]" in text
    assert "[bold]not markup[/bold]" in text


def test_pause_shows_how_to_resume() -> None:
    out = io.StringIO()
    p = Progress(out, rich_output=False)
    p.on_event(ev(1, "execution:paused", 1))
    p.paused_nodes({"executionId": "ex9", "pausedNodes": [
        {"nodeId": "manager", "scope": [], "reason": "approve?",
         "inputSchema": {"type": "object", "required": ["approved", "by"]}}]})
    lines = out.getvalue().splitlines()
    assert lines == ["execution:paused", "paused manager: approve?",
                     "  resume: weft resume ex9 manager --input approved=... --input by=..."]

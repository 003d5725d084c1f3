"""Log records inside a node attempt carry the execution and node ids (docs/operations.md, Logs),
whatever the telemetry: fully off (the handler is called directly, no span helper runs), off with
a per-attempt timeout, metrics only, and tracing on. Both the handler's own records and the
engine's line about a handler that raised, in the JSON and the text format."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from helpers.engine import Script, W, start_json, wf
from opentelemetry import context as otel_context

from weft_common._telemetry_state import flags
from weft_common.logging_setup import ContextFilter, JsonFormatter, TextFormatter, current_log_ids
from weft_common.telemetry import telemetry_for_tests
from weft_executor.handlers.base import NodeContext, NodeResult
from weft_executor.tracing import begin_execution_run, end_execution_run

NODE_LOGGER = "weft.test.node_logs"
ENGINE_LOGGER = "weft_executor.attempts"  # "node %s (%s) handler raised"


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """(JSON lines, text lines) of the node logger and the engine's attempts logger, through the
    handlers ``setup_logging`` installs (``ContextFilter`` + formatter)."""
    json_out, text_out = io.StringIO(), io.StringIO()
    handlers: list[logging.Handler] = []
    for stream, formatter in ((json_out, JsonFormatter()), (text_out, TextFormatter())):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        handler.addFilter(ContextFilter("weft-executor"))
        handlers.append(handler)
    loggers = [logging.getLogger(name) for name in (NODE_LOGGER, ENGINE_LOGGER)]
    saved = [(lg.handlers[:], lg.propagate, lg.level) for lg in loggers]
    for lg in loggers:
        lg.handlers[:] = handlers
        lg.propagate = False
        lg.setLevel(logging.INFO)
    try:
        yield json_out, text_out
    finally:
        for lg, (old_handlers, propagate, level) in zip(loggers, saved, strict=True):
            lg.handlers[:] = old_handlers
            lg.propagate = propagate
            lg.setLevel(level)


@pytest.fixture(params=["telemetry_off", "metrics_only", "tracing"])
def telemetry_mode(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    mode: str = request.param
    if mode == "telemetry_off":
        monkeypatch.setattr(flags, "tracing", False)
        monkeypatch.setattr(flags, "metrics", False)
        yield mode
        return
    tel = telemetry_for_tests()
    flags.tracing = mode == "tracing"
    try:
        yield mode
    finally:
        tel.stop()


def _logs(message: str) -> Any:
    async def run(ctx: NodeContext) -> NodeResult:
        logging.getLogger(NODE_LOGGER).warning("%s %s", message, ctx.node.id)
        return NodeResult(output=message)

    return run


async def _raises(ctx: NodeContext) -> NodeResult:
    raise RuntimeError("handler bug")


async def test_node_attempt_logs_carry_execution_and_node_ids(
    telemetry_mode: str,
    captured: tuple[io.StringIO, io.StringIO],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = Script.install(monkeypatch)
    script.on("talk", _logs("hello from"))
    script.on("timed", _logs("bounded"))
    script.on("inner", _logs("iteration of"))
    script.on("boom", _raises)
    workflow = wf(
        W("talk"),
        W("timed", timeoutMs=5000),  # run_attempt's path even with telemetry off
        {"id": "each", "type": "loop", "config": {"kind": "for", "count": 2}},
        W("inner", parent="each"),
        W("boom", retry={"maxAttempts": 1}),
        edges=[("start", "talk"), ("talk", "timed"), ("timed", "each"), ("each", "boom")],
    )
    # What the worker does: the run's scope (span or log ids) around the engine run, in this task.
    token = otel_context.attach(otel_context.Context())
    try:
        begin_execution_run("ex-log", workflow["id"], first_run=True)
        try:
            run = start_json(workflow, execution_id="ex-log")
            outcome = await run.wait()
        finally:
            end_execution_run()
    finally:
        otel_context.detach(token)
    assert outcome.status == "FAILED"
    assert current_log_ids() == (None, None)  # nothing leaks out of the run
    logging.getLogger(NODE_LOGGER).warning("after the run")

    json_out, text_out = captured
    records = [json.loads(line) for line in json_out.getvalue().splitlines()]
    by_msg = {r["msg"]: r for r in records}
    expected = {
        "hello from talk": "talk",
        "bounded timed": "timed",
        "iteration of inner": "inner",
        "node boom (wait) handler raised": "boom",
    }
    assert [r["msg"] for r in records].count("iteration of inner") == 2
    for msg, node_id in expected.items():
        record = by_msg[msg]
        assert record["execution_id"] == "ex-log", (telemetry_mode, record)
        assert record["node_id"] == node_id, (telemetry_mode, record)
        assert record["service"] == "weft-executor"
        assert ("trace_id" in record) is (telemetry_mode == "tracing"), record
    assert "handler bug" in by_msg["node boom (wait) handler raised"]["exc"]
    after = by_msg["after the run"]
    assert "execution_id" not in after and "node_id" not in after

    lines = text_out.getvalue().splitlines()
    for msg, node_id in expected.items():
        [line] = [ln for ln in lines if f": {msg} [" in ln][:1]
        assert f"execution_id=ex-log node_id={node_id}" in line, (telemetry_mode, line)
    [after_line] = [ln for ln in lines if ln.endswith(": after the run")]
    assert "node_id=" not in after_line

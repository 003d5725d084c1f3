"""The engine's run loop (SPEC sections 2-5): scheduling, dead paths, joins, errors as routes,
retries, timeouts, limits, cancellation, concurrency bounds, outputs and event order."""

from __future__ import annotations

import asyncio
import time

import pytest
from helpers.engine import (
    ACCEPTANCE_ENV,
    O,
    Script,
    T,
    W,
    echo_scope,
    fail,
    flaky,
    run_json,
    settings,
    sleep,
    start_json,
    trace,
    value,
    wf,
)

from weft_executor import Engine
from weft_executor.handlers.base import NodeContext, NodeResult
from weft_executor.records import NodeStatus


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Script:
    return Script.install(monkeypatch)


async def test_linear_chain_outputs_and_exact_event_order() -> None:
    run = await run_json(
        wf(
            T("a", "start.x + 1"),
            T("b", "a * 2"),
            O("out", "{{b}}"),
            edges=[("start", "a"), ("a", "b"), ("b", "out")],
        ),
        {"x": 3},
    )
    assert run.outcome.status == "SUCCEEDED"
    assert run.outcome.outputs == {"out": 8}
    assert trace(run.events) == [
        "execution:started",
        "node:started start",
        "node:completed start",
        "node:started a",
        "node:completed a",
        "node:started b",
        "node:completed b",
        "node:started out",
        "node:completed out",
        "execution:completed",
    ]
    completed = {e["nodeId"]: e["output"] for e in run.events if e["type"] == "node:completed"}
    assert completed == {"start": {"x": 3}, "a": 4, "b": 8, "out": 8}
    assert run.events[-1]["outputs"] == {"out": 8}
    assert [e["seq"] for e in run.events] == list(range(1, len(run.events) + 1))


async def test_fan_out_runs_concurrently_and_join_waits_for_all(script: Script) -> None:
    for n in ("a", "b", "c"):
        script.on(n, sleep(0.3, output=n))
    run = await run_json(
        wf(
            W("a"),
            W("b"),
            W("c"),
            T("join", "[a, b, c]"),
            O("out", "{{join}}"),
            edges=[
                ("start", "a"),
                ("start", "b"),
                ("start", "c"),
                ("a", "join"),
                ("b", "join"),
                ("c", "join"),
                ("join", "out"),
            ],
        ),
    )
    assert run.outcome.outputs == {"out": ["a", "b", "c"]}
    assert script.max_running == 3  # all three were in their handlers at the same time
    t = trace(run.events)
    assert t.index("node:started join") > max(t.index(f"node:completed {n}") for n in "abc")
    assert t.count("node:started join") == 1


async def test_untaken_branch_is_skipped_with_its_whole_path_and_join_runs_once() -> None:
    run = await run_json(
        wf(
            {
                "id": "check",
                "type": "condition",
                "config": {"branches": [{"id": "big", "when": "start.n > 10"}, {"id": "else"}]},
            },
            T("big1", "'big'"),
            T("big2", "big1 & '!'"),
            T("small", "'small'"),
            T("join", "$exists(big2) ? big2 : small"),
            O("out", "{{join}}"),
            O("only_big", "{{big2}}", name="onlyBig"),
            edges=[
                ("start", "check"),
                ("check", "big1", "condition:big"),
                ("big1", "big2"),
                ("check", "small", "condition:else"),
                ("big2", "join"),
                ("small", "join"),
                ("join", "out"),
                ("big2", "only_big"),
            ],
        ),
        {"n": 1},
    )
    assert run.outcome.outputs == {"out": "small"}  # only_big was skipped: not an output
    t = trace(run.events)
    for skipped in ("big1", "big2", "only_big"):
        assert f"node:skipped {skipped}" in t
        assert f"node:started {skipped}" not in t
    assert t.count("node:completed join") == 1
    assert t.index("node:skipped big2") < t.index("node:started join")
    check = next(e for e in run.events if e["type"] == "node:completed" and e["nodeId"] == "check")
    assert check["output"] == {"branch": "else"}
    steps = run.store.steps
    assert steps["big1"].status is NodeStatus.SKIPPED and steps["big2"].status is NodeStatus.SKIPPED


async def test_skipped_ancestor_resolves_to_null_in_templates() -> None:
    run = await run_json(
        wf(
            {
                "id": "check",
                "type": "condition",
                "config": {"branches": [{"id": "yes", "when": "false"}, {"id": "else"}]},
            },
            T("never", "'x'"),
            T("other", "'y'"),
            O("out", "got {{never}} and {{other}}"),
            O("whole", "{{never}}"),
            edges=[
                ("start", "check"),
                ("check", "never", "condition:yes"),
                ("check", "other", "condition:else"),
                ("never", "out"),
                ("other", "out"),
                ("never", "whole"),
                ("other", "whole"),
            ],
        ),
    )
    assert run.outcome.outputs == {"out": "got null and y", "whole": None}


async def test_error_edge_routes_failure_and_kills_success_edges(script: Script) -> None:
    script.on("boom", fail("upstream said no", "HTTP_STATUS", status=503, retryable=False))
    run = await run_json(
        wf(
            W("boom"),
            T("handle", "boom.error"),
            T("never", "'no'"),
            O("out", "{{handle}}"),
            edges=[
                ("start", "boom"),
                ("boom", "handle", "error"),
                ("boom", "never"),
                ("handle", "out"),
            ],
        ),
    )
    assert run.outcome.status == "SUCCEEDED"
    assert run.outcome.outputs == {
        "out": {
            "message": "upstream said no",
            "code": "HTTP_STATUS",
            "nodeId": "boom",
            "status": 503,
        }
    }
    t = trace(run.events)
    assert t[t.index("node:started boom") + 1] == "node:error boom"
    assert "node:skipped never" in t and "node:started never" not in t
    err = next(e for e in run.events if e["type"] == "node:error")
    assert err["error"]["code"] == "HTTP_STATUS"
    assert run.store.steps["boom"].fired_handles == ("error",)


async def test_unrouted_failure_fails_execution_and_cancels_running_nodes(script: Script) -> None:
    script.on("boom", fail("kaput", "E_X", after=0.05, retryable=False))
    script.on("slow", sleep(30))
    t0 = time.perf_counter()
    run = await run_json(
        wf(
            W("boom"),
            W("slow"),
            T("after", "1"),
            T("after_slow", "2"),
            edges=[("start", "boom"), ("start", "slow"), ("boom", "after"), ("slow", "after_slow")],
        ),
    )
    assert time.perf_counter() - t0 < 5
    assert run.outcome.status == "FAILED"
    assert run.outcome.error == {"message": "kaput", "code": "E_X", "nodeId": "boom"}
    assert script.cancelled == ["slow"]
    t = trace(run.events)
    assert t[-3:] == ["node:error boom", "node:cancelled slow", "execution:failed"]
    assert "node:started after" not in t and "node:started after_slow" not in t
    assert run.events[-1]["error"]["nodeId"] == "boom"
    assert run.store.control.error == run.outcome.error
    assert run.store.status == "FAILED"


async def test_retries_with_backoff_emit_retrying_between_attempts(script: Script) -> None:
    script.on("f", flaky(2))
    run = await run_json(
        wf(
            {
                **W("f"),
                "retry": {"maxAttempts": 3, "initialIntervalMs": 20, "backoffCoefficient": 3.0},
            },
            O("out", "{{f}}"),
            edges=[("start", "f"), ("f", "out")],
        ),
    )
    assert run.outcome.outputs == {"out": {"output": "ok", "attempt": 3}}
    assert [x for x in trace(run.events) if x.endswith(" f")] == [
        "node:started f",
        "node:retrying f",
        "node:retrying f",
        "node:completed f",
    ]
    retrying = [e for e in run.events if e["type"] == "node:retrying"]
    assert [e["attempt"] for e in retrying] == [1, 2]
    assert [e["delayMs"] for e in retrying] == [20, 60]
    assert retrying[0]["error"]["code"] == "FLAKY"
    log = next(n for n in run.store.node_logs if n.node_id == "f")
    assert log.attempt == 3 and log.status is NodeStatus.SUCCEEDED


async def test_retries_exhausted_and_non_retryable_failures(script: Script) -> None:
    script.on("f", flaky(5))
    script.on("g", fail("bad input", "INPUT", retryable=False))
    retry = {"maxAttempts": 2, "initialIntervalMs": 1}
    run = await run_json(
        wf(
            {**W("f"), "retry": retry},
            {**W("g"), "retry": retry},
            T("fe", "f.error.code"),
            T("ge", "g.error.code"),
            edges=[("start", "f"), ("start", "g"), ("f", "fe", "error"), ("g", "ge", "error")],
        ),
    )
    assert run.outcome.outputs == {"fe": "FLAKY", "ge": "INPUT"}
    assert script.calls["f"] == 2 and script.calls["g"] == 1
    assert run.node_events("g").count("node:retrying") == 0


async def test_timeout_bounds_each_attempt_and_is_routable(script: Script) -> None:
    script.on("slow", sleep(5))
    t0 = time.perf_counter()
    run = await run_json(
        wf(
            {**W("slow"), "timeoutMs": 50, "retry": {"maxAttempts": 2, "initialIntervalMs": 1}},
            T("handled", "slow.error.code"),
            edges=[("start", "slow"), ("slow", "handled", "error")],
        ),
    )
    assert time.perf_counter() - t0 < 4.5  # two attempts cut at 50 ms, not two 5 s sleeps
    assert run.outcome.outputs == {"handled": "TIMEOUT"}
    assert script.calls["slow"] == 2
    assert run.node_events("slow") == ["node:started", "node:retrying", "node:error"]


async def test_output_over_the_limit_fails_with_output_too_large(script: Script) -> None:
    script.on("big", value("x" * 5000))
    run = await run_json(
        wf(
            W("big"),
            T("code", "big.error.code"),
            edges=[("start", "big"), ("big", "code", "error")],
        ),
        max_output_bytes=1000,
    )
    assert run.outcome.outputs == {"code": "OUTPUT_TOO_LARGE"}
    err = next(e for e in run.events if e["type"] == "node:error")
    assert "5002 bytes" in err["error"]["message"] and "1000" in err["error"]["message"]


async def test_cancel_mid_flight_stops_running_nodes_promptly(script: Script) -> None:
    started = asyncio.Event()

    async def long(ctx: NodeContext) -> NodeResult:
        started.set()
        await asyncio.sleep(60)
        return NodeResult(output="never")

    script.on("l1", long)
    script.on("l2", sleep(60))
    run = start_json(
        wf(
            W("l1"),
            W("l2"),
            O("never", "x"),
            edges=[("start", "l1"), ("start", "l2"), ("l1", "never"), ("l2", "never")],
        ),
    )
    await asyncio.wait_for(started.wait(), 5)
    t0 = time.perf_counter()
    run.handle.cancel("user asked")
    outcome = await run.wait(5)
    assert time.perf_counter() - t0 < 5  # not the 60 s the nodes would have slept
    assert outcome.status == "CANCELLED"
    assert sorted(script.cancelled) == ["l1", "l2"]
    run.check_log()
    t = trace(run.events)
    assert sorted(t[-3:-1]) == ["node:cancelled l1", "node:cancelled l2"]
    assert t[-1] == "execution:cancelled" and run.events[-1]["reason"] == "user asked"
    assert "node:started never" not in t
    assert run.store.status == "CANCELLED"
    assert {n.node_id for n in run.store.node_logs if n.status is NodeStatus.CANCELLED} == {
        "l1",
        "l2",
    }


async def test_per_execution_concurrency_limit(script: Script) -> None:
    names = [f"n{i}" for i in range(8)]
    for n in names:
        script.on(n, sleep(0.03))
    run = await run_json(
        wf(*[W(n) for n in names], edges=[("start", n) for n in names]),
        max_concurrency_per_execution=3,
    )
    assert run.outcome.status == "SUCCEEDED"
    assert script.max_running == 3
    assert sum(script.calls.values()) == 8


async def test_per_worker_concurrency_limit_spans_executions(script: Script) -> None:
    names = [f"n{i}" for i in range(4)]
    for n in names:
        script.on(n, sleep(0.03))
    engine = Engine(settings(max_concurrency_per_worker=3), environ=ACCEPTANCE_ENV)
    workflow = wf(*[W(n) for n in names], edges=[("start", n) for n in names])
    runs = [start_json(workflow, engine=engine, execution_id=f"e{i}") for i in range(3)]
    outcomes = await asyncio.gather(*(r.wait() for r in runs))
    assert [o.status for o in outcomes] == ["SUCCEEDED"] * 3
    assert script.max_running == 3
    assert engine.worker_slots_in_use == 0


async def test_set_variable_is_execution_wide_and_last_write_wins() -> None:
    run = await run_json(
        wf(
            {"id": "s1", "type": "setVariable", "config": {"assign": {"v": 1, "w": "{{start.w}}"}}},
            {"id": "s2", "type": "setVariable", "config": {"assign": {"v": "{{var.v}}0"}}},
            O("out", "{{var}}"),
            edges=[("start", "s1"), ("s1", "s2"), ("s2", "out")],
            variables={"v": 0, "keep": True},
        ),
        {"w": "x"},
    )
    assert run.outcome.outputs == {"out": {"v": "10", "w": "x", "keep": True}}
    assert run.outcome.variables == {"v": "10", "w": "x", "keep": True}
    assert run.store.control.variables == {"v": "10", "w": "x", "keep": True}


async def test_outputs_without_output_nodes_are_the_top_level_leaves() -> None:
    run = await run_json(
        wf(
            T("a", "1"),
            T("leaf1", "a + 1"),
            T("leaf2", "'two'"),
            edges=[("start", "a"), ("a", "leaf1"), ("start", "leaf2")],
        ),
    )
    assert run.outcome.outputs == {"leaf1": 2, "leaf2": "two"}


async def test_output_node_name_is_the_output_key() -> None:
    run = await run_json(wf(O("o", "{{start}}", name="result"), edges=[("start", "o")]), {"a": 1})
    assert run.outcome.outputs == {"result": {"a": 1}}


async def test_stream_chunks_are_events_of_the_running_node(script: Script) -> None:
    async def stream(ctx: NodeContext) -> NodeResult:
        for word in ("Hel", "lo"):
            ctx.emit_chunk(word)
            await asyncio.sleep(0.01)
        return NodeResult(output="Hello", token_usage={"inputTokens": 3, "outputTokens": 2})

    script.on("talk", stream)
    run = await run_json(wf(W("talk"), edges=[("start", "talk")]))
    assert run.node_events("talk") == [
        "node:started",
        "stream:chunk",
        "stream:chunk",
        "stream:done",
        "node:completed",
    ]
    chunks = [e["content"] for e in run.events if e["type"] == "stream:chunk"]
    assert chunks == ["Hel", "lo"]
    assert run.outcome.token_usage == {"inputTokens": 3, "outputTokens": 2}
    log = next(n for n in run.store.node_logs if n.node_id == "talk")
    assert log.token_usage == {"inputTokens": 3, "outputTokens": 2}


async def test_start_validates_input_against_the_schema() -> None:
    workflow = wf(O("o", "{{start.orderId}}"), edges=[("start", "o")])
    workflow["inputSchema"] = {"type": "object", "required": ["orderId"]}
    bad = await run_json(workflow, {"nope": 1})
    assert bad.outcome.status == "FAILED"
    assert bad.outcome.error["nodeId"] == "start" and bad.outcome.error["code"] == "INPUT_INVALID"
    good = await run_json(workflow, {"orderId": "A1"})
    assert good.outcome.outputs == {"o": "A1"}


async def test_node_events_carry_node_type_and_top_level_scope_is_empty(script: Script) -> None:
    script.on("w", echo_scope())
    run = await run_json(wf(W("w"), edges=[("start", "w")]))
    node_events = [e for e in run.events if e["type"].startswith("node:")]
    assert all(e["scope"] == [] for e in node_events)
    assert {e["nodeType"] for e in node_events} == {"start", "wait"}
    assert run.outcome.outputs == {"w": []}


async def test_idempotency_key_is_stable_per_execution_and_node_run(script: Script) -> None:
    keys: list[str] = []

    async def record(ctx: NodeContext) -> NodeResult:
        keys.append(ctx.idempotency_key)
        return NodeResult(output=None) if ctx.attempt > 1 else await fail("x", "E")(ctx)

    script.on("k", record)
    await run_json(
        wf({**W("k"), "retry": {"maxAttempts": 2, "initialIntervalMs": 1}}, edges=[("start", "k")]),
        execution_id="exec-9",
    )
    assert keys == ["exec-9:k", "exec-9:k"]


async def test_each_step_is_committed_before_its_successors_start(script: Script) -> None:
    run = await run_json(
        wf(
            T("a", "1"),
            T("b", "a + 1"),
            T("c", "b + 1"),
            edges=[("start", "a"), ("a", "b"), ("b", "c")],
        ),
    )
    # Find, for each node, the commit holding its step and the one holding its successor's start.
    where_step = {}
    where_started = {}
    for i, commit in enumerate(run.store.history):
        for s in commit.steps:
            where_step[s.node_id] = i
        for e in commit.events:
            if e.type == "node:started":
                where_started[e.node_id] = i
    for a, b in (("start", "a"), ("a", "b"), ("b", "c")):
        assert where_step[a] < where_started[b] or (
            where_step[a] <= where_started[b]
            and _event_index(run, "node:completed", a) < _event_index(run, "node:started", b)
        )
    assert run.store.history[-1].control.status == "SUCCEEDED"
    assert run.store.history[-1].control.release_lease is True


def _event_index(run, type_: str, node: str) -> int:  # type: ignore[no-untyped-def]
    return next(i for i, e in enumerate(run.events) if e["type"] == type_ and e["nodeId"] == node)


async def test_a_handler_raising_cancelled_error_by_itself_is_a_node_failure(
    script: Script,
) -> None:
    async def rogue(ctx: NodeContext) -> NodeResult:
        raise asyncio.CancelledError()

    script.on("r", rogue)
    run = await run_json(
        wf(W("r"), T("why", "r.error.code"), edges=[("start", "r"), ("r", "why", "error")])
    )
    assert run.outcome.outputs == {"why": "HANDLER_ERROR"}


async def test_a_handler_bug_is_that_nodes_failure(script: Script) -> None:
    async def buggy(ctx: NodeContext) -> NodeResult:
        return {}["missing"]  # type: ignore[no-any-return]

    script.on("b", buggy)
    run = await run_json(wf(W("b"), edges=[("start", "b")]))
    assert run.outcome.status == "FAILED"
    assert run.outcome.error["code"] == "HANDLER_ERROR"
    assert "KeyError" in run.outcome.error["message"] and run.outcome.error["nodeId"] == "b"


async def test_condition_with_no_true_branch_fires_nothing() -> None:
    run = await run_json(
        wf(
            {
                "id": "c",
                "type": "condition",
                "config": {
                    "branches": [{"id": "a", "when": "false"}, {"id": "b", "when": "false"}]
                },
            },
            T("ta", "1"),
            T("tb", "2"),
            T("after", "3"),
            edges=[
                ("start", "c"),
                ("c", "ta", "condition:a"),
                ("c", "tb", "condition:b"),
                ("ta", "after"),
                ("tb", "after"),
            ],
        ),
    )
    assert run.outcome.status == "SUCCEEDED"
    assert run.outcome.outputs == {}
    assert [x for x in trace(run.events) if x.startswith("node:skipped")] == [
        "node:skipped ta",
        "node:skipped tb",
        "node:skipped after",
    ]
    done = next(e for e in run.events if e["type"] == "node:completed" and e["nodeId"] == "c")
    assert done["output"] == {"branch": None} and done["attempt"] == 1
    assert run.store.steps["c"].fired_handles == ()


async def test_handle_api_after_the_end_and_a_cancelled_waiter(script: Script) -> None:
    from weft_executor import Resume

    script.on("w", sleep(0.05, output="ok"))
    run = start_json(wf(W("w"), edges=[("start", "w")]))
    impatient = asyncio.create_task(run.handle.result())
    await asyncio.sleep(0)
    impatient.cancel()  # a caller giving up waiting does not cancel the execution
    outcome = await run.wait()
    assert outcome.status == "SUCCEEDED" and outcome.outputs == {"w": "ok"}
    assert (await run.handle.result()) is outcome  # result() again: the same outcome
    commits = run.store.commits
    run.handle.cancel("too late")  # no effect once finished
    assert run.handle.resume(Resume("r", "w")) is False
    await asyncio.sleep(0.05)
    assert run.store.commits == commits and run.types[-1] == "execution:completed"


def test_tune_gc_freezes_the_start_up_heap_once_and_raises_the_thresholds() -> None:
    # In a fresh interpreter: it changes process-wide collector state, so not in the test process.
    import subprocess
    import sys

    code = (
        "import gc\n"
        "from weft_executor.engine import GC_THRESHOLDS, tune_gc\n"
        "before = gc.get_threshold()\n"
        "assert gc.get_freeze_count() == 0\n"
        "assert tune_gc() is True\n"
        "assert gc.get_threshold() == GC_THRESHOLDS != before, (gc.get_threshold(), before)\n"
        "frozen = gc.get_freeze_count()\n"
        "assert frozen > 1000, frozen\n"
        "assert tune_gc() is False and gc.get_freeze_count() == frozen\n"
        "class Cycle:\n"
        "    pass\n"
        "c = Cycle(); c.me = c; del c\n"
        "assert gc.collect() >= 1  # cycles made after start-up are still collected\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr

"""Container semantics beyond the kinds (SPEC sections 1, 3, 4): a container's own ``timeoutMs``
and ``retry``, ``while`` conditions that read the previous iteration, and ``output`` nodes that
run several times inside containers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers.engine import (
    L,
    O,
    P,
    Script,
    T,
    W,
    eventually,
    fail,
    run_json,
    sleep,
    start_json,
    trace,
    wf,
)

from weft_executor import Resume
from weft_executor.handlers.base import NodeContext, NodeFailure, NodeResult


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Script:
    return Script.install(monkeypatch)


def with_policy(node: dict, *, retry: dict | None = None, timeout_ms: int | None = None) -> dict:
    if retry is not None:
        node["retry"] = retry
    if timeout_ms is not None:
        node["timeoutMs"] = timeout_ms
    return node


# ---------------------------------------------------------------- timeoutMs on containers
async def test_parallel_timeout_cancels_branches_and_fails_with_timeout_routably(
    script: Script,
) -> None:
    script.on("w", sleep(30))
    run = await run_json(
        wf(with_policy(P("p", kind="count", count=3), timeout_ms=50), W("w", parent="p"),
           T("why", "p.error"), edges=[("start", "p"), ("p", "why", "error")]),
    )
    assert run.outcome.status == "SUCCEEDED"
    why = run.outcome.outputs["why"]
    assert why["code"] == "TIMEOUT" and why["nodeId"] == "p"
    assert sorted(script.cancelled) == ["w@p:0", "w@p:1", "w@p:2"]
    t = trace(run.events, with_scope=True)
    i = t.index("node:error p")
    assert sorted(t[i - 3:i]) == ["node:cancelled w@p:0", "node:cancelled w@p:1",
                                  "node:cancelled w@p:2"]
    assert t[i + 1] == "node:started why"


async def test_loop_timeout_unrouted_fails_the_execution(script: Script) -> None:
    script.on("w", sleep(0.02))
    run = await run_json(
        wf(with_policy(L("L", kind="while", condition="true", maxIterations=100000),
                       timeout_ms=100),
           W("w", parent="L"), edges=[("start", "L")]),
    )
    assert run.outcome.status == "FAILED"
    assert run.outcome.error["code"] == "TIMEOUT" and run.outcome.error["nodeId"] == "L"
    assert trace(run.events)[-3:] == ["node:cancelled w", "node:error L", "execution:failed"]


async def test_container_that_finishes_in_time_is_not_affected_by_its_timeout(
    script: Script,
) -> None:
    script.on("w", sleep(0.01))
    run = await run_json(
        wf(with_policy(L("L", kind="for", count=2), timeout_ms=5000), W("w", parent="L"),
           O("out", "{{L.results}}"), edges=[("start", "L"), ("L", "out")]),
    )
    assert run.outcome.outputs == {"out": ["slept", "slept"]}
    ex = run.handle._run
    assert not ex.container_timers  # the timer went with the container


# ---------------------------------------------------------------- retry on containers
async def test_failed_loop_attempt_is_retried_as_a_whole(script: Script) -> None:
    calls = {"n": 0}

    async def second_iteration_fails_once(ctx: NodeContext) -> NodeResult:
        i = ctx.resolver.render("{{loop.index}}")
        calls["n"] += 1
        if i == 1 and calls["n"] == 2:
            raise NodeFailure("flaky body", "E_BODY", retryable=False)
        return NodeResult(output=i * 10)

    script.on("w", second_iteration_fails_once)
    run = await run_json(
        wf(with_policy(L("L", kind="for", count=3),
                       retry={"maxAttempts": 2, "initialIntervalMs": 10}),
           W("w", parent="L"), O("out", "{{L.results}}"),
           edges=[("start", "L"), ("L", "out")]),
    )
    assert run.outcome.status == "SUCCEEDED", run.outcome.error
    assert run.outcome.outputs == {"out": [0, 10, 20]}
    assert trace(run.events, with_scope=True) == [
        "execution:started", "node:started start", "node:completed start",
        "node:started L",
        "node:started w@L:0", "node:completed w@L:0",
        "node:started w@L:1", "node:error w@L:1",
        "node:retrying L",
        "node:started w@L:0", "node:completed w@L:0",
        "node:started w@L:1", "node:completed w@L:1",
        "node:started w@L:2", "node:completed w@L:2",
        "node:completed L",
        "node:started out", "node:completed out", "execution:completed",
    ]
    retrying = next(e for e in run.events if e["type"] == "node:retrying")
    assert retrying["attempt"] == 1 and retrying["error"]["code"] == "E_BODY"
    assert retrying["delayMs"] == 10
    done = next(e for e in run.events if e["type"] == "node:completed" and e["nodeId"] == "L")
    assert done["output"] == {"results": [0, 10, 20]} and done["attempt"] == 2
    log = [n for n in run.store.node_logs if n.node_id == "L"]
    assert [(n.status.value, n.attempt) for n in log] == [("SUCCEEDED", 2)]


async def test_parallel_retry_spent_routes_the_last_failure(script: Script) -> None:
    async def branch(ctx: NodeContext) -> NodeResult:
        if ctx.resolver.render("{{parallel.index}}") == 1:
            await asyncio.sleep(0.02)
            raise NodeFailure("always", "E_ALWAYS", retryable=False)
        await asyncio.sleep(30)
        return NodeResult(output="late")

    script.on("w", branch)
    run = await run_json(
        wf(with_policy(P("p", kind="count", count=3),
                       retry={"maxAttempts": 3, "initialIntervalMs": 1, "backoffCoefficient": 2}),
           W("w", parent="p"), T("why", "p.error.code"),
           edges=[("start", "p"), ("p", "why", "error")]),
    )
    assert run.outcome.outputs == {"why": "E_ALWAYS"}
    assert script.calls["w@p:1"] == 3 and script.calls["w@p:0"] == 3
    retrying = [e for e in run.events if e["type"] == "node:retrying"]
    assert [(e["nodeId"], e["attempt"], e["delayMs"]) for e in retrying] == [
        ("p", 1, 1), ("p", 2, 2)]
    assert [e["attempt"] for e in run.events
            if e["type"] == "node:error" and e["nodeId"] == "p"] == [3]
    assert len(script.cancelled) == 6  # branches 0 and 2 of every attempt


async def test_container_timeout_is_retried_and_the_retry_can_succeed(script: Script) -> None:
    attempts = {"n": 0}

    async def slow_first(ctx: NodeContext) -> NodeResult:
        attempts["n"] += 1
        if attempts["n"] == 1:
            await asyncio.sleep(30)
        return NodeResult(output="quick")

    script.on("w", slow_first)
    run = await run_json(
        wf(with_policy(P("p", kind="count", count=1), timeout_ms=300,
                       retry={"maxAttempts": 2, "initialIntervalMs": 1}),
           W("w", parent="p"), O("out", "{{p.results}}"),
           edges=[("start", "p"), ("p", "out")]),
    )
    assert run.outcome.outputs == {"out": ["quick"]}
    assert trace(run.events)[3:9] == ["node:started p", "node:started w", "node:cancelled w",
                                      "node:retrying p", "node:started w", "node:completed w"]
    retrying = next(e for e in run.events if e["type"] == "node:retrying")
    assert retrying["error"]["code"] == "TIMEOUT"


async def test_a_retried_attempt_runs_fresh_decisions_and_keys(script: Script) -> None:
    """Attempt 2 re-evaluates the items (variables may have changed) and its runs have their
    own keys (steps and idempotency keys), so a replay never mixes the two attempts."""
    keys: list[str] = []

    async def body(ctx: NodeContext) -> NodeResult:
        keys.append(ctx.idempotency_key)
        if ctx.attempt == 1 and len(keys) == 1:
            raise NodeFailure("first", "E_FIRST", retryable=False)
        return NodeResult(output=ctx.resolver.render("{{loop.item}}"))

    script.on("w", body)
    run = await run_json(
        wf({"id": "bump", "type": "setVariable", "config": {"assign": {"n": "{{var.n}}"}}},
           with_policy(L("L", kind="forEach", items="{{var.xs}}"),
                       retry={"maxAttempts": 2, "initialIntervalMs": 1}),
           W("w", parent="L"), O("out", "{{L.results}}"),
           edges=[("start", "bump"), ("bump", "L"), ("L", "out")],
           variables={"n": 1, "xs": ["a", "b"]}),
    )
    assert run.outcome.outputs == {"out": ["a", "b"]}
    assert len(keys) == 3 and keys[0] != keys[1] and keys[1] != keys[2]
    assert "L#start" in run.store.steps and any(k.startswith("L#start") and k != "L#start"
                                                for k in run.store.steps)


async def test_retry_replay_after_a_crash_in_the_second_attempt(script: Script) -> None:
    """Cut the log after each commit of a run whose loop was retried: each continuation gives the
    same outputs and a log where every node:started has one end."""
    from helpers.engine import ACCEPTANCE_ENV, Run, compile_json, settings

    from weft_executor import Engine
    from weft_executor.memory_store import RecordingStore

    state = {"failed": False}

    async def body(ctx: NodeContext) -> NodeResult:
        i = ctx.resolver.render("{{loop.index}}")
        if i == 1 and not state["failed"]:
            state["failed"] = True
            raise NodeFailure("once", "E_ONCE", retryable=False)
        return NodeResult(output=i)

    script.on("w", body)
    workflow = wf(with_policy(L("L", kind="for", count=3),
                              retry={"maxAttempts": 2, "initialIntervalMs": 1}),
                  W("w", parent="L"), O("out", "{{L.results}}"),
                  edges=[("start", "L"), ("L", "out")])
    full = await run_json(workflow)
    assert full.outcome.outputs == {"out": [0, 1, 2]}
    dag = compile_json(workflow)
    for k in range(1, len(full.store.history)):
        cut = full.store.truncated(k)
        store = RecordingStore(execution_id=cut.execution_id)
        store.events, store.steps, store.node_logs = cut.events, cut.steps, cut.node_logs
        store.seq, store.control = cut.seq, cut.control
        engine = Engine(settings(), environ=ACCEPTANCE_ENV)
        handle = engine.start(
            execution_id=store.execution_id, dag=dag, input=None, store=store,
            variables=store.control.variables, steps=list(store.steps.values()),
            emit_started=False, open_runs=store.open_runs(),
        )
        outcome = await asyncio.wait_for(handle.result(), 10)
        assert outcome.outputs == {"out": [0, 1, 2]}, (k, outcome)
        Run(dag=dag, workflow=workflow, input=None, store=store, engine=engine,
            handle=handle).check_log()


async def test_cancel_during_a_container_retry_backoff(script: Script) -> None:
    script.on("w", fail("broken", "E_B", retryable=False))
    run = start_json(
        wf(with_policy(L("L", kind="for", count=1),
                       retry={"maxAttempts": 5, "initialIntervalMs": 60000}),
           W("w", parent="L"), edges=[("start", "L")]),
    )
    await eventually(lambda: "node:retrying" in run.types)
    run.handle.cancel("stop")
    outcome = await run.wait(5)
    assert outcome.status == "CANCELLED"
    run.check_log()
    assert trace(run.events)[-2:] == ["node:cancelled L", "execution:cancelled"]


async def test_container_config_errors_are_not_retried() -> None:
    run = await run_json(
        wf(with_policy(L("L", kind="forEach", items="{{start.items}}"),
                       retry={"maxAttempts": 3, "initialIntervalMs": 1}),
           T("b", "loop.item", parent="L"), T("why", "L.error.code"),
           edges=[("start", "L"), ("L", "why", "error")]),
        {"items": 42},
    )
    assert run.outcome.outputs == {"why": "INVALID_CONFIG"}
    assert "node:retrying" not in run.types


# ---------------------------------------------------------------- while sees the last iteration
async def test_while_condition_reads_the_previous_iterations_outputs(script: Script) -> None:
    async def check(ctx: NodeContext) -> NodeResult:
        i = ctx.resolver.render("{{loop.index}}")
        return NodeResult(output={"done": i >= 2, "i": i})

    script.on("check", check)
    run = await run_json(
        wf(L("L", kind="while", condition="$not(check.done = true)"),
           W("check", parent="L"), O("out", "{{L.results}}"),
           edges=[("start", "L"), ("L", "out")]),
    )
    assert run.outcome.outputs == {"out": [{"done": False, "i": 0}, {"done": False, "i": 1},
                                           {"done": True, "i": 2}]}
    assert [run.store.steps[f"L#while:{k}"].data["value"] for k in range(4)] == [
        True, True, True, False]


async def test_while_condition_sees_loop_index_of_the_next_iteration_and_absent_body_first(
) -> None:
    run = await run_json(
        wf(L("L", kind="while", condition="$exists(b) ? b < 20 : loop.index = 0"),
           T("b", "loop.index * 10", parent="L"), O("out", "{{L.results}}"),
           edges=[("start", "L"), ("L", "out")]),
    )
    assert run.outcome.outputs == {"out": [0, 10, 20]}


async def test_while_condition_reads_a_nested_containers_results() -> None:
    run = await run_json(
        wf(L("L", kind="while", condition="$not($exists(inner)) or $sum(inner.results) < 10"),
           P("inner", kind="count", count=2, parent="L"),
           T("x", "L.index + 1 + parallel.index", parent="inner"),
           O("out", "{{L.results}}"), edges=[("start", "L"), ("L", "out")]),
    )
    # sums: 1+2=3, 2+3=5, 3+4=7, 4+5=9, 5+6=11 -> stop
    assert len(run.outcome.outputs["out"]) == 5


# ---------------------------------------------------------------- output nodes in containers
async def test_output_inside_a_loop_gives_every_run_in_iteration_order() -> None:
    run = await run_json(
        wf(L("L", kind="for", count=3), T("b", "loop.index * 2", parent="L"),
           O("each", "{{b}}", parent="L"), edges=[("start", "L"), ("b", "each")]),
    )
    assert run.outcome.outputs == {"each": [0, 2, 4]}


async def test_output_inside_a_parallel_is_in_branch_order_not_finish_order(
    script: Script,
) -> None:
    async def inverse(ctx: NodeContext) -> NodeResult:
        i = ctx.resolver.render("{{parallel.index}}")
        await asyncio.sleep(0.01 * (3 - i))
        return NodeResult(output=i)

    script.on("w", inverse)
    run = await run_json(
        wf(P("p", kind="count", count=3), W("w", parent="p"),
           O("o", "{{w}}", name="vals", parent="p"), edges=[("start", "p"), ("w", "o")]),
    )
    finished = [e["scope"][0]["index"] for e in run.events
                if e["type"] == "node:completed" and e["nodeId"] == "o"]
    assert finished == [2, 1, 0]
    assert run.outcome.outputs == {"vals": [0, 1, 2]}


async def test_output_inside_containers_skips_runs_that_did_not_happen_and_nests_flat() -> None:
    run = await run_json(
        wf(L("L", kind="for", count=2), P("p", kind="count", count=3, parent="L"),
           {"id": "c", "type": "condition", "parent": "p", "config": {"branches": [
               {"id": "odd", "when": "parallel.index % 2 = 1"}]}},
           O("o", "{{L.index}} {{parallel.index}}", parent="p"),
           L("E", kind="for", count=0), O("never", "x", parent="E"),
           edges=[("start", "L"), ("L", "E"), ("c", "o", "condition:odd")]),
    )
    assert run.outcome.outputs == {"o": ["0 1", "1 1"]}


async def test_output_of_a_retried_attempt_is_discarded(script: Script) -> None:
    state = {"n": 0}

    async def body(ctx: NodeContext) -> NodeResult:
        state["n"] += 1
        if state["n"] == 3:  # attempt 1, iteration 2 (after o@L:2 ran)
            raise NodeFailure("third run fails", "E3", retryable=False)
        if state["n"] == 4:  # attempt 2, iteration 0: only one iteration this time
            return NodeResult(output="x", variables={"limit": 1})
        return NodeResult(output="x")

    script.on("w", body)
    run = await run_json(
        wf(O("o", "{{loop.index}}", parent="L"),
           with_policy(L("L", kind="while", condition="loop.index < var.limit"),
                       retry={"maxAttempts": 2, "initialIntervalMs": 1}),
           W("w", parent="L"), edges=[("start", "L"), ("o", "w")], variables={"limit": 3}),
    )
    assert run.outcome.status == "SUCCEEDED", run.outcome.error
    # Attempt 1 ran o@L:0..2 and failed; attempt 2 ran one iteration: its run is all there is.
    assert run.outcome.outputs == {"o": [0]}
    assert sum(1 for e in run.events if e["type"] == "node:completed" and e["nodeId"] == "o") == 4


# ---------------------------------------------------------------- pauses inside retried/timed containers
def approval(id: str, **kw: Any) -> dict:
    return {"id": id, "type": "approval", "config": {"reason": f"ok {id}?"}, **kw}


async def test_approval_in_a_retried_attempt_parks_and_resumes_by_its_scope(script: Script) -> None:
    """Attempt 2's runs have their own keys, but pauses, resumes and the log name them by scope."""
    state = {"failed": False}

    async def fails_once(ctx: NodeContext) -> NodeResult:
        if not state["failed"]:
            state["failed"] = True
            raise NodeFailure("once", "E_ONCE", retryable=False)
        return NodeResult(output="ok")

    script.on("w", fails_once)
    workflow = wf(with_policy(P("p", kind="count", count=2),
                              retry={"maxAttempts": 2, "initialIntervalMs": 1}),
                  W("w", parent="p"), approval("ok", parent="p"),
                  O("out", "{{p.results}}"),
                  edges=[("start", "p"), ("p", "out"), ("w", "ok")])
    run = start_json(workflow)
    first = await run.wait()
    assert first.status == "PAUSED"
    assert sorted(p.scope[0].index for p in first.paused_nodes) == [0, 1]
    assert "node:retrying" in run.types
    assert all("~2" in k for k in run.store.steps if k.startswith("ok@"))
    run.continue_with(resumes=[Resume("r1", "ok", p.scope, f"yes{p.scope[0].index}")
                               for p in first.paused_nodes])
    done = await run.wait()
    assert done.status == "SUCCEEDED", done.error
    assert done.outputs == {"out": ["yes0", "yes1"]}
    run.check_log()
    assert run.types.count("node:retrying") == 1


async def test_a_pause_stops_the_container_clock_and_the_continuation_finishes() -> None:
    workflow = wf(with_policy(L("L", kind="for", count=1), timeout_ms=200),
                  approval("ok", parent="L"), O("out", "{{L.results}}"),
                  edges=[("start", "L"), ("L", "out")])
    run = start_json(workflow)
    first = await run.wait()
    assert first.status == "PAUSED"
    assert not run.handle._run.container_timers
    await asyncio.sleep(0.3)  # longer than timeoutMs: parked time is not the attempt's time
    run.continue_with(resumes=[Resume("r1", "ok", first.paused_nodes[0].scope, "fine")])
    done = await run.wait()
    assert done.status == "SUCCEEDED" and done.outputs == {"out": ["fine"]}
    run.check_log()


async def test_a_nested_retried_loop_discards_only_its_own_branchs_outputs(script: Script) -> None:
    """Branch 1's loop fails in its second iteration (after the output ran there); its retry
    runs one iteration only. Branch 0's runs stay; branch 1 keeps only the retry's run."""
    state = {"failed": False}

    async def body(ctx: NodeContext) -> NodeResult:
        branch, i = ctx.scope[0].index, ctx.scope[1].index
        if branch == 1 and i == 1 and not state["failed"]:
            state["failed"] = True
            raise NodeFailure("once", "E_ONCE", retryable=False)
        if branch == 1 and state["failed"]:
            return NodeResult(output=i, variables={"limit1": 1})
        return NodeResult(output=i)

    script.on("w", body)
    run = await run_json(
        wf(P("p", kind="count", count=2),
           with_policy(L("L", kind="while", parent="p",
                         condition="loop.index < (p.index = 1 ? var.limit1 : 2)"),
                       retry={"maxAttempts": 2, "initialIntervalMs": 1}),
           O("o", "{{p.index}}-{{L.index}}", parent="L"), W("w", parent="L"),
           edges=[("start", "p"), ("o", "w")], variables={"limit1": 3}),
    )
    assert run.outcome.status == "SUCCEEDED", run.outcome.error
    assert run.outcome.outputs == {"o": ["0-0", "0-1", "1-0"]}
    ran = [tuple(s["index"] for s in e["scope"]) for e in run.events
           if e["type"] == "node:completed" and e["nodeId"] == "o"]
    assert sorted(ran) == [(0, 0), (0, 1), (1, 0), (1, 0), (1, 1)]

"""Durability seams: replay after a crash at every commit, pause/resume (after a pause and while
running), cancel of a paused execution, durable waits."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from helpers.engine import (
    ACCEPTANCE_ENV,
    CASES,
    L,
    O,
    P,
    Script,
    T,
    W,
    acceptance_runner,
    compile_json,
    event_triples,
    eventually,
    settings,
    sleep,
    start_json,
    trace,
    wf,
)

from weft_executor import Engine, Resume
from weft_executor.memory_store import RecordingStore
from weft_executor.records import NodeStatus


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Script:
    return Script.install(monkeypatch)


def mixed_workflow() -> dict:
    """Top-level nodes, a condition with a dead branch, a forEach and a parallel with bodies."""
    return wf(
        W("fetch"),
        {"id": "check", "type": "condition", "config": {"branches": [
            {"id": "many", "when": "$count(start.xs) > 1"}, {"id": "else"}]}},
        T("few", "'few'"),
        L("each", kind="forEach", items="{{start.xs}}"),
        W("body", parent="each"), T("double", "body * 2", parent="each"),
        P("fan", kind="count", count=3), W("branch", parent="fan"),
        {"id": "setv", "type": "setVariable", "config": {"assign": {"seen": "{{each.results}}"}}},
        O("out", "{{fan.results}}", name="fan"), O("loop_out", "{{var.seen}}", name="loop"),
        edges=[("start", "fetch"), ("fetch", "check"), ("check", "each", "condition:many"),
               ("check", "few", "condition:else"), ("body", "double"), ("each", "setv"),
               ("setv", "fan"), ("fan", "out"), ("setv", "loop_out")],
        variables={"seen": None},
    )


def install_mixed(script: Script) -> None:
    async def body(ctx):  # type: ignore[no-untyped-def]
        from weft_executor.handlers.base import NodeResult

        await asyncio.sleep(0.001)
        return NodeResult(output=ctx.resolver.render("{{loop.item}}"))

    async def branch(ctx):  # type: ignore[no-untyped-def]
        from weft_executor.handlers.base import NodeResult

        await asyncio.sleep(0.001 * (3 - ctx.resolver.render("{{parallel.index}}")))
        return NodeResult(output=ctx.resolver.render("{{parallel.index}}"))

    script.on("fetch", sleep(0.001, output={"ok": True}))
    script.on("body", body)
    script.on("branch", branch)


EXPECTED = {"fan": [0, 1, 2], "loop": [2, 4, 6]}


async def test_replay_from_every_commit_gives_the_same_run(script: Script) -> None:
    install_mixed(script)
    workflow = mixed_workflow()
    dag = compile_json(workflow)
    full = start_json(workflow, {"xs": [1, 2, 3]}, dag=dag)
    assert (await full.wait()).outputs == EXPECTED
    full.check_log()
    total = len(full.store.history)
    assert total > 10
    runner = acceptance_runner()
    for k in range(1, total):
        cut = full.store.truncated(k)
        script.calls.clear()
        engine = Engine(settings(), environ=ACCEPTANCE_ENV)
        handle = engine.start(
            execution_id=cut.execution_id, dag=dag, input={"xs": [1, 2, 3]}, store=cut,
            variables=cut.control.variables, steps=list(cut.steps.values()),
            emit_started=False, open_runs=cut.open_runs(),
        )
        outcome = await asyncio.wait_for(handle.result(), 10)
        assert outcome.status == "SUCCEEDED", (k, outcome.error)
        assert outcome.outputs == EXPECTED, k
        runner.check_event_log(event_triples(cut), workflow)
        # Nothing that was committed ran again.
        committed = {key for key, s in full.store.truncated(k).steps.items()
                     if s.status is NodeStatus.SUCCEEDED}
        rerun = {key for key in script.calls if key in committed}
        assert not rerun, (k, rerun)
        # Every node run completed exactly once across the crash and the replay.
        completions = [(e.draft.node_id, e.draft.scope) for e in cut.events
                       if e.draft.type == "node:completed"]
        assert len(completions) == len(set(completions)), k
        assert cut.events[0].draft.type == "execution:started"
        assert sum(1 for e in cut.events if e.draft.type == "execution:started") == 1


@pytest.mark.parametrize("case", ["10_loop_while_vars", "13_nested", "03_condition_join"])
async def test_replay_acceptance_cases_from_every_commit(case: str) -> None:
    data = json.loads(next(CASES.glob(f"{case}*.json")).read_text())
    workflow = data["workflow"]
    spec = data["runs"][-1]
    dag = compile_json(workflow)
    full = start_json(workflow, spec.get("input", {}), dag=dag)
    outcome = await full.wait()
    assert outcome.outputs == spec["expect"]["outputs"]
    for k in range(1, len(full.store.history)):
        cut = full.store.truncated(k)
        engine = Engine(settings(), environ=ACCEPTANCE_ENV)
        handle = engine.start(
            execution_id=cut.execution_id, dag=dag, input=spec.get("input", {}), store=cut,
            variables=cut.control.variables, steps=list(cut.steps.values()),
            emit_started=False, open_runs=cut.open_runs(),
        )
        again = await asyncio.wait_for(handle.result(), 10)
        assert again.outputs == spec["expect"]["outputs"], k
        acceptance_runner().check_event_log(event_triples(cut), workflow)


def approval(id: str, **kw: object) -> dict:
    return {"id": id, "type": "approval", "config": {
        "reason": f"ok {id}?", "inputSchema": {"type": "object"}}, **kw}


async def test_pause_then_resume_in_a_new_run() -> None:
    workflow = wf(approval("ok"), O("out", "{{ok.by}}"), edges=[("start", "ok"), ("ok", "out")])
    run = start_json(workflow)
    paused = await run.wait()
    assert paused.status == "PAUSED"
    assert [(p.node_id, p.reason) for p in paused.paused_nodes] == [("ok", "ok ok?")]
    assert run.types[-1] == "execution:paused"
    assert run.events[-1]["pausedNodes"] == [
        {"nodeId": "ok", "scope": [], "reason": "ok ok?", "inputSchema": {"type": "object"}}]
    assert run.store.status == "PAUSED" and run.store.history[-1].control.release_lease
    assert run.store.steps["ok"].status is NodeStatus.PAUSED
    run.continue_with(resumes=[Resume("r1", "ok", (), {"by": "ada"})])
    done = await run.wait()
    assert done.status == "SUCCEEDED" and done.outputs == {"out": "ada"}
    run.check_log()
    assert trace(run.events)[3:] == [
        "node:started ok", "execution:paused", "execution:resumed ok", "node:completed ok",
        "node:started out", "node:completed out", "execution:completed"]
    assert run.store.control.applied_resume_ids == ["r1"]


async def test_resume_while_running_needs_no_pause(script: Script) -> None:
    script.on("busy", sleep(0.3))
    workflow = wf(approval("ok"), W("busy"), O("out", "{{ok}}"),
                  edges=[("start", "ok"), ("start", "busy"), ("ok", "out"), ("busy", "out")])
    run = start_json(workflow)
    await eventually(lambda: "ok" in run.store.steps)
    assert run.handle.resume(Resume("r1", "ok", (), {"yes": True})) is True
    outcome = await run.wait()
    assert outcome.status == "SUCCEEDED" and outcome.outputs == {"out": {"yes": True}}
    assert "execution:paused" not in run.types
    run.check_log()
    assert run.store.control.applied_resume_ids == ["r1"]


async def test_parked_branches_resume_independently() -> None:
    workflow = wf(P("p", kind="count", count=2), approval("ok", parent="p"),
                  O("out", "{{p.results}}"), edges=[("start", "p"), ("p", "out")])
    run = start_json(workflow)
    first = await run.wait()
    assert first.status == "PAUSED"
    assert sorted((p.node_id, p.scope[0].index) for p in first.paused_nodes) == [("ok", 0), ("ok", 1)]
    scope1 = next(p.scope for p in first.paused_nodes if p.scope[0].index == 1)
    run.continue_with(resumes=[Resume.of("r1", "ok", [{"container": "p", "index": 1}], "one")])
    second = await run.wait()
    assert second.status == "PAUSED"
    assert [p.scope for p in second.paused_nodes] == [
        tuple(s for s in first.paused_nodes[0].scope if s.index == 0)]
    assert scope1 != second.paused_nodes[0].scope
    run.continue_with(resumes=[Resume("r2", "ok", second.paused_nodes[0].scope, "zero")])
    done = await run.wait()
    assert done.outputs == {"out": ["zero", "one"]}
    run.check_log()
    assert run.types.count("execution:paused") == 2
    assert run.store.control.applied_resume_ids == ["r1", "r2"]


async def test_cancel_a_paused_execution() -> None:
    workflow = wf(approval("ok"), O("out", "x"), edges=[("start", "ok"), ("ok", "out")])
    run = start_json(workflow)
    assert (await run.wait()).status == "PAUSED"
    run.continue_with(cancel=True)
    outcome = await run.wait()
    assert outcome.status == "CANCELLED"
    run.check_log()
    assert trace(run.events)[-3:] == ["execution:paused", "node:cancelled ok", "execution:cancelled"]


async def test_durable_wait_parks_and_wakes_through_a_resume() -> None:
    workflow = wf({"id": "nap", "type": "wait", "config": {"durationMs": 1200}},
                  O("out", "{{nap.waitedMs}}"), edges=[("start", "nap"), ("nap", "out")])
    run = start_json(workflow, durable_wait_threshold_ms=1000)
    paused = await run.wait()
    assert paused.status == "PAUSED"
    assert paused.paused_nodes[0].wake_at is not None
    assert run.store.control.wake_at == paused.paused_nodes[0].wake_at
    # The worker wakes it with a resume carrying no input (early here: the handler sleeps the
    # remainder in place, counted from the node's first start, which the engine passes on).
    run.continue_with(resumes=[Resume("", "nap")])
    done = await run.wait()
    assert done.status == "SUCCEEDED"
    assert 1200 <= done.outputs["out"] < 5000
    run.check_log()


def nap_workflow(duration_ms: int) -> dict:
    return wf({"id": "nap", "type": "wait", "config": {"durationMs": duration_ms}},
              O("out", "{{nap.waitedMs}}"), edges=[("start", "nap"), ("nap", "out")])


async def test_durable_wait_claimed_after_its_wake_up_time_completes() -> None:
    """What the worker does once the state service hands the paused execution back at wake_at:
    a new engine replays the committed steps (no resume); the wait completes instead of
    parking again."""
    run = start_json(nap_workflow(400), durable_wait_threshold_ms=100)
    paused = await run.wait()
    assert paused.status == "PAUSED"
    wake_at = paused.paused_nodes[0].wake_at
    assert wake_at is not None and run.store.control.wake_at == wake_at
    await asyncio.sleep(wake_at - time.time() + 0.05)
    assert time.time() >= wake_at
    paused_at = len(run.store.events)
    later = Engine(settings(durable_wait_threshold_ms=100), environ=ACCEPTANCE_ENV)
    run.continue_with(engine=later)
    done = await run.wait(within=5)
    assert done.status == "SUCCEEDED"
    assert 400 <= done.outputs["out"] < 5000
    run.check_log()
    assert trace(run.events)[paused_at:] == [
        "execution:resumed nap", "node:completed nap", "node:started out", "node:completed out",
        "execution:completed"]
    assert run.types.count("execution:paused") == 1
    assert run.store.status == "SUCCEEDED" and run.store.control.wake_at is None


async def test_durable_wait_claimed_a_little_early_finishes_in_place() -> None:
    """A claim that comes a moment before wake_at (clocks differ between services) must not
    pause again with the same, almost due wake_at (the state service would hand it straight
    back): the remainder, shorter than the threshold, is slept in place."""
    run = start_json(nap_workflow(900), durable_wait_threshold_ms=600)
    paused = await run.wait()
    wake_at = paused.paused_nodes[0].wake_at
    assert paused.status == "PAUSED" and wake_at is not None
    await asyncio.sleep(max(0.0, wake_at - time.time() - 0.3))
    run.continue_with()
    done = await run.wait(within=5)
    assert done.status == "SUCCEEDED"
    assert done.outputs["out"] >= 900
    assert time.time() >= wake_at
    run.check_log()
    assert run.types.count("execution:paused") == 1


async def test_durable_wait_not_due_stays_parked_when_claimed_for_another_reason() -> None:
    """Claimed for a resume of another parked node long before the wait is due: the approval
    completes, the wait stays parked with its wake_at and the execution pauses again."""
    workflow = wf({"id": "nap", "type": "wait", "config": {"durationMs": 60_000}}, approval("ok"),
                  O("out", "{{nap.waitedMs}}"), O("yes", "{{ok}}"),
                  edges=[("start", "nap"), ("start", "ok"), ("nap", "out"), ("ok", "yes")])
    run = start_json(workflow, durable_wait_threshold_ms=100)
    first = await run.wait()
    assert first.status == "PAUSED" and len(first.paused_nodes) == 2
    wake_at = next(p.wake_at for p in first.paused_nodes if p.node_id == "nap")
    assert wake_at is not None and run.store.control.wake_at == wake_at
    run.continue_with(resumes=[Resume("r1", "ok", (), {"go": True})])
    second = await run.wait(within=5)
    assert second.status == "PAUSED"
    assert [(p.node_id, p.wake_at) for p in second.paused_nodes] == [("nap", wake_at)]
    assert run.store.history[-1].control.wake_at == wake_at
    assert trace(run.events)[-5:] == [
        "execution:resumed ok", "node:completed ok", "node:started yes", "node:completed yes",
        "execution:paused"]
    assert "node:completed nap" not in trace(run.events)
    assert run.types.count("execution:paused") == 2


async def test_a_replayed_run_reruns_an_uncommitted_node_without_a_second_start(
    script: Script,
) -> None:
    script.on("slow", sleep(0.2, output="done"))
    workflow = wf(W("slow"), O("out", "{{slow}}"), edges=[("start", "slow"), ("slow", "out")])
    dag = compile_json(workflow)
    first = start_json(workflow, dag=dag)
    # node:started is flushed by the journal's timer while the node runs.
    await eventually(lambda: any(e.draft.type == "node:started" and e.draft.node_id == "slow"
                                 for e in first.store.events))
    # The worker dies here: its store is cut at what is durable, another worker takes over.
    first.handle.cancel()
    cut = first.store.truncated(len(first.store.history))
    cut_events = len(cut.events)
    tail = [e.draft.type for e in cut.events]
    assert tail[-1] == "node:started"
    engine = Engine(settings(), environ=ACCEPTANCE_ENV)
    handle = engine.start(execution_id=cut.execution_id, dag=dag, input=None, store=cut,
                          steps=list(cut.steps.values()), emit_started=False,
                          open_runs=cut.open_runs())
    outcome = await handle.result()
    assert outcome.outputs == {"out": "done"}
    acceptance_runner().check_event_log(event_triples(cut), workflow)
    assert [e.draft.type for e in cut.events[cut_events:]][:1] == ["node:completed"]


async def test_store_failure_stops_the_run_and_surfaces_the_error(script: Script) -> None:
    from weft_common.errors import Conflict

    script.on("a", sleep(0.05))
    store = RecordingStore(execution_id="x")
    run = start_json(wf(W("a"), T("b", "1"), edges=[("start", "a"), ("a", "b")]), store=store)
    await asyncio.sleep(0.02)
    store.fail_next = Conflict("lease lost")
    with pytest.raises(Conflict):
        await run.wait()
    writes = store.commits
    await asyncio.sleep(0.1)
    assert store.commits == writes
    assert "node:started b" not in trace(run.events)


async def test_cancel_on_take_over_ends_the_orphaned_start(script: Script) -> None:
    """A worker died while a node ran; the take-over is cancelled at once: the orphaned
    node:started still gets its end, and nothing runs again."""
    script.on("slow", sleep(5))
    workflow = wf(W("slow"), O("out", "{{slow}}"), edges=[("start", "slow"), ("slow", "out")])
    dag = compile_json(workflow)
    first = start_json(workflow, dag=dag)
    await eventually(lambda: any(e.draft.type == "node:started" and e.draft.node_id == "slow"
                                 for e in first.store.events))
    first.handle.cancel()
    cut = first.store.truncated(len(first.store.history))
    script.calls.clear()
    engine = Engine(settings(), environ=ACCEPTANCE_ENV)
    handle = engine.start(execution_id=cut.execution_id, dag=dag, input=None, store=cut,
                          steps=list(cut.steps.values()), emit_started=False,
                          open_runs=cut.open_runs())
    handle.cancel("operator")
    outcome = await handle.result()
    assert outcome.status == "CANCELLED"
    assert script.calls["slow"] == 0
    acceptance_runner().check_event_log(event_triples(cut), workflow)
    assert [e.draft.type for e in cut.events][-2:] == ["node:cancelled", "execution:cancelled"]


async def test_durable_wait_due_while_another_branch_runs_wakes_in_place(script: Script) -> None:
    script.on("busy", sleep(1.0, output="done"))
    workflow = wf({"id": "nap", "type": "wait", "config": {"durationMs": 300}}, W("busy"),
                  O("out", "{{nap.waitedMs}}"), O("b", "{{busy}}"),
                  edges=[("start", "nap"), ("start", "busy"), ("nap", "out"), ("busy", "b")])
    run = start_json(workflow, durable_wait_threshold_ms=100)
    outcome = await run.wait()
    assert outcome.status == "SUCCEEDED"
    assert outcome.outputs["b"] == "done" and outcome.outputs["out"] >= 300
    assert "execution:paused" not in run.types
    run.check_log()
    t = trace(run.events)
    assert t.index("node:completed nap") < t.index("node:completed busy")
    assert run.store.history[-1].control.status == "SUCCEEDED"


async def test_orphaned_start_in_a_cancelled_branch_still_gets_its_end(script: Script) -> None:
    """After a crash both branches must run again; with room for one at a time, branch 0 fails
    and fails the parallel while branch 1 still waits: branch 1's logged start is ended too."""
    started = asyncio.Event()

    async def first_run(ctx):  # type: ignore[no-untyped-def]
        started.set()
        await asyncio.sleep(5)

    script.on("w", first_run)
    workflow = wf(P("p", kind="count", count=2), W("w", parent="p"), T("why", "p.error.code"),
                  edges=[("start", "p"), ("p", "why", "error")])
    dag = compile_json(workflow)
    first = start_json(workflow, dag=dag)
    await eventually(lambda: sum(1 for e in first.store.events
                                 if e.draft.type == "node:started" and e.draft.node_id == "w") == 2)
    first.handle.cancel()
    cut = first.store.truncated(len(first.store.history))
    assert len(cut.open_runs()) == 3  # p and both branches' w

    async def fail_branch_0(ctx):  # type: ignore[no-untyped-def]
        from weft_executor.handlers.base import NodeFailure

        if ctx.scope[0].index == 0:
            raise NodeFailure("zero", "E0", retryable=False)
        await asyncio.sleep(5)

    script.on("w", fail_branch_0)
    engine = Engine(settings(max_concurrency_per_execution=1), environ=ACCEPTANCE_ENV)
    handle = engine.start(execution_id=cut.execution_id, dag=dag, input=None, store=cut,
                          steps=list(cut.steps.values()), emit_started=False,
                          open_runs=cut.open_runs())
    outcome = await asyncio.wait_for(handle.result(), 10)
    assert outcome.outputs == {"why": "E0"}  # routed: the execution goes on
    acceptance_runner().check_event_log(event_triples(cut), workflow)
    ends = [(e.draft.type, e.draft.scope[0].index) for e in cut.events
            if e.draft.node_id == "w" and e.draft.type != "node:started"]
    assert ends == [("node:error", 0), ("node:cancelled", 1)]

"""Loops and parallels (SPEC section 3, issue 4): kinds, edge cases, nesting, scopes, error
handling inside bodies and bounded memory."""

from __future__ import annotations

import asyncio

import pytest
from helpers.engine import L, O, P, Script, T, W, eventually, fail, run_json, sleep, trace, wf

from weft_executor.handlers.base import NodeContext, NodeResult


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Script:
    return Script.install(monkeypatch)


def loop_wf(loop: dict, *body: dict, body_edges=(), after: str = "{{L.results}}") -> dict:
    return wf(loop, *body, O("out", after),
              edges=[("start", loop["id"]), (loop["id"], "out"), *body_edges])


# ---------------------------------------------------------------- loop kinds
async def test_for_loop_results_in_order_with_scoped_events() -> None:
    run = await run_json(loop_wf(L("L", kind="for", count=3),
                                 T("b", "loop.index * 10 + loop.iteration", parent="L")))
    assert run.outcome.outputs == {"out": [1, 12, 23]}
    assert trace(run.events, with_scope=True) == [
        "execution:started", "node:started start", "node:completed start",
        "node:started L",
        "node:started b@L:0", "node:completed b@L:0",
        "node:started b@L:1", "node:completed b@L:1",
        "node:started b@L:2", "node:completed b@L:2",
        "node:completed L",
        "node:started out", "node:completed out", "execution:completed",
    ]
    loop_done = next(e for e in run.events if e["type"] == "node:completed" and e["nodeId"] == "L")
    assert loop_done["output"] == {"results": [1, 12, 23]} and loop_done["scope"] == []


async def test_count_from_a_template_and_zero_count() -> None:
    workflow = loop_wf(L("L", kind="for", count="{{start.n}}"), T("b", "loop.index", parent="L"))
    run = await run_json(workflow, {"n": 2})
    assert run.outcome.outputs == {"out": [0, 1]}
    zero = await run_json(workflow, {"n": 0})
    assert zero.outcome.outputs == {"out": []}
    assert "node:started b" not in trace(zero.events)
    assert trace(zero.events)[3:5] == ["node:started L", "node:completed L"]


async def test_for_each_over_array_object_and_empty() -> None:
    workflow = loop_wf(
        L("L", kind="forEach", items="{{start.items}}"),
        T("b", "{'item': loop.item, 'i': loop.index, 'total': loop.total}", parent="L"),
    )
    arr = await run_json(workflow, {"items": ["x", "y"]})
    assert arr.outcome.outputs == {"out": [{"item": "x", "i": 0, "total": 2},
                                           {"item": "y", "i": 1, "total": 2}]}
    obj = await run_json(workflow, {"items": {"b": 2, "a": 1}})
    assert obj.outcome.outputs == {"out": [
        {"item": {"key": "a", "value": 1}, "i": 0, "total": 2},
        {"item": {"key": "b", "value": 2}, "i": 1, "total": 2}]}
    empty = await run_json(workflow, {"items": []})
    assert empty.outcome.outputs == {"out": []}


async def test_for_each_over_a_non_collection_fails_the_loop_routably() -> None:
    run = await run_json(
        wf(L("L", kind="forEach", items="{{start.items}}"), T("b", "loop.item", parent="L"),
           T("why", "L.error.code"), edges=[("start", "L"), ("L", "why", "error")]),
        {"items": 42},
    )
    assert run.outcome.outputs == {"why": "INVALID_CONFIG"}
    assert trace(run.events)[3:5] == ["node:started L", "node:error L"]


async def test_while_false_at_start_runs_nothing() -> None:
    run = await run_json(loop_wf(L("L", kind="while", condition="false"), T("b", "1", parent="L")))
    assert run.outcome.outputs == {"out": []}
    assert not any(e.get("nodeId") == "b" for e in run.events)


async def test_while_driven_by_variables() -> None:
    run = await run_json(
        wf(L("L", kind="while", condition="var.n < 3"),
           {"id": "inc", "type": "setVariable", "parent": "L",
            "config": {"assign": {"n": "{{loop.iteration}}"}}},
           O("out", "{{L.results}}"), O("n", "{{var.n}}"),
           edges=[("start", "L"), ("L", "out"), ("L", "n")], variables={"n": 0}),
    )
    assert run.outcome.outputs == {"out": [{"n": 1}, {"n": 2}, {"n": 3}], "n": 3}
    decisions = sorted(k for k in run.store.steps if k.startswith("L#"))
    assert decisions == ["L#while:0", "L#while:1", "L#while:2", "L#while:3"]
    assert [run.store.steps[k].data["value"] for k in decisions] == [True, True, True, False]


async def test_do_while_runs_once_when_condition_is_false_and_sees_the_body() -> None:
    once = await run_json(loop_wf(L("L", kind="doWhile", condition="false"),
                                  T("b", "'ran'", parent="L")))
    assert once.outcome.outputs == {"out": ["ran"]}
    # The condition sees the iteration that just ran (its body outputs and loop.index).
    thrice = await run_json(loop_wf(L("L", kind="doWhile", condition="b < 3"),
                                    T("b", "loop.iteration", parent="L")))
    assert thrice.outcome.outputs == {"out": [1, 2, 3]}


async def test_max_iterations_fails_the_loop_and_is_routable() -> None:
    counted = await run_json(
        wf(L("L", kind="for", count=5, maxIterations=3), T("b", "1", parent="L"),
           T("why", "L.error"), edges=[("start", "L"), ("L", "why", "error")]),
    )
    why = counted.outcome.outputs["why"]
    assert why["code"] == "MAX_ITERATIONS" and why["nodeId"] == "L"
    assert not any(e.get("nodeId") == "b" for e in counted.events)
    endless = await run_json(
        wf(L("L", kind="while", condition="true", maxIterations=4), T("b", "1", parent="L"),
           edges=[("start", "L")]),
    )
    assert endless.outcome.status == "FAILED"
    assert endless.outcome.error["code"] == "MAX_ITERATIONS"
    assert sum(1 for e in endless.events if e["type"] == "node:completed" and e["nodeId"] == "b") == 4


async def test_default_max_iterations_is_1000() -> None:
    run = await run_json(wf(L("L", kind="for", count=1001), T("b", "1", parent="L"),
                            edges=[("start", "L")]))
    assert run.outcome.error["code"] == "MAX_ITERATIONS"


# ---------------------------------------------------------------- parallel
async def test_parallel_collection_results_by_branch_index_despite_finish_order(script: Script) -> None:
    done = {i: asyncio.Event() for i in (1, 2, 3)}

    async def wait_inverse(ctx: NodeContext) -> NodeResult:
        # Branch 2 (item 3) finishes first, then branch 1, then branch 0.
        item = ctx.resolver.render("{{parallel.item}}")
        if item < 3:
            await done[item + 1].wait()
        await asyncio.sleep(0)
        done[item].set()
        return NodeResult(output=item * 10)

    script.on("w", wait_inverse)
    run = await run_json(
        wf(P("p", kind="collection", items="{{start.xs}}"), W("w", parent="p"),
           O("out", "{{p.results}}"), edges=[("start", "p"), ("p", "out")]),
        {"xs": [1, 2, 3]},
    )
    assert run.outcome.outputs == {"out": [10, 20, 30]}
    finished = [e["scope"][0]["index"] for e in run.events
                if e["type"] == "node:completed" and e["nodeId"] == "w"]
    assert finished == [2, 1, 0]
    assert script.max_running == 3


async def test_parallel_count_zero_and_max_concurrency(script: Script) -> None:
    script.on("w", sleep(0.02))
    zero = await run_json(wf(P("p", kind="count", count=0), W("w", parent="p"),
                             O("out", "{{p.results}}"), edges=[("start", "p"), ("p", "out")]))
    assert zero.outcome.outputs == {"out": []}
    bounded = await run_json(wf(P("p", kind="count", count=7, maxConcurrency=2),
                                W("w", parent="p"), O("out", "{{p.results}}"),
                                edges=[("start", "p"), ("p", "out")]))
    assert bounded.outcome.outputs == {"out": ["slept"] * 7}
    assert script.max_running == 2


async def test_failed_branch_fails_parallel_and_cancels_the_others(script: Script) -> None:
    async def branch(ctx: NodeContext) -> NodeResult:
        if ctx.resolver.render("{{parallel.index}}") == 1:
            await asyncio.sleep(0.02)
            raise_failure = fail("branch 1 broke", "E_BRANCH", retryable=False)
            return await raise_failure(ctx)
        await asyncio.sleep(30)
        return NodeResult(output="late")

    script.on("w", branch)
    run = await run_json(
        wf(P("p", kind="count", count=3), W("w", parent="p"), T("why", "p.error"),
           edges=[("start", "p"), ("p", "why", "error")]),
    )
    assert run.outcome.outputs == {"why": {"message": "branch 1 broke", "code": "E_BRANCH",
                                           "nodeId": "w"}}
    assert sorted(script.cancelled) == ["w@p:0", "w@p:2"]
    t = trace(run.events, with_scope=True)
    i = t.index("node:error w@p:1")
    assert sorted(t[i + 1:i + 3]) == ["node:cancelled w@p:0", "node:cancelled w@p:2"]
    assert t[i + 3] == "node:error p"


async def test_continue_on_error_keeps_the_other_branches(script: Script) -> None:
    async def branch(ctx: NodeContext) -> NodeResult:
        i = ctx.resolver.render("{{parallel.index}}")
        if i == 0:
            return await fail("zero broke", "E0", retryable=False)(ctx)
        await asyncio.sleep(0.02)
        return NodeResult(output=i)

    script.on("w", branch)
    run = await run_json(
        wf(P("p", kind="count", count=3, continueOnError=True), W("w", parent="p"),
           O("out", "{{p.results}}"), edges=[("start", "p"), ("p", "out")]),
    )
    assert run.outcome.outputs == {"out": [
        {"error": {"message": "zero broke", "code": "E0", "nodeId": "w"}}, 1, 2]}
    assert script.cancelled == []


# ---------------------------------------------------------------- nesting and scopes
async def test_loop_in_loop_scopes_and_outer_container_reference() -> None:
    run = await run_json(
        wf(L("outer", kind="for", count=2), L("inner", kind="for", count=2, parent="outer"),
           T("b", "outer.index * 10 + loop.index", parent="inner"),
           O("out", "{{outer.results}}"), edges=[("start", "outer"), ("outer", "out")]),
    )
    assert run.outcome.outputs == {"out": [{"results": [0, 1]}, {"results": [10, 11]}]}
    scopes = [e["scope"] for e in run.events if e["type"] == "node:completed" and e["nodeId"] == "b"]
    assert scopes[3] == [{"container": "outer", "index": 1}, {"container": "inner", "index": 1}]
    inner_scopes = [e["scope"] for e in run.events if e.get("nodeId") == "inner"]
    assert all(len(s) == 1 for s in inner_scopes)


async def test_parallel_in_parallel_and_parallel_in_loop() -> None:
    pp = await run_json(
        wf(P("a", kind="count", count=2), P("b", kind="collection", items=[1, 2], parent="a"),
           T("x", "a.index * 100 + parallel.item", parent="b"),
           O("out", "{{a.results}}"), edges=[("start", "a"), ("a", "out")]),
    )
    assert pp.outcome.outputs == {"out": [{"results": [1, 2]}, {"results": [101, 102]}]}
    lp = await run_json(
        wf(L("l", kind="forEach", items="{{start.rows}}"),
           P("p", kind="collection", items="{{loop.item}}", parent="l"),
           T("x", "parallel.item & '/' & $string(l.index)", parent="p"),
           O("out", "{{l.results}}"), edges=[("start", "l"), ("l", "out")]),
        {"rows": [["a", "b"], ["c"]]},
    )
    assert lp.outcome.outputs == {"out": [{"results": ["a/0", "b/0"]}, {"results": ["c/1"]}]}


async def test_condition_router_and_join_inside_a_body_per_iteration() -> None:
    run = await run_json(
        wf(L("L", kind="forEach", items="{{start.xs}}"),
           {"id": "c", "type": "condition", "parent": "L", "config": {"branches": [
               {"id": "even", "when": "loop.item % 2 = 0"}, {"id": "else"}]}},
           T("ev", "'even ' & $string(loop.item)", parent="L"),
           T("od", "'odd ' & $string(loop.item)", parent="L"),
           T("j", "$exists(ev) ? ev : od", parent="L"),
           O("out", "{{L.results}}"),
           edges=[("start", "L"), ("L", "out"), ("c", "ev", "condition:even"),
                  ("c", "od", "condition:else"), ("ev", "j"), ("od", "j")]),
        {"xs": [1, 2, 3]},
    )
    assert run.outcome.outputs == {"out": ["odd 1", "even 2", "odd 3"]}
    skipped = [(e["nodeId"], e["scope"][0]["index"]) for e in run.events if e["type"] == "node:skipped"]
    assert skipped == [("ev", 0), ("od", 1), ("ev", 2)]


async def test_several_exits_give_an_object_by_exit_id() -> None:
    run = await run_json(
        wf(L("L", kind="for", count=2),
           {"id": "c", "type": "condition", "parent": "L", "config": {"branches": [
               {"id": "first", "when": "loop.index = 0"}, {"id": "else"}]}},
           T("a", "'A'", parent="L"), T("b", "'B'", parent="L"),
           O("out", "{{L.results}}"),
           edges=[("start", "L"), ("L", "out"), ("c", "a", "condition:first"),
                  ("c", "b", "condition:else")]),
    )
    assert run.outcome.outputs == {"out": [{"a": "A"}, {"b": "B"}]}


async def test_error_edge_inside_the_body_and_body_error_into_the_containers_edge(
    script: Script,
) -> None:
    async def odd_fails(ctx: NodeContext) -> NodeResult:
        i = ctx.resolver.render("{{loop.index}}")
        if i % 2:
            return await fail(f"odd {i}", "ODD", retryable=False)(ctx)
        return NodeResult(output=i)

    script.on("w", odd_fails)
    inside = await run_json(
        wf(L("L", kind="for", count=3), W("w", parent="L"),
           T("fix", "'fixed ' & w.error.message", parent="L"),
           T("ok", "w", parent="L"), O("out", "{{L.results}}"),
           edges=[("start", "L"), ("L", "out"), ("w", "fix", "error"), ("w", "ok")]),
    )
    assert inside.outcome.outputs == {"out": [{"ok": 0}, {"fix": "fixed odd 1"}, {"ok": 2}]}
    outside = await run_json(
        wf(L("L", kind="for", count=3), W("w", parent="L"), T("why", "L.error.message"),
           edges=[("start", "L"), ("L", "why", "error")]),
    )
    assert outside.outcome.outputs == {"why": "odd 1"}
    ran = [e["scope"][0]["index"] for e in outside.events if e["type"] == "node:started" and e["nodeId"] == "w"]
    assert ran == [0, 1]  # the loop stopped at the failing iteration


async def test_two_containers_in_a_row_the_second_fed_by_the_first() -> None:
    run = await run_json(
        wf(L("L1", kind="for", count=3), T("a", "loop.index + 1", parent="L1"),
           P("P2", kind="collection", items="{{L1.results}}"), T("b", "parallel.item * 2", parent="P2"),
           O("out", "{{P2.results}}"),
           edges=[("start", "L1"), ("L1", "P2"), ("P2", "out")]),
    )
    assert run.outcome.outputs == {"out": [2, 4, 6]}


async def test_unrouted_failure_deep_inside_fails_the_execution_naming_the_node(script: Script) -> None:
    script.on("w", fail("deep", "DEEP", retryable=False))
    run = await run_json(
        wf(P("p", kind="count", count=1), L("l", kind="for", count=1, parent="p"),
           W("w", parent="l"), edges=[("start", "p")]),
    )
    assert run.outcome.status == "FAILED"
    assert run.outcome.error == {"message": "deep", "code": "DEEP", "nodeId": "w"}
    assert [x for x in trace(run.events) if x.startswith("node:error")] == [
        "node:error w", "node:error l", "node:error p"]


async def test_cancel_reaches_nodes_inside_containers(script: Script) -> None:
    script.on("w", sleep(30))
    from helpers.engine import start_json

    run = start_json(wf(P("p", kind="count", count=3), L("l", kind="for", count=2, parent="p"),
                        W("w", parent="l"), edges=[("start", "p")]))
    await eventually(lambda: script.running == 3)
    run.handle.cancel()
    outcome = await run.wait(5)
    assert outcome.status == "CANCELLED"
    assert len(script.cancelled) == 3
    run.check_log()
    cancelled = trace([e for e in run.events if e["type"] == "node:cancelled"])
    assert sorted(cancelled) == sorted(["node:cancelled w"] * 3 + ["node:cancelled l"] * 3
                                       + ["node:cancelled p"])


# ---------------------------------------------------------------- memory
async def test_outputs_nobody_reads_are_dropped_and_iterations_released() -> None:
    from helpers.engine import start_json

    run = start_json(
        wf(T("a", "'big'"), T("b", "a & '!'"), T("c", "b & '?'"), L("L", kind="for", count=50),
           T("x", "c & $string(loop.index)", parent="L"), O("out", "{{L.results}}"),
           edges=[("start", "a"), ("a", "b"), ("b", "c"), ("c", "L"), ("L", "out")]),
    )
    outcome = await run.wait()
    assert outcome.outputs["out"][:2] == ["big!?0", "big!?1"]
    top = run.handle._run.top  # the engine's top-level frame after the run
    assert "a" not in top.outputs and "b" not in top.outputs  # read once, then dropped
    assert "c" not in top.outputs  # its only reader (inside L) finished with L
    assert set(top.outputs) == {"out"}
    assert top.open == {}


async def test_large_loop_keeps_only_results() -> None:
    from helpers.engine import start_json

    run = start_json(wf(L("L", kind="for", count=3000, maxIterations=5000),
                        T("b", "loop.index", parent="L"), T("c", "b + 1", parent="L"),
                        T("n", "$count(L.results)"), O("out", "{{n}}"),
                        edges=[("start", "L"), ("L", "n"), ("n", "out"), ("b", "c")]))
    outcome = await run.wait(60)
    assert outcome.outputs == {"out": 3000}
    assert run.store.steps["L"].output["results"][-1] == 3000
    ex = run.handle._run
    assert ex.top.outputs.keys() == {"out"}  # L's results were read by n, then dropped


async def test_five_levels_of_mixed_nesting_carry_full_scopes() -> None:
    kinds = [("c0", "loop"), ("c1", "parallel"), ("c2", "loop"), ("c3", "parallel"), ("c4", "loop")]
    nodes = []
    parent = None
    for cid, kind in kinds:
        cfg = {"kind": "for", "count": 2} if kind == "loop" else {"kind": "count", "count": 2}
        nodes.append(L(cid, **cfg, parent=parent) if kind == "loop" else P(cid, **cfg, parent=parent))
        parent = cid
    nodes.append(T("leaf", "c0.index & c1.index & c2.index & c3.index & c4.index", parent="c4"))
    run = await run_json(wf(*nodes, O("out", "{{c0.results}}"),
                            edges=[("start", "c0"), ("c0", "out")]))
    assert run.outcome.status == "SUCCEEDED"
    leaves = [e for e in run.events if e["type"] == "node:completed" and e["nodeId"] == "leaf"]
    assert len(leaves) == 32
    assert sorted(e["output"] for e in leaves) == sorted(
        f"{a}{b}{c}{d}{e}" for a in "01" for b in "01" for c in "01" for d in "01" for e in "01")
    for e in leaves:
        assert [s["container"] for s in e["scope"]] == ["c0", "c1", "c2", "c3", "c4"]
        assert e["output"] == "".join(str(s["index"]) for s in e["scope"])
    # c0 iteration 1 / c1 branch 0 / c2 iteration 1 / c3 branch 0: the c4 loop's results.
    inner = run.outcome.outputs["out"][1]["results"][0]["results"][1]["results"][0]
    assert inner == {"results": ["10100", "10101"]}


async def test_parallel_holds_only_the_branches_running_now(script: Script) -> None:
    from helpers.engine import start_json

    seen: list[int] = []
    holder: dict = {}

    async def branch(ctx: NodeContext) -> NodeResult:
        container = holder["run"].handle._run.top.open["p"].container
        seen.append(len(container.active))
        await asyncio.sleep(0.001)
        return NodeResult(output=ctx.resolver.render("{{parallel.index}}"))

    script.on("w", branch)
    holder["run"] = run = start_json(
        wf(P("p", kind="count", count=400, maxConcurrency=8), W("w", parent="p"),
           T("n", "$count(p.results)"), edges=[("start", "p"), ("p", "n")]))
    outcome = await run.wait()
    assert outcome.outputs == {"n": 400}
    assert len(seen) == 400 and max(seen) == 8  # frames are released as branches finish
    assert run.store.steps["p"].output["results"] == list(range(400))


async def test_parallel_over_an_object_with_a_router_in_the_body() -> None:
    run = await run_json(
        wf(P("p", kind="collection", items="{{start.prices}}"),
           {"id": "r", "type": "router", "parent": "p", "config": {
               "routes": [{"id": "cheap"}, {"id": "dear"}],
               "select": "parallel.item.value < 10 ? 'cheap' : 'dear'"}},
           T("c", "parallel.item.key & ' is cheap'", parent="p"),
           T("d", "parallel.item.key & ' is dear ' & $string(p.index)", parent="p"),
           O("out", "{{p.results}}"),
           edges=[("start", "p"), ("p", "out"), ("r", "c", "route:cheap"), ("r", "d", "route:dear")]),
        {"prices": {"tea": 3, "cake": 12}},
    )
    assert run.outcome.outputs == {"out": [{"d": "cake is dear 0"}, {"c": "tea is cheap"}]}
    routed = {e["scope"][0]["index"]: e["output"]["route"] for e in run.events
              if e["type"] == "node:completed" and e["nodeId"] == "r"}
    assert routed == {0: "dear", 1: "cheap"}


async def test_results_over_the_output_limit_fail_the_container_routably() -> None:
    run = await run_json(
        wf(P("p", kind="count", count=3), T("big", "$pad('', 400, 'x')", parent="p"),
           T("why", "p.error.code"), edges=[("start", "p"), ("p", "why", "error")]),
        max_output_bytes=1000,
    )
    assert run.outcome.outputs == {"why": "OUTPUT_TOO_LARGE"}
    assert sum(1 for e in run.events if e["type"] == "node:completed" and e["nodeId"] == "big") == 3
    assert trace(run.events)[-4:-2] == ["node:error p", "node:started why"]

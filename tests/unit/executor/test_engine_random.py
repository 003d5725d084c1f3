"""Random DAGs of transforms and conditions run by the engine agree with a tiny sequential
reference interpreter of SPEC section 4 (ready when all inputs settled and one is active, skip
when all are dead, leaves as outputs), and keep run.py's event-log invariants."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from helpers.engine import ACCEPTANCE_ENV, acceptance_runner, event_triples, run_json, settings

from weft_executor import Engine


def _sum_expr(preds: list[str], values: set[str]) -> str:
    terms = [f"($exists({p}) ? {p} : 0)" for p in preds if p in values]
    return "$sum([" + ", ".join(terms) + "])" if terms else "0"


def random_workflow(seed: int, size: int = 14) -> tuple[dict[str, Any], dict[str, Any]]:
    """A workflow and, from the reference interpreter, what it must produce for input {x}."""
    rng = random.Random(seed)
    ids = [f"n{i}" for i in range(size)]
    kinds = {n: ("condition" if rng.random() < 0.3 else "transform") for n in ids}
    preds: dict[str, list[tuple[str, str]]] = {}
    for i, n in enumerate(ids):
        earlier = ["start", *ids[:i]]
        chosen = rng.sample(earlier, k=min(len(earlier), rng.choice([1, 1, 2, 3])))
        if "start" not in chosen and i < 2:
            chosen.append("start")
        preds[n] = []
        for p in chosen:
            handle = "out"
            if p != "start" and kinds[p] == "condition":
                handle = rng.choice(["condition:even", "condition:else"])
            preds[n].append((p, handle))
    values = {n for n in ids if kinds[n] == "transform"}  # nodes whose output is a number
    nodes: list[dict[str, Any]] = [{"id": "start", "type": "start"}]
    for n in ids:
        expr = _sum_expr([p for p, _ in preds[n]], values) + " + start.x"
        if kinds[n] == "transform":
            nodes.append({"id": n, "type": "transform", "config": {"expression": f"1 + {expr}"}})
        else:
            nodes.append({"id": n, "type": "condition", "config": {"branches": [
                {"id": "even", "when": f"({expr}) % 2 = 0"}, {"id": "else"}]}})
    edges = [{"source": p, "target": n, "sourceHandle": h} for n in ids for p, h in preds[n]]
    workflow = {"id": f"random{seed}", "nodes": nodes, "edges": edges}

    x = rng.randint(0, 5)
    ran: dict[str, Any] = {"start": {"x": x}}
    fired: dict[str, str] = {"start": "out"}
    skipped = set()
    for n in ids:
        active = [p for p, h in preds[n] if p in ran and fired[p] == h]
        if not active:
            skipped.add(n)
            continue
        total = sum(ran[p] for p, _ in preds[n] if p in values and p in ran) + x
        if kinds[n] == "transform":
            ran[n], fired[n] = 1 + total, "out"
        else:
            branch = "even" if total % 2 == 0 else "else"
            ran[n], fired[n] = {"branch": branch}, f"condition:{branch}"
    has_out = {e["source"] for e in edges}
    leaves = {n: ran[n] for n in ["start", *ids] if n in ran and n not in has_out}
    return workflow, {"input": {"x": x}, "outputs": leaves, "skipped": skipped, "ran": set(ran)}


@pytest.mark.parametrize("seed", range(25))
async def test_random_dag_matches_the_reference(seed: int) -> None:
    workflow, want = random_workflow(seed)
    run = await run_json(workflow, want["input"])
    assert run.outcome.status == "SUCCEEDED", run.outcome.error
    assert run.outcome.outputs == want["outputs"]
    events = run.events
    completed = {e["nodeId"] for e in events if e["type"] == "node:completed"}
    skipped = {e["nodeId"] for e in events if e["type"] == "node:skipped"}
    assert completed == want["ran"] and skipped == want["skipped"]
    # A node starts only after each of its sources has completed or been skipped.
    settled_at = {e["nodeId"]: i for i, e in enumerate(events)
                  if e["type"] in ("node:completed", "node:skipped")}
    started_at = {e["nodeId"]: i for i, e in enumerate(events) if e["type"] == "node:started"}
    for edge in workflow["edges"]:
        if edge["target"] in started_at:
            assert settled_at[edge["source"]] < started_at[edge["target"]], edge


@pytest.mark.parametrize("seed", [4, 7, 9, 12, 24])
async def test_random_dag_replayed_from_every_commit(seed: int) -> None:
    workflow, want = random_workflow(seed)
    full = await run_json(workflow, want["input"])
    for k in range(1, len(full.store.history)):
        cut = full.store.truncated(k)
        handle = Engine(settings(), environ=ACCEPTANCE_ENV).start(
            execution_id=cut.execution_id, dag=full.dag, input=want["input"], store=cut,
            variables=cut.control.variables, steps=list(cut.steps.values()),
            emit_started=False, open_runs=cut.open_runs(),
        )
        outcome = await asyncio.wait_for(handle.result(), 10)
        assert outcome.outputs == want["outputs"], k
        events = event_triples(cut)
        acceptance_runner().check_event_log(events, workflow)
        ended = [(d["nodeId"]) for _, t, d in events if t in ("node:completed", "node:skipped")]
        assert sorted(ended) == sorted(want["ran"] | want["skipped"]), k

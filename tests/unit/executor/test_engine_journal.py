"""The journal: serialised writes, group commit, commit-before-successors with a slow store,
events flushed on their own when no commit comes, order of events = order produced."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest
from helpers.engine import Script, T, W, sleep, start_json, trace, wf

from weft_executor.journal import Journal
from weft_executor.memory_store import RecordingStore
from weft_executor.records import Commit, EventDraft, StepRecord


@dataclass
class SlowStore(RecordingStore):
    """Each write takes ``delay`` seconds; records when each commit became durable and checks
    that writes never overlap."""

    delay: float = 0.03
    durable_at: list[float] = field(default_factory=list)
    writing: bool = False

    async def write(self, commit: Commit) -> None:
        assert not self.writing, "two writes at once"
        self.writing = True
        try:
            await asyncio.sleep(self.delay)
            await super().write(commit)
            self.durable_at.append(time.time())
        finally:
            self.writing = False


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Script:
    return Script.install(monkeypatch)


async def test_completions_during_a_write_are_grouped_into_one_commit(script: Script) -> None:
    names = [f"n{i}" for i in range(12)]
    for i, n in enumerate(names):
        script.on(n, sleep(0.001 * (i % 3)))
    store = SlowStore(execution_id="g")
    run = start_json(wf(*[W(n) for n in names], T("join", "1"),
                        edges=[("start", n) for n in names] + [(n, "join") for n in names]),
                     store=store)
    outcome = await run.wait()
    assert outcome.status == "SUCCEEDED"
    run.check_log()
    steps_per_commit = [len(c.steps) for c in store.history if c.steps]
    assert sum(steps_per_commit) == 14  # start, 12 nodes, join
    assert max(steps_per_commit) > 1  # grouped while a write was in flight
    assert len(store.history) < 14


async def test_successors_start_only_after_the_step_is_durable(script: Script) -> None:
    script.on("a", sleep(0.01))
    script.on("b", sleep(0.01))
    store = SlowStore(execution_id="d")
    run = start_json(wf(W("a"), W("b"), T("c", "1"),
                        edges=[("start", "a"), ("a", "b"), ("b", "c")]), store=store)
    await run.wait()
    # For each edge, the commit holding the source's step was durable before the target started.
    step_commit = {}
    for i, c in enumerate(store.history):
        for s in c.steps:
            step_commit[s.node_id] = i
    started = {e.draft.node_id: e.draft.timestamp for e in store.events
               if e.draft.type == "node:started"}
    for src, dst in (("start", "a"), ("a", "b"), ("b", "c")):
        assert store.durable_at[step_commit[src]] <= started[dst], (src, dst)


async def test_events_without_a_commit_are_flushed_by_the_timer(script: Script) -> None:
    script.on("slow", sleep(0.5))
    run = start_json(wf(W("slow"), edges=[("start", "slow")]), event_flush_ms=20)
    deadline = time.time() + 0.4
    while time.time() < deadline:
        if "node:started slow" in trace(run.events):
            break
        await asyncio.sleep(0.01)
    assert "node:started slow" in trace(run.events)  # visible while the node still runs
    assert "node:completed slow" not in trace(run.events)
    await run.wait()
    run.check_log()


async def test_event_order_in_the_log_is_the_order_produced() -> None:
    store = RecordingStore(execution_id="o")
    seen: list[list[str]] = []
    journal = Journal(store, flush_ms=5, on_durable=lambda f: seen.append(f), on_error=pytest.fail)
    for i in range(3):
        journal.event(EventDraft(f"e{i}", 0.0))
    journal.step(StepRecord(key="k", node_id="k", scope=(), status="SUCCEEDED"))  # type: ignore[arg-type]
    journal.commit(["after-k"])
    journal.event(EventDraft("e3", 0.0))
    await journal.drain()
    assert [e.draft.type for e in store.events] == ["e0", "e1", "e2", "e3"]
    assert seen[0] == ["after-k"]
    assert store.steps["k"].node_id == "k"


async def test_a_failed_write_stops_the_journal_and_reports_once() -> None:
    store = RecordingStore(execution_id="f")
    errors: list[BaseException] = []
    journal = Journal(store, flush_ms=5, on_durable=lambda f: None, on_error=errors.append)
    store.fail_next = RuntimeError("db down")
    journal.event(EventDraft("e0", 0.0))
    journal.commit()
    with pytest.raises(RuntimeError):
        await journal.drain()
    journal.event(EventDraft("e1", 0.0))
    journal.commit()
    await asyncio.sleep(0.02)
    assert [str(e) for e in errors] == ["db down"]
    assert store.events == []

"""The journal's live lane with the real engine and ``llm`` node (a store that records what it is
handed live): each chunk goes out before the commit that holds it, with exactly the seq that
commit gives it, only once its run's ``node:started`` is durable and never more than
``LIVE_WINDOW`` seqs past the last durable one; chunk commits stay coalesced; and a worker taking
over from one that died with live chunks uncommitted fills the seqs those chunks may have shown,
so none of them is ever reused for another event."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import pytest
from helpers.fake_openai import FakeOpenAI, Reply

import weft_executor.handlers  # noqa: F401 - registers the built-in handlers
from weft_common.compiled import CompiledDag
from weft_common.errors import Conflict
from weft_common.workflow import definition_from_json
from weft_dag_builder import compile_workflow
from weft_executor import Engine
from weft_executor.journal import LIVE_WINDOW
from weft_executor.memory_store import MemoryStore
from weft_executor.records import Commit, EventDraft
from weft_executor.settings import ExecutorSettings


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@dataclass
class LiveStore(MemoryStore):
    """A MemoryStore with a live lane: records each live event with the durable seq at the time.
    ``hold_after``: chunk-bearing writes after this many wait for ``release`` (a worker that
    hangs before its commit); a released write then fails like a lost lease."""

    live: list[tuple[int, EventDraft, int]] = field(default_factory=list)
    chunk_writes: list[int] = field(default_factory=list)
    hold_after: int | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def last_seq(self) -> int:
        return self.seq

    async def publish_live(self, events: list[tuple[int, EventDraft]]) -> None:
        for seq, draft in events:
            self.live.append((seq, draft, self.seq))

    async def write(self, commit: Commit) -> None:
        chunks = sum(1 for e in commit.events if e.type == "stream:chunk")
        if chunks:
            if self.hold_after is not None and len(self.chunk_writes) >= self.hold_after:
                await self.release.wait()
                raise Conflict("lease lost")
            self.chunk_writes.append(chunks)
        await super().write(commit)


def dag(fake: FakeOpenAI) -> CompiledDag:
    return compile_workflow(
        definition_from_json(
            {
                "id": "live",
                "nodes": [
                    {"id": "start", "type": "start"},
                    {
                        "id": "chat",
                        "type": "llm",
                        "config": {
                            "baseUrl": fake.base_url,
                            "model": "m",
                            "apiKey": "k",
                            "prompt": "hi",
                        },
                    },
                    {"id": "answer", "type": "output", "config": {"value": "{{chat.content}}"}},
                ],
                "edges": [
                    {"source": "start", "target": "chat"},
                    {"source": "chat", "target": "answer"},
                ],
            }
        )
    )


def engine() -> Engine:
    return Engine(ExecutorSettings.model_construct(http_allow_private=True), environ={})


def seq_of(store: MemoryStore, type_: str, node_id: str = "chat") -> list[int]:
    return [e.seq for e in store.events if e.draft.type == type_ and e.draft.node_id == node_id]


async def test_chunks_go_out_before_their_commit_with_the_seq_it_gives_them(
    fake: FakeOpenAI,
) -> None:
    words = [f"w{i} " for i in range(300)]
    fake.reset()
    fake.script(Reply(chunks=words, usage=(3, 300), chunk_delay_s=0.001))
    store = LiveStore(execution_id="e1")
    outcome = await engine().start(execution_id="e1", dag=dag(fake), input={}, store=store).result()
    assert outcome.status == "SUCCEEDED"
    assert outcome.outputs == {"answer": "".join(words)}
    assert store.live, "nothing went out on the live lane"
    (started,) = seq_of(store, "node:started")
    for seq, draft, durable in store.live:
        assert store.events[seq - 1].draft is draft  # the commit gave it exactly that seq
        assert durable < seq <= durable + LIVE_WINDOW  # before its commit, within the window
        assert started <= durable  # its run's node:started was durable
    # Persistence is coalesced: every 50 ms or 32 chunks, not one write per chunk.
    assert sum(store.chunk_writes) == len(words)
    assert len(store.chunk_writes) <= len(words) // 4, store.chunk_writes


async def test_without_a_live_lane_nothing_changes(fake: FakeOpenAI) -> None:
    fake.reset()
    fake.script(Reply(chunks=["a", "b", "c"], usage=(1, 3)))
    store = MemoryStore(execution_id="e0")
    outcome = await engine().start(execution_id="e0", dag=dag(fake), input={}, store=store).result()
    assert outcome.status == "SUCCEEDED"
    assert [e.draft.payload["content"] for e in store.events if e.draft.type == "stream:chunk"] == [
        "a",
        "b",
        "c",
    ]


async def test_a_take_over_never_reuses_a_seq_that_went_out_live(fake: FakeOpenAI) -> None:
    """Worker 1 streams live, then hangs before committing its latest chunks and loses its
    lease; worker 2 takes over from the log: its first commit fills the LIVE_WINDOW seqs after
    the log's end with placeholder chunks, so every seq worker 1 showed (all within that window)
    stays a chunk of that node, and worker 2's own events come after them."""
    first = [f"a{i} " for i in range(40)]
    fake.reset()
    fake.script(Reply(chunks=first, usage=(3, 40), chunk_delay_s=0.005))
    store1 = LiveStore(execution_id="e2", hold_after=1)
    handle1 = engine().start(execution_id="e2", dag=dag(fake), input={}, store=store1)
    for _ in range(500):
        if fake.requests and fake.requests[-1].finished and store1.live:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # the live lane catches up with the last chunks
    log_end = store1.seq
    shown = [seq for seq, _, _ in store1.live]
    assert shown and max(shown) > log_end  # live chunks beyond the committed log
    assert max(shown) <= log_end + LIVE_WINDOW
    store1.release.set()  # worker 1's commit is refused: it stops without writing more
    with pytest.raises(Conflict):
        await handle1.result()
    assert store1.seq == log_end

    # Worker 2 continues from what worker 1 committed.
    second = ["b0 ", "b1 "]
    fake.script(Reply(chunks=second, usage=(3, 2)))
    store2 = LiveStore(
        execution_id="e2",
        events=list(store1.events),
        seq=store1.seq,
        steps=dict(store1.steps),
        status=store1.status,
    )
    open_runs = store1.open_runs()
    assert open_runs == ["chat"]
    outcome = (
        await engine()
        .start(
            execution_id="e2",
            dag=dag(fake),
            input={},
            store=store2,
            steps=list(store1.steps.values()),
            emit_started=False,
            open_runs=open_runs,
        )
        .result()
    )
    assert outcome.status == "SUCCEEDED"
    assert outcome.outputs == {"answer": "".join(second)}
    events = store2.events
    assert [e.seq for e in events] == list(range(1, len(events) + 1))  # gap-free
    fill = events[log_end : log_end + LIVE_WINDOW]
    assert all(
        e.draft.type == "stream:chunk"
        and e.draft.node_id == "chat"
        and e.draft.payload == {"content": "", "placeholder": True, "nodeType": "llm"}
        for e in fill
    )
    # Every seq worker 1 showed live is now a placeholder chunk of the same node, never another
    # event; worker 2's own chunks come after the window.
    assert all(s <= log_end + LIVE_WINDOW for s in shown)
    for seq, draft, _ in store1.live:
        if seq <= log_end:  # it went out live and then got committed: the same event
            assert events[seq - 1].draft is draft
    rest = [e.draft for e in events[log_end + LIVE_WINDOW :]]
    assert [d.payload["content"] for d in rest if d.type == "stream:chunk"] == second
    assert seq_of(store2, "node:started") == seq_of(store1, "node:started")  # not a second one
    assert len(seq_of(store2, "node:completed")) == 1


async def test_a_state_service_without_the_live_lane_is_asked_once(fake: FakeOpenAI) -> None:
    class Unimplemented(Exception):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.UNIMPLEMENTED

    @dataclass
    class OldStateStore(LiveStore):
        calls: int = 0

        async def publish_live(self, events: list[tuple[int, EventDraft]]) -> None:
            self.calls += 1
            raise Unimplemented()

    words = [f"o{i} " for i in range(100)]
    fake.reset()
    fake.script(Reply(chunks=words, usage=(3, 100), chunk_delay_s=0.001))
    store = OldStateStore(execution_id="e4")
    outcome = await engine().start(execution_id="e4", dag=dag(fake), input={}, store=store).result()
    assert outcome.status == "SUCCEEDED"
    assert store.calls == 1
    chunks = [e.draft.payload["content"] for e in store.events if e.draft.type == "stream:chunk"]
    assert chunks == words

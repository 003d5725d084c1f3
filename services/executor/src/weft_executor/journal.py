"""The per-execution writer: orders, groups and serialises what the engine hands to its store.

Rules (SPEC section 4, DESIGN "Durability"):
- one ``store.write`` at a time; completions that arrive while a write is in flight go together in
  the next ``Commit`` (group commit);
- each completed node is committed (step, node log, events, control changes) before its successors
  start: the engine passes the successors as ``followups`` and gets them back through
  ``on_durable`` once the commit that holds the step is durable;
- events not tied to a step (``node:started``, ``node:retrying``, ``stream:chunk``) ride on the next
  commit, or are flushed on their own after ``flush_ms`` when no commit comes;
- events reach the store in the order the engine produced them.

The live lane (when the store has ``publish_live``, i.e. the state service): ``stream:chunk``
events are handed to the execution's subscribers at once, each with the seq its commit will give
it, and are committed in batches (every ``CHUNK_FLUSH_MS`` or ``CHUNK_BATCH`` chunks), so a
token costs no database write of its own while readers still see it within milliseconds. The
journal can predict seqs because this worker is the only writer of the log while it holds the
lease, and every event goes through here in order: the seq of the n-th event appended is
``base + n``, ``base`` being learnt from the first commit that wrote events (and checked at each
commit after it; a mismatch turns the live lane off). A live seq must never later mean another
event, even if this worker dies before the commit or loses its lease, so:

- a chunk goes live only if its run's ``node:started`` is durable (the run is open in the log
  from then on until its end is committed, and its chunks before that end). So the
  ``node:started`` of a live node type is written at once, and chunks that arrive before it (or
  before the first commit told us the seqs) wait in ``_waiting`` and go live when it lands;
- and only up to ``LIVE_WINDOW`` seqs past the last durable one;
- a worker taking over an execution with an open run of a live node type (``LIVE_NODE_TYPES``)
  commits ``LIVE_WINDOW`` placeholder chunks (``content: ""``, ``placeholder: true``) before
  anything else (``cover_live_window``): the seqs its predecessor may have shown are filled,
  never reused, and the log stays gap-free. Those chunks' text is lost with the worker that
  streamed them (the node runs again from the start, as without the live lane).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from .records import (
    Commit,
    ControlUpdate,
    EventDraft,
    ExecutionStore,
    NodeLogRecord,
    Scope,
    ScopeEntry,
    StepRecord,
)

__all__ = [
    "CHUNK_BATCH",
    "CHUNK_FLUSH_MS",
    "LIVE_NODE_TYPES",
    "LIVE_WINDOW",
    "Journal",
    "add_token_usage",
    "merge_control",
]

log = logging.getLogger("weft.executor.journal")

_LEADER: Any = object()  # marks a write done inline by the caller (``lead``), not by a task

# Live lane (see the module docstring). LIVE_WINDOW is part of the protocol between workers: a
# take-over fills that many seqs, so it must not shrink while older workers may still run.
LIVE_WINDOW = 64
LIVE_NODE_TYPES = frozenset({"llm"})
CHUNK_FLUSH_MS = 50
CHUNK_BATCH = 32
_NODE_ENDS = frozenset({"node:completed", "node:error", "node:cancelled"})
LivePublisher = Callable[[list[tuple[int, EventDraft]]], Awaitable[None]]


def add_token_usage(
    total: dict[str, Any] | None, delta: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Token usage deltas add up (``estimated`` sticks once any part was estimated)."""
    if delta is None:
        return None if total is None else dict(total)
    out = {
        "inputTokens": int((total or {}).get("inputTokens") or 0)
        + int(delta.get("inputTokens") or 0),
        "outputTokens": int((total or {}).get("outputTokens") or 0)
        + int(delta.get("outputTokens") or 0),
    }
    if (total or {}).get("estimated") or delta.get("estimated"):
        out["estimated"] = True
    return out


def merge_control(into: ControlUpdate | None, update: ControlUpdate) -> ControlUpdate:
    """Fold ``update`` into ``into`` (later values win, resume ids accumulate, token usage
    deltas add up)."""
    if into is None:
        return ControlUpdate(
            status=update.status,
            variables=update.variables,
            outputs=update.outputs,
            error=update.error,
            paused_nodes=list(update.paused_nodes),
            applied_resume_ids=list(update.applied_resume_ids),
            token_usage=add_token_usage(None, update.token_usage),
            wake_at=update.wake_at,
            release_lease=update.release_lease,
        )
    if update.status is not None:
        into.status = update.status
        into.paused_nodes = list(update.paused_nodes)
        into.wake_at = update.wake_at
        into.release_lease = update.release_lease
    if update.variables is not None:
        into.variables = update.variables
    if update.outputs is not None:
        into.outputs = update.outputs
    if update.error is not None:
        into.error = update.error
    if update.token_usage is not None:
        into.token_usage = add_token_usage(into.token_usage, update.token_usage)
    into.applied_resume_ids.extend(update.applied_resume_ids)
    return into


class Journal:
    """Buffers one execution's writes and commits them in order, one batch at a time."""

    def __init__(
        self,
        store: ExecutionStore,
        *,
        flush_ms: int,
        on_durable: Callable[[list[Any]], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self._store = store
        self._flush_s = max(flush_ms, 0) / 1000
        self._on_durable = on_durable
        self._on_error = on_error
        self._events: list[EventDraft] = []
        self._steps: list[StepRecord] = []
        self._logs: list[NodeLogRecord] = []
        self._control: ControlUpdate | None = None
        self._followups: list[Any] = []
        self._commit_wanted = False
        self._writer: Any = None  # the writer task, _LEADER, or None
        self._timer: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._failed: BaseException | None = None
        self._timer_due = 0.0
        self._timer_delay = 0.0  # the delay the current timer was armed with
        self._urgent = False  # an event other than a chunk is buffered (flush_ms applies)
        self._chunks = 0  # chunks buffered
        self.commits = 0
        # Live lane state (see the module docstring).
        self._live: LivePublisher | None = getattr(store, "publish_live", None)
        self._chunk_s = max(self._flush_s, CHUNK_FLUSH_MS / 1000)
        self._appended = 0  # events handed to this journal
        self._written = 0  # of which durable
        self._base: int | None = None  # seq of event n = base + n
        self._started: dict[tuple[str, Scope], int] = {}  # open runs' node:started position
        self._live_out: list[tuple[int, EventDraft]] = []
        # Chunks that may go live once an earlier commit lands (their run's node:started).
        self._waiting: list[tuple[int, EventDraft]] = []
        self._live_task: asyncio.Task[None] | None = None
        self.live_published = 0

    # -- producing ----------------------------------------------------------------------------
    def event(self, draft: EventDraft) -> None:
        """Buffer an event; it is written with the next commit or by the flush timer."""
        self._events.append(draft)
        self._appended += 1
        kind = draft.type
        if kind == "stream:chunk" and self._live is not None:
            self._chunks += 1
            if self._failed is None and draft.payload.get("nodeType") in LIVE_NODE_TYPES:
                if self._base is None:
                    self._waiting.append((self._appended, draft))  # until the first commit
                else:
                    self._go_live(draft, self._appended)
            if self._chunks >= CHUNK_BATCH:
                self._commit_wanted = True
                self._ensure_writer()
                return
            delay = self._chunk_s
        else:
            if self._live is not None:  # only the live lane (_go_live) reads these positions
                if kind == "node:started":
                    self._started[(draft.node_id, draft.scope)] = self._appended
                    if draft.payload.get("nodeType") in LIVE_NODE_TYPES:
                        # Its chunks go live once this is durable: write it now, not after
                        # flush_ms (one write per llm run; a fast provider's first tokens
                        # would otherwise wait for it).
                        self._commit_wanted = True
                        self._ensure_writer()
                        return
                elif kind in _NODE_ENDS:
                    self._started.pop((draft.node_id, draft.scope), None)
            self._urgent = True
            delay = self._flush_s
        if self._failed is None:
            self._arm(delay)

    def _arm(self, delay: float) -> None:
        # One timer per flush interval: when it fires after a commit took the events, it finds
        # nothing to do. (No timer per event on the hot path; an earlier deadline replaces it.)
        if self._timer is not None and delay >= self._timer_delay:
            return  # armed before now with no longer a delay: it is due no later (hot path)
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            if self._timer_due <= loop.time() + delay:
                return
            self._timer.cancel()
        self._idle.clear()
        self._timer_due = loop.time() + delay
        self._timer_delay = delay
        self._timer = loop.call_later(delay, self._flush)

    def _go_live(self, draft: EventDraft, position: int) -> None:
        """Hand the chunk appended at ``position`` to the live lane with its seq-to-be, when
        that is safe (see above)."""
        assert self._base is not None and self._live is not None
        started = self._started.get((draft.node_id, draft.scope))
        if started is not None and started > self._written:
            # Its node:started is not durable yet: try again after the next commit.
            self._waiting.append((position, draft))
            return
        if position - self._written > LIVE_WINDOW:
            return  # too far past the last durable seq: its commit delivers it
        self._live_out.append((self._base + position, draft))
        if self._live_task is None:
            self._live_task = asyncio.get_running_loop().create_task(self._send_live())

    async def _send_live(self) -> None:
        publish = self._live
        try:
            while self._live_out and self._failed is None and publish is not None:
                batch, self._live_out = self._live_out, []
                if self._base is not None:  # what got committed meanwhile goes out with it
                    durable = self._base + self._written
                    batch = [item for item in batch if item[0] > durable]
                    if not batch:
                        continue
                try:
                    await publish(batch)
                    self.live_published += len(batch)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # best effort: the commit delivers them anyway
                    code = getattr(exc, "code", None)
                    if callable(code) and getattr(code(), "name", "") == "UNIMPLEMENTED":
                        self._live = publish = None  # a state service without the live lane
                    log.debug("live publish failed (%r); the commit will deliver them", exc)
        finally:
            self._live_task = None
            self._live_out = []

    def cover_live_window(self, open_runs: Collection[str], nodes: Mapping[str, Any]) -> None:
        """On a take-over, before any other event: if a run of a live node type is open in the
        log, the worker that ran it may have shown chunks with seqs up to ``LIVE_WINDOW`` past
        the log's end; fill those seqs with placeholder chunks so they never mean anything else."""
        if self._live is None:
            return  # no live lane in this deployment (an in-memory store)
        for key in sorted(open_runs):
            node_id, _, scope_text = key.partition("@")
            node = nodes.get(node_id)
            if node is None or node.type not in LIVE_NODE_TYPES:
                continue
            scope: Scope = (
                tuple(
                    ScopeEntry(container, int(index))
                    for container, _, index in (p.rpartition(":") for p in scope_text.split("/"))
                )
                if scope_text
                else ()
            )
            now = time.time()
            for _ in range(LIVE_WINDOW):
                self.event(
                    EventDraft(
                        "stream:chunk",
                        now,
                        node_id,
                        scope,
                        {"content": "", "placeholder": True, "nodeType": node.type},
                    )
                )
            self.commit()
            return

    def step(self, step: StepRecord, log: NodeLogRecord | None = None) -> None:
        self._steps.append(step)
        if log is not None:
            self._logs.append(log)

    def node_log(self, log: NodeLogRecord) -> None:
        self._logs.append(log)

    def control(self, update: ControlUpdate) -> None:
        self._control = merge_control(self._control, update)

    def commit(self, followups: list[Any] | None = None, *, spawn: bool = True) -> None:
        """Make everything buffered so far durable; then hand ``followups`` to ``on_durable``.

        ``spawn=False``: the caller writes it itself right after with ``await lead()``."""
        if followups:
            self._followups.extend(followups)
        self._commit_wanted = True
        if spawn:
            self._ensure_writer()

    async def lead(self) -> None:
        """Write pending work in the calling task when no write is in flight (one batch; more
        work that arrives meanwhile goes to a writer task so the caller is not held)."""
        if self._writer is not None or self._failed is not None or not self._has_work():
            return
        self._writer = _LEADER
        self._idle.clear()
        try:
            await self._write_batch()
        except BaseException as exc:
            self._fail(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        self._writer = None
        if self._has_work():
            self._ensure_writer()
        else:
            self._after_writes()

    # -- waiting ------------------------------------------------------------------------------
    async def drain(self) -> None:
        """Wait until everything buffered so far (events included) is durable or has failed."""
        if self._events or self._steps or self._logs or self._control is not None:
            self._commit_wanted = True
            self._ensure_writer()
        await self._idle.wait()
        if self._failed is not None:
            raise self._failed

    @property
    def failed(self) -> BaseException | None:
        return self._failed

    # -- writing ------------------------------------------------------------------------------
    def _flush(self) -> None:
        self._timer = None
        if self._failed is not None:
            return
        if self._events:
            self._commit_wanted = True
            self._ensure_writer()
        elif self._writer is None and not self._has_work():
            self._idle.set()

    def _ensure_writer(self) -> None:
        if self._writer is not None or self._failed is not None:
            return
        self._idle.clear()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    def _has_work(self) -> bool:
        return self._commit_wanted or bool(self._steps or self._logs or self._control is not None)

    async def _write_batch(self) -> None:
        commit = Commit(
            steps=self._steps,
            node_logs=self._logs,
            events=self._events,
            control=self._control,
        )
        followups = self._followups
        self._steps, self._logs, self._events, self._followups = [], [], [], []
        self._control = None
        self._commit_wanted = False
        self._urgent = False
        self._chunks = 0
        await self._store.write(commit)
        self.commits += 1
        if commit.events:
            self._written += len(commit.events)
            if self._live is not None:
                self._check_seqs()
                if self._waiting and self._live is not None and self._base is not None:
                    waiting, self._waiting = self._waiting, []
                    for position, draft in waiting:
                        if position > self._written:  # else it was just committed
                            self._go_live(draft, position)
        # May buffer more work (successors finishing synchronously): the caller loops for it.
        self._on_durable(followups)

    async def _write_loop(self) -> None:
        try:
            while self._has_work():
                await self._write_batch()
        except BaseException as exc:
            self._fail(exc)
            return
        self._writer = None
        self._after_writes()

    def _fail(self, exc: BaseException) -> None:
        self._failed = exc
        self._writer = None
        self._idle.set()
        if not isinstance(exc, asyncio.CancelledError):
            self._on_error(exc)

    def _check_seqs(self) -> None:
        """After a commit that wrote events: learn (or check) where this journal's seqs start."""
        last_seq = int(getattr(self._store, "last_seq", 0) or 0)
        base = last_seq - self._written
        if self._base is None:
            if last_seq > 0 and base >= 0:
                self._base = base
        elif base != self._base:
            # Someone else wrote to the log: our predictions are off, stop the live lane.
            log.warning(
                "event seqs moved unexpectedly (%d, expected %d): live lane off",
                last_seq,
                self._base + self._written,
            )
            self._live = None
            self._live_out = []

    def _after_writes(self) -> None:
        if self._events:
            # Events buffered without a commit request: the timer takes them.
            self._arm(self._flush_s if self._urgent or self._live is None else self._chunk_s)
        else:
            self._idle.set()

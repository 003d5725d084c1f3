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
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .records import Commit, ControlUpdate, EventDraft, ExecutionStore, NodeLogRecord, StepRecord

__all__ = ["Journal", "add_token_usage", "merge_control"]

_LEADER: Any = object()  # marks a write done inline by the caller (``lead``), not by a task


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
            status=update.status, variables=update.variables, outputs=update.outputs,
            error=update.error, paused_nodes=list(update.paused_nodes),
            applied_resume_ids=list(update.applied_resume_ids),
            token_usage=add_token_usage(None, update.token_usage),
            wake_at=update.wake_at, release_lease=update.release_lease,
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
        self.commits = 0

    # -- producing ----------------------------------------------------------------------------
    def event(self, draft: EventDraft) -> None:
        """Buffer an event; it is written with the next commit or by the flush timer."""
        self._events.append(draft)
        if self._timer is None and self._failed is None:
            # One timer per flush interval, never cancelled: when it fires after a commit took
            # the events, it finds nothing to do. (No timer per event on the hot path.)
            self._idle.clear()
            self._timer = asyncio.get_running_loop().call_later(self._flush_s, self._flush)

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
            steps=self._steps, node_logs=self._logs, events=self._events, control=self._control,
        )
        followups = self._followups
        self._steps, self._logs, self._events, self._followups = [], [], [], []
        self._control = None
        self._commit_wanted = False
        await self._store.write(commit)
        self.commits += 1
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

    def _after_writes(self) -> None:
        if self._events:
            # Events buffered without a commit request: the timer takes them.
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self._flush_s, self._flush)
        else:
            self._idle.set()

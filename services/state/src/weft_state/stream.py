"""StreamEvents: replay an execution's event log from the database, then tail live events.

The subscription to the bus is opened *before* the replay, so an event committed during the
replay is either read from the database or buffered live; events at or below the last delivered
seq are dropped, so the seam has no gap and no duplicate. A committed event beyond the next seq
(a missed publish), a buffer overflow, or a quiet period (``stream_poll_s``, e.g. Redis is down
and the writer is another replica) sends the stream back to the database, which has every
committed event.

The live lane (``publish_live``): the worker running an execution hands ``stream:chunk`` events
over before their (coalesced) commit, each with the seq that commit will give it — it is the
only writer of the log while it holds the lease, and its commits store those very events, with
the same JSON, in that order. A stream delivers a live event when it is the next seq, so a
subscriber sees each chunk at once; the committed copy that follows is then a duplicate and is
dropped. A live event ahead of the next seq (its predecessors are not committed yet, e.g. the
``node:started`` before the first chunks) waits in a small reorder buffer until they arrive; if
they do not come within ``stream_poll_s`` the stream re-reads the database. A reconnecting
client gets what it missed from the log (or from the live lane if it is not committed yet).

Why a live seq never comes to mean something else (the worker's side, ``weft_executor.journal``):
live events are bounded to ``LIVE_WINDOW`` seqs past the worker's last durable seq and are only
sent for runs whose ``node:started`` is durable; a worker that takes over an execution with such
a run open (its predecessor may have died with live chunks uncommitted) first commits
``LIVE_WINDOW`` placeholder chunks, so the seqs its predecessor may have shown are never reused
for other events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence

from weft_common.errors import InvalidArgument

from .clock import utcnow
from .database import is_transient_error
from .domain import TERMINAL_STATUSES, EventIn, ExecutionStatus, StoredEvent
from .eventlog import event_tail, with_seq
from .events import LiveEvent
from .store import StateStore

__all__ = ["LIVE_TYPES", "publish_live", "stream_events"]

# Event types the live lane carries: never terminal, never a node's start or end.
LIVE_TYPES = frozenset({"stream:chunk"})
# Live events held while they wait for their predecessors (more: re-read the database).
_AHEAD_MAX = 4096


def publish_live(
    store: StateStore, execution_id: str, items: Sequence[tuple[int, EventIn]]
) -> None:
    """Hand ``(seq, draft)`` events to the execution's subscribers before their commit. The JSON
    is composed exactly as the commit will compose it (the draft carries its timestamp)."""
    now = utcnow()
    events: list[LiveEvent] = []
    for seq, draft in items:
        if draft.type not in LIVE_TYPES:
            raise InvalidArgument(f"event {draft.type!r} cannot be published live")
        if seq <= 0:
            raise InvalidArgument("a live event needs the seq its commit will assign")
        tail = event_tail(execution_id, draft, now)
        events.append(LiveEvent(execution_id, seq, draft.type, draft.node_id, with_seq(seq, tail)))
    store.bus.publish_live(execution_id, events)


async def stream_events(
    store: StateStore,
    execution_id: str,
    *,
    after_seq: int = 0,
    owner: str = "",
    follow_after_terminal: bool = False,
) -> AsyncIterator[StoredEvent]:
    """Every event after ``after_seq`` exactly once, in order; ends after a terminal event
    (unless ``follow_after_terminal``). NOT_FOUND for unknown or another owner's executions."""
    sub = store.bus.subscribe(execution_id)
    poll_s = store.options.stream_poll_s
    ahead: dict[int, StoredEvent] = {}  # live events waiting for their predecessors
    ahead_since = 0.0
    try:
        if owner:
            from .executions import get_execution

            await get_execution(store, execution_id, owner=owner)
        last = after_seq
        first_read = True  # NOT_FOUND and a database that is down on arrival are the caller's
        while True:
            # Catch up from the database. After an overflow the buffer is dropped first: what it
            # lost is committed, so this read returns it.
            if sub.overflowed:
                sub.reset()
            try:
                events, status, last_seq = await store.read_events(execution_id, last)
            except Exception as exc:
                if not is_transient_error(exc) or first_read:
                    raise
                # The database is restarting: keep the stream, retry shortly.
                await asyncio.sleep(poll_s)
                continue
            first_read = False
            for event in events:
                yield event
                last = event.seq
                if event.terminal and not follow_after_terminal:
                    return
            if len(events) >= 1000:
                continue
            if (
                not follow_after_terminal
                and ExecutionStatus(status) in TERMINAL_STATUSES
                and last >= last_seq
            ):
                return  # the terminal event is at or before after_seq
            if ahead:
                for seq in [s for s in ahead if s <= last]:
                    del ahead[seq]
                while (nxt := ahead.pop(last + 1, None)) is not None:
                    yield nxt
                    last = nxt.seq
                ahead_since = time.monotonic()
            # Tail live events until something sends us back to the database.
            while True:
                wait_s = poll_s
                if ahead:
                    wait_s = ahead_since + poll_s - time.monotonic()
                    if wait_s <= 0:
                        break  # what the live events wait for did not come: read it
                live = await sub.get(wait_s)
                if live is None or sub.overflowed:
                    break
                if live.seq <= last:
                    continue
                if live.seq != last + 1:
                    if not isinstance(live, LiveEvent):
                        break  # a committed event past a gap: a publish was missed
                    if not ahead:
                        ahead_since = time.monotonic()
                    ahead[live.seq] = live
                    if len(ahead) > _AHEAD_MAX:
                        ahead.clear()
                        break
                    continue
                yield live
                last = live.seq
                if live.terminal and not follow_after_terminal:
                    return
                while (nxt := ahead.pop(last + 1, None)) is not None:
                    yield nxt
                    last = nxt.seq
                if ahead:
                    # Only older entries (at or below last) or later gaps remain.
                    for seq in [s for s in ahead if s <= last]:
                        del ahead[seq]
                    ahead_since = time.monotonic()
    finally:
        sub.close()

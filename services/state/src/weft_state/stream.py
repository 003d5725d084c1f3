"""StreamEvents: replay an execution's event log from the database, then tail live events.

The subscription to the bus is opened *before* the replay, so an event committed during the
replay is either read from the database or buffered live; events at or below the last delivered
seq are dropped, so the seam has no gap and no duplicate. A live event beyond the next seq (a
missed publish), a buffer overflow, or a quiet period (``stream_poll_s``, e.g. Redis is down and
the writer is another replica) sends the stream back to the database, which has every event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from .database import is_transient_error
from .domain import TERMINAL_STATUSES, ExecutionStatus, StoredEvent
from .store import StateStore

__all__ = ["stream_events"]


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
                await asyncio.sleep(store.options.stream_poll_s)
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
            # Tail live events until something sends us back to the database.
            while True:
                live = await sub.get(store.options.stream_poll_s)
                if live is None or sub.overflowed:
                    break
                if live.seq <= last:
                    continue
                if live.seq != last + 1:
                    break  # a gap: a publish was missed
                yield live
                last = live.seq
                if live.terminal and not follow_after_terminal:
                    return
    finally:
        sub.close()

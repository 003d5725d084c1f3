"""Appending to an execution's event log inside a transaction that holds the execution row.

The caller reserves the seqs by bumping ``executions.last_seq`` under the row lock, so seqs are
1..N with no gap even with several concurrent writers (commits, cancellations).

An event's JSON is built in two parts so that the seq can be added last (by PostgreSQL itself on
the fast commit path): ``event_tail`` is everything after ``{"seq":N,``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from weft_common import jsonutil
from weft_common.errors import InvalidArgument

from .clock import rfc3339
from .domain import EventIn, StoredEvent, scope_to_json
from .store import EV

__all__ = ["append_events", "compose_event", "event_tail", "with_seq"]

_ASSIGNED = frozenset({"seq", "type", "executionId", "timestamp"})


def event_tail(execution_id: str, draft: EventIn, now: datetime) -> str:
    """The event JSON after its seq: type, executionId, timestamp, nodeId/scope, then the
    draft's payload (which cannot override what the state service assigns)."""
    body: dict[str, Any] = {
        "type": draft.type,
        "executionId": execution_id,
        "timestamp": rfc3339(draft.timestamp or now),
    }
    if draft.node_id:
        body["nodeId"] = draft.node_id
        body["scope"] = scope_to_json(draft.scope)
    if draft.payload_json:
        payload = jsonutil.loads(draft.payload_json)
        if not isinstance(payload, dict):
            raise InvalidArgument(f"event {draft.type!r}: payload_json must be a JSON object")
        for key, value in payload.items():
            if key not in body and key not in _ASSIGNED:
                body[key] = value
    text: str = jsonutil.dumps(body)
    return text[1:]


def with_seq(seq: int, tail: str) -> str:
    return f'{{"seq":{seq},{tail}'


def compose_event(execution_id: str, seq: int, draft: EventIn, now: datetime) -> StoredEvent:
    """The final event: seq, type, executionId, timestamp, nodeId/scope, then the payload."""
    payload = with_seq(seq, event_tail(execution_id, draft, now))
    return StoredEvent(execution_id, seq, draft.type, draft.node_id, payload)


async def append_events(
    conn: AsyncConnection,
    execution_id: str,
    first_seq: int,
    drafts: Sequence[EventIn],
    now: datetime,
) -> list[StoredEvent]:
    """Insert ``drafts`` as seqs ``first_seq..``; returns the stored events (to publish after
    the transaction commits)."""
    if not drafts:
        return []
    events = [compose_event(execution_id, first_seq + i, d, now) for i, d in enumerate(drafts)]
    await conn.execute(
        EV.insert(),
        [
            {
                "execution_id": execution_id,
                "seq": e.seq,
                "type": e.type,
                "node_id": e.node_id,
                "payload_json": e.payload_json,
                "created_at": now,
            }
            for e in events
        ],
    )
    return events

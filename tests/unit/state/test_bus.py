"""The in-process bus and the Redis wire format."""

from __future__ import annotations

import asyncio

from weft_state.domain import StoredEvent
from weft_state.events import InProcessBus, _decode, _encode


def event(seq: int, payload: str = '{"a":"x\\ty\\nz"}') -> StoredEvent:
    return StoredEvent("e1", seq, "node:completed", "n1", payload)


def test_wire_format_round_trips_payloads_with_escaped_tabs_and_newlines() -> None:
    events = [event(1), event(2, '{"seq":2,"s":"\\u0000"}'), StoredEvent("e1", 3, "execution:started", "", "{}")]
    source, decoded = _decode("e1", _encode("me", events))
    assert source == "me" and decoded == events


async def test_fan_out_to_many_subscribers_and_unsubscribe() -> None:
    bus = InProcessBus()
    a, b, other = bus.subscribe("e1"), bus.subscribe("e1"), bus.subscribe("e2")
    bus.publish("e1", [event(1), event(2)])
    assert [(await a.get(1)).seq, (await a.get(1)).seq] == [1, 2]  # type: ignore[union-attr]
    assert (await b.get(1)).seq == 1  # type: ignore[union-attr]
    assert await other.get(0.01) is None
    a.close()
    bus.publish("e1", [event(3)])
    assert await a.get(0.01) is None


async def test_overflow_is_flagged_not_blocking() -> None:
    bus = InProcessBus(buffer=2)
    sub = bus.subscribe("e1")
    bus.publish("e1", [event(1), event(2), event(3)])
    assert sub.overflowed
    sub.reset()
    assert not sub.overflowed and await sub.get(0.01) is None


async def test_work_notifications_wake_waiters() -> None:
    bus = InProcessBus()
    waiter = asyncio.create_task(bus.wait_for_work(5))
    await asyncio.sleep(0.01)
    bus.notify_work()
    assert await waiter is True
    assert await bus.wait_for_work(0.01) is False

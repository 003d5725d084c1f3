"""Event JSON composition and time formatting."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from weft_common import jsonutil
from weft_common.errors import InvalidArgument
from weft_state.clock import rfc3339
from weft_state.domain import EventIn
from weft_state.eventlog import compose_event

NOW = datetime(2026, 3, 4, 5, 6, 7, 891_234, tzinfo=UTC)


def test_rfc3339_is_utc_with_milliseconds() -> None:
    assert rfc3339(NOW) == "2026-03-04T05:06:07.891Z"
    assert rfc3339(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000Z"


def test_event_json_adds_identity_and_keeps_the_payload() -> None:
    draft = EventIn(type="node:completed", node_id="price", scope=(("each", 2), ("par", 0)),
                    payload_json='{"nodeType": "transform", "output": {"x": [1, 2]}, "seq": 99}')
    event = compose_event("e1", 7, draft, NOW)
    body = jsonutil.loads(event.payload_json)
    assert list(body)[:6] == ["seq", "type", "executionId", "timestamp", "nodeId", "scope"]
    assert body["seq"] == 7  # the payload cannot override what the state service assigns
    assert body == {
        "seq": 7, "type": "node:completed", "executionId": "e1", "timestamp": "2026-03-04T05:06:07.891Z",
        "nodeId": "price", "scope": [{"container": "each", "index": 2}, {"container": "par", "index": 0}],
        "nodeType": "transform", "output": {"x": [1, 2]},
    }
    assert (event.seq, event.type, event.node_id, event.execution_id) == (7, "node:completed", "price", "e1")


def test_execution_events_have_no_node_fields_and_keep_their_own_timestamp() -> None:
    ts = datetime(2025, 12, 31, 23, 59, 59, 1000, tzinfo=UTC)
    body = jsonutil.loads(compose_event("e", 1, EventIn(type="execution:started", timestamp=ts), NOW).payload_json)
    assert body == {"seq": 1, "type": "execution:started", "executionId": "e",
                    "timestamp": "2025-12-31T23:59:59.001Z"}


def test_payload_must_be_an_object() -> None:
    with pytest.raises(InvalidArgument, match=r"node:started.*JSON object"):
        compose_event("e", 1, EventIn(type="node:started", payload_json="[1]"), NOW)

"""The state service restarting under running executions: the executor's commit streams are
ended by its stop (idle ones at once), commits in flight fail UNAVAILABLE and are retried on new
streams once the service is back, and every execution finishes with a gap-free log."""

from __future__ import annotations

import asyncio

import pytest
from executor_support import Backends, check_log, outputs, start_stack, state_settings
from test_outages import waits_chain

from weft_state.server import serve as serve_state

pytestmark = pytest.mark.postgres


async def test_executions_finish_across_a_state_service_restart(
    executor_backends: Backends,
) -> None:
    backend = await executor_backends.new("postgres")
    stack = await start_stack(backend)
    try:
        ids = [
            (await stack.start(waits_chain(12, 80), {"tag": f"run{i}"})).execution_id
            for i in range(4)
        ]
        await asyncio.sleep(0.4)  # mid-run: every worker has commit streams open
        group = stack.executors[0].worker.commits
        assert group._streaming and group.calls > 0
        port = stack.state.port
        await asyncio.wait_for(stack.state.stop(), 10)  # idle streams do not hold the grace
        await asyncio.sleep(0.3)
        stack.state = await serve_state(state_settings(backend, port=port))
        for i, execution_id in enumerate(ids):
            done = await stack.wait_status(execution_id, "SUCCEEDED", "FAILED", within=60)
            assert outputs(done) == {"out": f"run{i}"}
            events = await stack.events(execution_id)
            check_log(events)
            assert events[-1]["type"] == "execution:completed"
            assert len(events) == done.last_seq
    finally:
        await stack.stop()

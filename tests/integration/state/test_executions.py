"""Workflows and executions: versions and pinning, idempotency keys, owner scoping, cancel."""

from __future__ import annotations

import asyncio

import pytest
from state_support import Driver, approval, dag_bytes, ev, node_log

from weft_common import jsonutil
from weft_common.errors import AlreadyExists, InvalidArgument, NotFound
from weft_state.domain import CreateExecution, ExecutionStatus, LeaseRef
from weft_state.executions import (
    create_execution,
    get_execution,
    list_executions,
    list_node_logs,
    request_cancel,
)
from weft_state.leases import claim_executions, load_execution
from weft_state.workflows import get_workflow, list_workflows, register_workflow


async def test_register_makes_versions_and_running_executions_stay_pinned(driver: Driver) -> None:
    wf = await driver.workflow()
    eid, lease = await driver.create(workflow_id=wf)
    assert lease
    await driver.start(lease)
    _, v2 = await register_workflow(driver.store, {"id": wf, "name": "second"}, dag_bytes(wf, "v2"))
    assert v2 == 2
    assert (await get_workflow(driver.store, wf)).definition["name"] == "second"
    assert (await get_workflow(driver.store, wf, 1)).dag == dag_bytes(wf)
    loaded = await load_execution(driver.store, LeaseRef(eid, lease.token))
    assert loaded.dag == dag_bytes(wf) and loaded.execution.workflow_version == 1
    new = await create_execution(driver.store, CreateExecution(workflow_id=wf, claim_worker_id="w"))
    assert new.lease
    loaded2 = await load_execution(driver.store, LeaseRef(new.execution_id, new.lease.token))
    assert loaded2.dag == dag_bytes(wf, "v2") and loaded2.execution.workflow_version == 2
    with pytest.raises(NotFound, match="version 7"):
        await get_workflow(driver.store, wf, 7)


async def test_inline_definition_is_stored_with_the_execution(driver: Driver) -> None:
    created = await create_execution(
        driver.store,
        CreateExecution(definition={"id": "adhoc", "nodes": []}, dag=dag_bytes("adhoc", "inline"),
                        input_json='{"a": 1}', claim_worker_id="w"),
    )
    assert created.lease
    loaded = await load_execution(driver.store, LeaseRef(created.execution_id, created.lease.token))
    assert loaded.dag == dag_bytes("adhoc", "inline")
    assert (loaded.execution.workflow_id, loaded.execution.workflow_version) == ("adhoc", 0)
    assert jsonutil.loads(loaded.execution.input_json) == {"a": 1}
    with pytest.raises(InvalidArgument):
        await create_execution(driver.store, CreateExecution(input_json="{}"))


async def test_idempotency_key_returns_the_existing_execution(driver: Driver) -> None:
    wf = await driver.workflow()
    key = "order-" + wf
    results = await asyncio.gather(*(
        create_execution(driver.store, CreateExecution(workflow_id=wf, idempotency_key=key,
                                                       claim_worker_id="w"))
        for _ in range(5)))
    assert len({r.execution_id for r in results}) == 1
    assert sorted(r.existing for r in results) == [False, True, True, True, True]
    assert [r.lease is not None for r in results if not r.existing] == [True]
    assert all(r.lease is None for r in results if r.existing)
    # Keys are per owner.
    wf_x = await driver.workflow(owner="x")
    other = await create_execution(driver.store, CreateExecution(workflow_id=wf_x, idempotency_key=key, owner="x"))
    assert not other.existing and other.execution_id != results[0].execution_id


async def test_owner_scoping(driver: Driver) -> None:
    wf = await driver.workflow(owner="alice")
    with pytest.raises(NotFound):
        await get_workflow(driver.store, wf, owner="bob")
    assert (await get_workflow(driver.store, wf, owner="alice")).owner == "alice"
    with pytest.raises(AlreadyExists):
        await register_workflow(driver.store, {"id": wf}, dag_bytes(wf), owner="bob")
    with pytest.raises(NotFound):
        await create_execution(driver.store, CreateExecution(workflow_id=wf, owner="bob"))
    eid, _ = await driver.create(owner="alice", workflow_id=wf)
    for call in (
        get_execution(driver.store, eid, owner="bob"),
        list_node_logs(driver.store, eid, owner="bob"),
        request_cancel(driver.store, eid, owner="bob"),
    ):
        with pytest.raises(NotFound):
            await call
    assert (await get_execution(driver.store, eid, owner="alice")).owner == "alice"
    assert (await get_execution(driver.store, eid)).execution_id == eid  # no owner: internal caller
    assert eid in [e.execution_id for e in await list_executions(driver.store, owner="alice")]
    assert eid not in [e.execution_id for e in await list_executions(driver.store, owner="bob")]
    assert wf in [w.workflow_id for w in await list_workflows(driver.store, owner="alice")]
    assert wf not in [w.workflow_id for w in await list_workflows(driver.store, owner="bob")]


async def test_cancel_paused_ends_open_runs_at_once(driver: Driver) -> None:
    eid, lease = await driver.create()
    assert lease
    await driver.start(lease)
    await driver.pause(lease, 1, approval())
    assert await request_cancel(driver.store, eid, reason="no longer needed") is ExecutionStatus.CANCELLED
    rec = await get_execution(driver.store, eid)
    assert rec.status is ExecutionStatus.CANCELLED and rec.finished_at and rec.paused_nodes == ()
    events = await driver.events(eid)
    assert [(e.type, e.node_id) for e in events][-2:] == [("node:cancelled", "approve"), ("execution:cancelled", "")]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [(n.node_id, n.status) for n in await list_node_logs(driver.store, eid)] == [("approve", "CANCELLED")]
    # Idempotent, and the (paused, lease-less) worker's stale view is refused.
    assert await request_cancel(driver.store, eid) is ExecutionStatus.CANCELLED
    assert len(await driver.events(eid)) == len(events)
    assert eid not in [g.execution_id for g in await claim_executions(driver.store, "w", limit=1000, lease_ms=1000)]


async def test_cancel_pending_unleased_at_once(driver: Driver) -> None:
    eid, _ = await driver.create(claim=False)
    assert await request_cancel(driver.store, eid) is ExecutionStatus.CANCELLED
    assert [e.type for e in await driver.events(eid)] == ["execution:cancelled"]


async def test_cancel_running_is_left_to_its_worker(driver: Driver) -> None:
    eid, lease = await driver.create()
    assert lease
    await driver.start(lease)
    await driver.commit(lease, 1, logs=[node_log("slow", "RUNNING")], events=[ev("node:started", "slow")])
    assert await request_cancel(driver.store, eid) is ExecutionStatus.RUNNING
    loaded = await load_execution(driver.store, LeaseRef(eid, lease.token))
    assert loaded.cancel_requested and loaded.execution.status is ExecutionStatus.RUNNING
    assert [e.type for e in await driver.events(eid)] == ["execution:started", "node:started"]

"""Leases: exclusive claims (SKIP LOCKED), expiry and takeover, renewals, release, long-poll."""

from __future__ import annotations

import asyncio

import pytest
from state_support import Driver, approval, ev, step

from weft_common.errors import Conflict
from weft_state.domain import CreateExecution, ExecutionStatus, LeaseRef
from weft_state.executions import create_execution, request_cancel
from weft_state.leases import claim_executions, load_execution, release_lease, renew_leases
from weft_state.resumes import enqueue_resume
from weft_state.store import StateStore


async def finish(driver: Driver, lease: LeaseRef, version: int) -> None:
    await driver.commit(lease, version, events=[ev("execution:completed")], status=ExecutionStatus.SUCCEEDED)


async def test_concurrent_claimers_never_share_an_execution(fresh_store: StateStore) -> None:
    driver = Driver(fresh_store)
    wf = await driver.workflow()
    ids = {(await driver.create(claim=False, workflow_id=wf))[0] for _ in range(40)}
    claimed: dict[str, list[str]] = {}

    async def worker(name: str) -> None:
        while True:
            grants = await claim_executions(driver.store, name, limit=3, lease_ms=30_000)
            mine = [g.execution_id for g in grants if g.execution_id in ids]
            for eid in mine:
                claimed.setdefault(eid, []).append(name)
            if not grants:
                return

    await asyncio.gather(*(worker(f"w{i}") for i in range(6)))
    assert set(claimed) == ids
    assert all(len(owners) == 1 for owners in claimed.values()), claimed


async def test_claimed_is_not_claimable_until_the_lease_expires(driver: Driver) -> None:
    eid, lease = await driver.create(lease_ms=300)
    assert lease
    await driver.start(lease)
    await driver.commit(lease, 1, steps=[step("a", 1)], events=[ev("node:completed", "a")])
    assert eid not in [g.execution_id for g in await claim_executions(driver.store, "w2", limit=1000, lease_ms=30_000)]
    await asyncio.sleep(0.35)
    # The first worker is presumed dead: another takes over from the last commit.
    grants = await claim_executions(driver.store, "w2", limit=1000, lease_ms=30_000, wait_ms=2000)
    takeover = next(g for g in grants if g.execution_id == eid)
    loaded = await load_execution(driver.store, LeaseRef(eid, takeover.token))
    assert [s.node_id for s in loaded.steps] == ["a"] and loaded.version == 2
    assert loaded.execution.status is ExecutionStatus.RUNNING
    # The old holder is refused everywhere, even with the right version.
    with pytest.raises(Conflict, match="lease lost"):
        await driver.commit(lease, 2, events=[ev("node:completed", "b")])
    with pytest.raises(Conflict):
        await load_execution(driver.store, LeaseRef(eid, lease.token))
    renewed = await renew_leases(driver.store, driver.worker, [LeaseRef(eid, lease.token)], 30_000)
    assert renewed.lost == [eid]
    await driver.commit(LeaseRef(eid, takeover.token), 2, events=[ev("node:completed", "b")])
    assert [e.seq for e in await driver.events(eid)] == [1, 2, 3]
    await finish(driver, LeaseRef(eid, takeover.token), 3)


async def test_renewal_keeps_the_lease_and_reports_cancel(driver: Driver) -> None:
    eid, lease = await driver.create(lease_ms=400)
    assert lease
    await driver.start(lease)
    for _ in range(4):
        await asyncio.sleep(0.2)
        result = await renew_leases(driver.store, driver.worker, [lease], 400)
        assert result.lost == [] and result.cancel == []
    assert eid not in [g.execution_id for g in await claim_executions(driver.store, "w2", limit=1000, lease_ms=1000)]
    assert await request_cancel(driver.store, eid, reason="stop") is ExecutionStatus.RUNNING
    assert (await renew_leases(driver.store, driver.worker, [lease], 400)).cancel == [eid]
    assert (await load_execution(driver.store, lease)).cancel_requested
    await driver.commit(lease, 1, events=[ev("execution:cancelled")], status=ExecutionStatus.CANCELLED)
    assert (await renew_leases(driver.store, driver.worker, [lease], 400)).lost == [eid]


async def test_release_makes_it_claimable_and_long_poll_wakes_on_new_work(fresh_store: StateStore) -> None:
    driver = Driver(fresh_store)
    eid, lease = await driver.create()
    assert lease
    await driver.start(lease)
    await release_lease(driver.store, lease)
    grants = await claim_executions(driver.store, "w2", limit=1000, lease_ms=30_000)
    assert eid in [g.execution_id for g in grants]

    wf = await driver.workflow()
    waiter = asyncio.create_task(
        claim_executions(driver.store, "w3", limit=1000, lease_ms=30_000, wait_ms=10_000))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    created = await create_execution(driver.store, CreateExecution(workflow_id=wf))
    grants = await asyncio.wait_for(waiter, 5)
    assert [g.execution_id for g in grants] == [created.execution_id]
    assert grants[0].worker_id == "w3"


async def test_a_held_paused_execution_with_a_queued_resume_is_not_claimable(driver: Driver) -> None:
    """Work to do (a queued resume) never overrides someone else's live lease."""
    eid, lease = await driver.create(lease_ms=400)
    assert lease
    await driver.start(lease)
    await driver.commit(lease, 1, status=ExecutionStatus.PAUSED, paused_nodes=(approval("approve"),))
    await enqueue_resume(driver.store, eid, "approve", input_json='{"approved": true}')
    grants = await claim_executions(driver.store, "w2", limit=1000, lease_ms=30_000)
    assert eid not in [g.execution_id for g in grants]
    assert (await renew_leases(driver.store, driver.worker, [lease], 400)).resumed == [eid]
    await asyncio.sleep(0.5)  # the holder stops renewing: now it is anyone's
    grants = await claim_executions(driver.store, "w2", limit=1000, lease_ms=30_000, wait_ms=2000)
    taken = next(g for g in grants if g.execution_id == eid)
    assert [r.node_id for r in (await load_execution(driver.store, LeaseRef(eid, taken.token))).resumes] == ["approve"]
    await finish(driver, LeaseRef(eid, taken.token), 2)

"""Pause/resume: the queue, validation, exactly-once claims, order, and the resume-during-pause
race."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from state_support import Driver, approval, ev, node_log, step

from weft_common import jsonutil
from weft_common.errors import FailedPrecondition, InvalidArgument, NotFound
from weft_state.domain import ExecutionStatus, LeaseRef, PausedNode
from weft_state.executions import get_execution, request_cancel
from weft_state.leases import claim_executions, load_execution, renew_leases
from weft_state.resumes import enqueue_resume


async def paused_execution(driver: Driver, *nodes: PausedNode) -> tuple[str, int]:
    eid, lease = await driver.create()
    assert lease
    await driver.start(lease)
    res = await driver.pause(lease, 1, *(nodes or (approval(),)))
    return eid, res.version


async def claim(driver: Driver, eid: str) -> LeaseRef:
    for _ in range(50):
        for grant in await claim_executions(driver.store, driver.worker, limit=100, lease_ms=30_000):
            if grant.execution_id == eid:
                return LeaseRef(eid, grant.token)
        await asyncio.sleep(0.02)
    raise AssertionError(f"{eid} never became claimable")


async def test_pause_is_visible_and_holds_no_worker(driver: Driver) -> None:
    eid, _ = await paused_execution(driver)
    rec = await get_execution(driver.store, eid)
    assert rec.status is ExecutionStatus.PAUSED
    assert [(p.node_id, p.reason) for p in rec.paused_nodes] == [("approve", "ok to ship?")]
    assert jsonutil.loads(rec.paused_nodes[0].input_schema_json)["required"] == ["approved"]
    grants = await claim_executions(driver.store, "other", limit=1000, lease_ms=1000)
    assert eid not in [g.execution_id for g in grants]  # nothing to do until a resume arrives


async def test_resume_validates_claims_once_and_is_applied(driver: Driver) -> None:
    eid, version = await paused_execution(driver)
    with pytest.raises(InvalidArgument, match=r"node 'approve'.*inputSchema at /approved: 'yes' is not of type 'boolean'"):
        await enqueue_resume(driver.store, eid, "approve", input_json='{"approved": "yes"}')
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        await enqueue_resume(driver.store, eid, "approve", input_json="{nope")
    # Bad input claimed nothing: a good resume still goes through, exactly once.
    rid = await enqueue_resume(driver.store, eid, "approve", input_json='{"approved": true, "by": "ops"}')
    with pytest.raises(FailedPrecondition, match="already resumed"):
        await enqueue_resume(driver.store, eid, "approve", input_json='{"approved": true}')
    rec = await get_execution(driver.store, eid)
    assert rec.status is ExecutionStatus.PAUSED and rec.paused_nodes == ()

    lease = await claim(driver, eid)
    loaded = await load_execution(driver.store, lease)
    assert [(r.resume_id, r.node_id, jsonutil.loads(r.input_json)) for r in loaded.resumes] == [
        (rid, "approve", {"approved": True, "by": "ops"})]
    await driver.commit(
        lease, version,
        steps=[step("approve", {"approved": True, "by": "ops"})],
        logs=[node_log("approve", "SUCCEEDED", node_type="approval")],
        events=[ev("execution:resumed"), ev("node:completed", "approve")],
        status=ExecutionStatus.RUNNING, applied_resume_ids=(rid,),
    )
    loaded = await load_execution(driver.store, lease)
    assert loaded.resumes == [] and loaded.execution.paused_nodes == ()
    with pytest.raises(FailedPrecondition, match=r"already resumed|not paused"):
        await enqueue_resume(driver.store, eid, "approve", input_json='{"approved": true}')


async def test_resume_errors(driver: Driver) -> None:
    eid, _ = await paused_execution(driver)
    with pytest.raises(FailedPrecondition, match=r"node 'elsewhere' of execution .* is not paused"):
        await enqueue_resume(driver.store, eid, "elsewhere", input_json="{}")
    with pytest.raises(NotFound):
        await enqueue_resume(driver.store, "no-such-execution", "approve", input_json="{}")
    owned, _ = await driver.create(owner="alice")
    with pytest.raises(NotFound):
        await enqueue_resume(driver.store, owned, "approve", input_json="{}", owner="bob")
    await request_cancel(driver.store, eid)
    with pytest.raises(FailedPrecondition, match="CANCELLED"):
        await enqueue_resume(driver.store, eid, "approve", input_json='{"approved": true}')


async def test_parallel_pauses_resume_independently_in_order(driver: Driver) -> None:
    eid, version = await paused_execution(
        driver, approval("a", scope=(("par", 0),)), approval("a", scope=(("par", 1),)), approval("b"))
    r1 = await enqueue_resume(driver.store, eid, "a", scope=(("par", 1),), input_json='{"approved": true}')
    r2 = await enqueue_resume(driver.store, eid, "b", input_json='{"approved": false}')
    rec = await get_execution(driver.store, eid)
    assert [(p.node_id, p.scope) for p in rec.paused_nodes] == [("a", (("par", 0),))]

    lease = await claim(driver, eid)
    loaded = await load_execution(driver.store, lease)
    assert [r.resume_id for r in loaded.resumes] == [r1, r2]
    assert [(r.node_id, r.scope) for r in loaded.resumes] == [("a", (("par", 1),)), ("b", ())]
    # The worker applies only the first; the second stays queued (and keeps it claimable).
    version = (await driver.commit(lease, version, applied_resume_ids=(r1,), status=ExecutionStatus.RUNNING)).version
    loaded = await load_execution(driver.store, lease)
    assert [r.resume_id for r in loaded.resumes] == [r2]
    assert (await renew_leases(driver.store, driver.worker, [lease], 30_000)).resumed == [eid]
    r3 = await enqueue_resume(driver.store, eid, "a", scope=(("par", 0),), input_json='{"approved": true}')
    loaded = await load_execution(driver.store, lease)
    assert [r.resume_id for r in loaded.resumes] == [r2, r3]
    await driver.commit(lease, version, applied_resume_ids=(r2, r3))
    loaded = await load_execution(driver.store, lease)
    assert loaded.resumes == []
    assert (await renew_leases(driver.store, driver.worker, [lease], 30_000)).resumed == []


async def test_resume_during_the_pause_commit_is_not_lost(driver: Driver) -> None:
    """The resume arrives while the executor is still committing PAUSED: it waits for the pause
    and is queued, not refused."""
    eid, lease = await driver.create()
    assert lease
    await driver.start(lease)
    await driver.commit(lease, 1, logs=[node_log("approve", "RUNNING", node_type="approval")],
                        events=[ev("node:started", "approve")])
    resume = asyncio.create_task(
        enqueue_resume(driver.store, eid, "approve", input_json='{"approved": true}'))
    await asyncio.sleep(0.3)
    assert not resume.done()
    version = (await driver.pause(lease, 2, approval())).version
    rid = await asyncio.wait_for(resume, 5)
    lease2 = await claim(driver, eid)
    loaded = await load_execution(driver.store, lease2)
    assert [r.resume_id for r in loaded.resumes] == [rid] and loaded.version == version


async def test_a_resume_for_a_node_that_never_pauses_is_refused_at_once(driver: Driver) -> None:
    """Only a node that can park is worth waiting for: an unknown node, or one of a type that
    never pauses, is refused without the wait for a pause on its way."""
    driver.store.options = dataclasses.replace(driver.store.options, resume_wait_s=60)
    try:
        eid, lease = await driver.create()
        assert lease
        await driver.start(lease)
        for node, message in (("nope", "has no node 'nope'"), ("slow", "'http', which never pauses")):
            with pytest.raises(FailedPrecondition, match=message):
                await asyncio.wait_for(
                    enqueue_resume(driver.store, eid, node, input_json="{}"), 10)
    finally:
        driver.store.options = dataclasses.replace(driver.store.options, resume_wait_s=3)


async def test_resume_racing_many_times_claims_exactly_once(driver: Driver) -> None:
    eid, _ = await paused_execution(driver)
    results = await asyncio.gather(
        *(enqueue_resume(driver.store, eid, "approve", input_json='{"approved": true}') for _ in range(10)),
        return_exceptions=True,
    )
    ok = [r for r in results if isinstance(r, str)]
    assert len(ok) == 1
    assert all(isinstance(r, FailedPrecondition) for r in results if not isinstance(r, str))


async def test_durable_wait_wakes_on_time(driver: Driver) -> None:
    from weft_state.clock import later

    eid, lease = await driver.create()
    assert lease
    await driver.start(lease)
    wake = later(300)
    await driver.commit(
        lease, 1, status=ExecutionStatus.PAUSED, release_lease=True, wake_at=wake,
        paused_nodes=(PausedNode("sleep", reason="wait", wake_at=wake),),
        events=[ev("execution:paused")],
    )
    grants = await claim_executions(driver.store, driver.worker, limit=1000, lease_ms=30_000)
    assert eid not in [g.execution_id for g in grants]
    lease2 = await claim(driver, eid)  # becomes claimable once wake_at has passed
    loaded = await load_execution(driver.store, lease2)
    assert [p.node_id for p in loaded.execution.paused_nodes] == ["sleep"]
    await driver.commit(lease2, 2, steps=[step("sleep", {"waitedMs": 300})], status=ExecutionStatus.RUNNING)
    assert (await get_execution(driver.store, eid)).paused_nodes == ()


async def test_other_branches_commit_while_a_node_is_parked(driver: Driver) -> None:
    """A parked node keeps its pause while sibling branches commit steps; the step that
    completes the parked node closes it."""
    eid, lease = await driver.create()
    assert lease
    await driver.start(lease)
    v = (await driver.commit(lease, 1, paused_nodes=(approval("a"),),
                             logs=[node_log("a", "PAUSED", node_type="approval")])).version
    for i in range(3):
        v = (await driver.commit(lease, v, steps=[step(f"side{i}", i)],
                                 events=[ev("node:completed", f"side{i}")])).version
        assert [p.node_id for p in (await get_execution(driver.store, eid)).paused_nodes] == ["a"]
    rid = await enqueue_resume(driver.store, eid, "a", input_json='{"approved": true}')
    assert (await renew_leases(driver.store, driver.worker, [lease], 30_000)).resumed == [eid]
    v = (await driver.commit(lease, v, steps=[step("a", {"approved": True})], applied_resume_ids=(rid,),
                             events=[ev("node:completed", "a")])).version
    loaded = await load_execution(driver.store, LeaseRef(eid, lease.token))
    assert loaded.resumes == [] and loaded.execution.paused_nodes == ()
    assert [s.node_id for s in loaded.steps] == ["side0", "side1", "side2", "a"]
    assert [e.seq for e in await driver.events(eid)] == list(range(1, 6))

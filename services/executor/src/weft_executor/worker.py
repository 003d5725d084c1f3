"""The worker: claims executions from the state service and runs them durably.

Life of one execution on a worker:

1. A lease arrives, from the claim loop (``ClaimExecutions`` long poll) or from ``StartExecution``
   (created already leased to this worker, so it runs without waiting for a poll).
2. ``LoadExecution`` (for a start, ``CreateExecution`` answers the same at once) gives the DAG,
   the committed steps, the variables, the queued resumes and the commit version; the engine
   replays the steps and carries on from there.
3. Every step is committed through a ``StateExecutionStore`` under the lease. The commit that
   pauses or ends the execution also releases the lease.
4. The heartbeat (``RenewLeases`` every ``heartbeat_ms``) keeps the leases alive and learns which
   executions were lost (stop at once, write nothing), asked to cancel, or got new resumes.

A worker that dies simply stops renewing: after the lease expires another worker claims the
execution and resumes it from the last commit. Nodes that were running then run again with the
same idempotency key (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field

from weft.state.v1 import state_pb2
from weft.workflow.v1 import workflow_pb2
from weft_common import jsonutil
from weft_common.compiled import CompiledDag, dag_from_proto
from weft_common.errors import Conflict, FailedPrecondition, NotFound, WeftError

from .clients import StateClient
from .convert import resume_from_proto, scope_from_proto, step_from_proto
from .engine import Engine, Resume, RunHandle
from .records import scope_key
from .settings import ExecutorSettings
from .state_store import CommitGroup, StateExecutionStore
from .tracing import begin_execution_run, end_execution_run, stored_traceparent_json

__all__ = ["Worker", "default_worker_id"]

log = logging.getLogger("weft.executor.worker")

_TERMINAL = frozenset(
    {
        workflow_pb2.EXECUTION_STATUS_SUCCEEDED,
        workflow_pb2.EXECUTION_STATUS_FAILED,
        workflow_pb2.EXECUTION_STATUS_CANCELLED,
    }
)


_NODE_ENDS = frozenset({"node:completed", "node:error", "node:cancelled"})
_DAG_CACHE_SIZE = 256


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(slots=True)
class _Running:
    execution_id: str
    lease: state_pb2.Lease
    store: StateExecutionStore | None = None
    handle: RunHandle | None = None
    task: asyncio.Task[None] | None = None
    delivered: set[str] = field(default_factory=set)
    cancel_requested: bool = False
    lost: bool = False
    refreshing: bool = False
    # Resumes and cancels that arrive while the execution is still loading.
    pending_resumes: list[Resume] = field(default_factory=list)
    # What LoadExecution would answer, when the lease came with it (CreateExecution.load).
    loaded: state_pb2.LoadExecutionResponse | None = None


class Worker:
    """Claims executions under leases and runs each one with the engine until it pauses or ends."""

    def __init__(
        self,
        settings: ExecutorSettings,
        state: StateClient,
        engine: Engine,
        *,
        worker_id: str = "",
    ) -> None:
        self.settings = settings
        self.state = state
        self.engine = engine
        self.worker_id = worker_id or settings.worker_id or default_worker_id()
        self._running: dict[str, _Running] = {}
        self._reserved = 0
        self._capacity = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._aux: set[asyncio.Task[None]] = set()
        self._last_renewed = time.monotonic()
        self._dags: dict[tuple[str, int, str], CompiledDag] = {}
        # Cross-execution group commit: the commits of all executions on this worker.
        self.commits = CommitGroup(state.stub, max_in_flight=settings.commit_max_in_flight)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="weft-claim-loop"),
            asyncio.create_task(self._heartbeat_loop(), name="weft-heartbeat"),
        ]

    async def stop(self) -> None:
        """Stop claiming, stop running executions locally and hand their leases back."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in [*self._tasks, *self._aux]:
            with contextlib.suppress(BaseException):
                await task
        running = list(self._running.values())
        for run in running:
            self._abandon(run, "worker shutting down")
        for run in running:
            if run.task is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(asyncio.shield(run.task), timeout=5)

    # -- capacity --------------------------------------------------------------------------------

    def _free(self) -> int:
        return self.settings.max_executions_per_worker - len(self._running) - self._reserved

    def try_reserve(self) -> bool:
        """Reserve room for one execution (``StartExecution`` claims its new execution at once)."""
        if self._stopping or self._free() <= 0:
            return False
        self._reserved += 1
        return True

    def unreserve(self) -> None:
        self._reserved -= 1
        self._capacity.set()

    def holds(self, execution_id: str) -> bool:
        return execution_id in self._running

    def abandoning(self, execution_id: str) -> bool:
        """True when this worker is letting go of the execution without writing more (lease lost,
        shutting down): a sub-workflow node must leave its child to whoever takes over."""
        run = self._running.get(execution_id)
        return (
            self._stopping
            or run is None
            or run.lost
            or (run.store is not None and run.store.fenced)
        )

    @property
    def running_count(self) -> int:
        return len(self._running)

    # -- running executions ----------------------------------------------------------------------

    def run_leased(
        self,
        lease: state_pb2.Lease,
        *,
        reserved: bool = False,
        loaded: state_pb2.LoadExecutionResponse | None = None,
    ) -> None:
        """Run an execution this worker now holds the lease of (``loaded``: what LoadExecution
        would answer for this lease, when the caller already has it)."""
        if reserved:
            self._reserved -= 1
        current = self._running.get(lease.execution_id)
        if current is not None:
            if current.lease.token == lease.token:
                return
            # A new lease for an execution still running here under an older one: that run's
            # lease expired (this worker stalled), so it must stop without writing.
            self._lose(current, "lease superseded by a newer claim")
        log.debug("execution %s: leased to %s", lease.execution_id, self.worker_id)
        run = _Running(execution_id=lease.execution_id, lease=lease, loaded=loaded)
        self._running[lease.execution_id] = run
        run.task = asyncio.create_task(self._run(run), name=f"weft-exec-{lease.execution_id}")

    async def _run(self, run: _Running) -> None:
        try:
            await self._run_inner(run)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("execution %s: worker failed to run it", run.execution_id)
        finally:
            end_execution_run()
            if self._running.get(run.execution_id) is run:
                del self._running[run.execution_id]
            self._capacity.set()

    async def _run_inner(self, run: _Running) -> None:
        t0 = time.perf_counter()
        loaded = run.loaded
        run.loaded = None
        if loaded is None:
            try:
                loaded = await self.state.load(run.lease)
            except (NotFound, FailedPrecondition, Conflict) as exc:
                log.info("execution %s: not loadable (%s)", run.execution_id, exc)
                return
        execution = loaded.execution
        if execution.status in _TERMINAL:
            await self._release(run)
            return
        store = StateExecutionStore(
            self.state.stub,
            lease=run.lease,
            version=loaded.version,
            retry_budget_s=self.settings.lease_ms / 1000,
            group=self.commits,
        )
        run.store = store
        continuing = execution.last_seq > 0
        open_runs = await self._open_runs(execution) if continuing else set()
        if run.lost or store.fenced:
            return
        log.debug(
            "execution %s: loaded in %.1f ms (%d steps, %d resumes, %d open runs)",
            run.execution_id,
            (time.perf_counter() - t0) * 1000,
            len(loaded.steps),
            len(loaded.resumes),
            len(open_runs),
        )
        resumes = [resume_from_proto(r) for r in loaded.resumes]
        begin_execution_run(  # ended in _run: node runs and commits nest under this run's span
            execution.execution_id,
            loaded.dag.workflow_id,
            first_run=not continuing,
            stored_traceparent=stored_traceparent_json(loaded.steps),
            trace_context=loaded.trace_context,  # the creator's: a first run continues it
        )
        run.delivered.update(r.resume_id for r in loaded.resumes)
        handle = self.engine.start(
            execution_id=execution.execution_id,
            dag=self._dag(loaded),
            input=jsonutil.loads(execution.input_json),
            store=store,
            variables=jsonutil.loads(loaded.variables_json),
            steps=[step_from_proto(s) for s in loaded.steps],
            resumes=resumes,
            # A take-over continues a log that already started.
            emit_started=not continuing,
            open_runs=open_runs,
        )
        run.handle = handle
        for resume in run.pending_resumes:
            self._hand_over(run, resume)
        run.pending_resumes.clear()
        if loaded.cancel_requested or run.cancel_requested:
            handle.cancel()
        try:
            outcome = await handle.result()
        except Conflict as exc:
            log.info("execution %s: stopped, commit refused (%s)", run.execution_id, exc)
            outcome = None
        if store.fenced or outcome is None:
            if not run.lost:
                # Our lease may still be valid (an ambiguous commit): hand it back so the
                # execution resumes from its last commit without waiting for the expiry.
                await self._release(run)
            return
        status = str(getattr(outcome, "status", ""))
        if status == "PAUSED":
            # A resume that raced with the pause is still queued: the execution is claimable
            # again at once, so look for it now rather than at the next poll.
            self.wake()
        elif status not in ("SUCCEEDED", "FAILED", "CANCELLED"):
            await self._release(run)

    def _dag(self, loaded: state_pb2.LoadExecutionResponse) -> CompiledDag:
        """The engine's DAG of a loaded execution. A registered version never changes, so its
        DAG is converted once and shared (the engine treats a DAG as immutable, and caches its
        plan by identity); inline definitions (version 0) are converted each time."""
        version = loaded.execution.workflow_version
        if not version:
            return dag_from_proto(loaded.dag)
        key = (loaded.dag.workflow_id, version, loaded.dag.definition_hash)
        dag = self._dags.get(key)
        if dag is None:
            if len(self._dags) >= _DAG_CACHE_SIZE:
                self._dags.clear()
            dag = self._dags[key] = dag_from_proto(loaded.dag)
        return dag

    def _abandon(self, run: _Running, reason: str) -> None:
        """Stop an execution here without writing anything more (another worker may own it)."""
        if run.store is not None:
            run.store.fence(reason)
        if run.handle is not None:
            run.handle.cancel()
        elif run.task is not None and run.store is None:
            run.task.cancel()  # still loading

    async def _release(self, run: _Running) -> None:
        try:
            await self.state.release(run.lease)
        except WeftError as exc:
            log.debug("execution %s: release refused (%s)", run.execution_id, exc)

    def deliver_resume(self, execution_id: str, resume: Resume) -> bool:
        """Hand a queued resume to the execution running here; False when it is not here."""
        run = self._running.get(execution_id)
        if run is None or run.lost:
            return False
        if resume.resume_id in run.delivered:
            return True
        if run.handle is None:
            run.pending_resumes.append(resume)
            return True
        self._hand_over(run, resume)
        return True

    @staticmethod
    def _hand_over(run: _Running, resume: Resume) -> None:
        if resume.resume_id in run.delivered or run.handle is None:
            return
        # False: the run is already finishing; the resume stays queued in the state service and
        # the next run of the execution applies it (see the wake() after a pause).
        if run.handle.resume(resume):
            run.delivered.add(resume.resume_id)

    async def _open_runs(self, execution: workflow_pb2.Execution) -> set[str]:
        """Node runs whose ``node:started`` is in the log without an end (a crashed worker's
        runs in flight, parked approvals): they run on without a second ``node:started``."""
        if execution.status == workflow_pb2.EXECUTION_STATUS_PAUSED:
            # Paused cleanly: everything else had finished before the pause was committed, so
            # the parked runs are the only open ones; no need to read the log.
            return {scope_key(p.node_id, scope_from_proto(p.scope)) for p in execution.paused_nodes}
        balance: dict[str, int] = {}
        async for event in self.state.stream_events(
            execution_id=execution.execution_id, after_seq=0
        ):
            if event.type == "node:started":
                key = scope_key(event.node_id, scope_from_proto(event.scope))
                balance[key] = balance.get(key, 0) + 1
            elif event.type in _NODE_ENDS:
                key = scope_key(event.node_id, scope_from_proto(event.scope))
                balance[key] = balance.get(key, 0) - 1
            if event.seq >= execution.last_seq:
                break
        return {key for key, n in balance.items() if n > 0}

    def cancel_local(self, execution_id: str) -> bool:
        """Cancel an execution running here (the cancel request is already durable)."""
        run = self._running.get(execution_id)
        if run is None:
            return False
        if not run.cancel_requested:
            run.cancel_requested = True
            if run.handle is not None:
                run.handle.cancel()
        return True

    # -- claim loop ------------------------------------------------------------------------------

    def wake(self) -> None:
        """Claim now (a resume was just queued): don't wait for the current long poll to return."""
        if self._stopping or self._free() <= 0:
            return
        task = asyncio.create_task(self._claim_once(wait_ms=0))
        self._aux.add(task)
        task.add_done_callback(self._aux.discard)

    async def _claim_once(self, *, wait_ms: int) -> None:
        free = self._free()
        if free <= 0:
            return
        # No room is reserved during the long poll: StartExecution must still be able to take
        # its new execution at once. The bound is soft: a poll answering while starts took the
        # room may run a few more executions than the limit.
        leases = await self.state.claim(
            worker_id=self.worker_id,
            max_count=free,
            lease_ms=self.settings.lease_ms,
            wait_ms=wait_ms,
        )
        for lease in leases:
            self.run_leased(lease)

    async def _claim_loop(self) -> None:
        backoff = 0.1
        wait_ms = max(self.settings.claim_poll_ms, 1000)
        while not self._stopping:
            if self._free() <= 0:
                self._capacity.clear()
                await self._capacity.wait()
                continue
            try:
                await self._claim_once(wait_ms=wait_ms)
                backoff = 0.1
            except WeftError as exc:
                log.warning("claiming executions failed: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            except Exception:
                # The loop must outlive any surprise, or this worker silently stops taking work.
                log.exception("claim loop error")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    # -- heartbeat -------------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_ms / 1000
        while not self._stopping:
            await asyncio.sleep(interval)
            try:
                await self.heartbeat()
            except Exception:
                log.exception("heartbeat error")

    async def heartbeat(self) -> None:
        """Renew every lease held here and act on what the state service reports."""
        runs = [r for r in self._running.values() if not r.lost]
        if not runs:
            self._last_renewed = time.monotonic()
            return
        try:
            response = await self.state.renew(
                worker_id=self.worker_id,
                leases=[r.lease for r in runs],
                lease_ms=self.settings.lease_ms,
            )
        except WeftError as exc:
            log.warning("renewing %d leases failed: %s", len(runs), exc)
            if time.monotonic() - self._last_renewed > self.settings.lease_ms / 1000:
                # Our leases have expired by now: another worker may be running these executions.
                for run in runs:
                    self._lose(run, "lease expired while the state service was unreachable")
            return
        self._last_renewed = time.monotonic()
        # The answer is about the leases sent: a run started since (a new lease) is not lost.
        sent = {r.execution_id: r for r in runs}
        for execution_id in response.lost_execution_ids:
            lost = sent.get(execution_id)
            if lost is not None:
                self._lose(lost, "lease lost")
        for execution_id in response.cancel_execution_ids:
            self.cancel_local(execution_id)
        for execution_id in response.resumed_execution_ids:
            resumed = sent.get(execution_id)
            if resumed is not None and resumed.handle is not None and not resumed.refreshing:
                task = asyncio.create_task(self._refresh_resumes(resumed))
                self._aux.add(task)
                task.add_done_callback(self._aux.discard)

    def _lose(self, run: _Running, reason: str) -> None:
        log.info("execution %s: %s, stopping it here", run.execution_id, reason)
        run.lost = True
        self._abandon(run, reason)

    async def _refresh_resumes(self, run: _Running) -> None:
        run.refreshing = True
        try:
            loaded = await self.state.load(run.lease)
        except WeftError as exc:
            log.info("execution %s: could not load its resumes (%s)", run.execution_id, exc)
            return
        finally:
            run.refreshing = False
        for msg in loaded.resumes:
            self.deliver_resume(run.execution_id, resume_from_proto(msg))

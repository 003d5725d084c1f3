"""The run loop of one execution (SPEC sections 2-5): ready-set scheduling over node runs.

A node run is (node id, scope). It becomes ready when every incoming edge in its frame is settled
and at least one is active; all-dead skips it and kills its outgoing edges (dead-path
elimination). Ready runs start at once, bounded by the per-execution and per-worker limits.
Every transition that matters for a replay (a completion, a skip, a routed error, a container
decision, a park) is recorded in the journal, and the runs it makes ready start only after that
commit is durable. Work is O(edges touched): the compiled ``incoming``/``outgoing`` lists and
per-frame counters drive everything; nothing scans the graph.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

from weft_common.compiled import CompiledDag, CompiledNode

from .attempts import run_attempts
from .frames import Frame, NodeRun, RunLookup
from .handlers.base import NodeFailure, NodeResult, Resolver
from .journal import Journal
from .outputs import check_output_size
from .plan import ExecutionPlan, plan_for
from .records import (
    ControlUpdate,
    EventDraft,
    ExecutionStore,
    NodeLogRecord,
    NodeStatus,
    PausedNodeInfo,
    Scope,
    StepRecord,
    scope_json,
    scope_key,
)
from .tracing import count_finished, trace_step, track_run

if TYPE_CHECKING:
    from .containers import ContainerRun
    from .engine import Engine, Outcome, Resume

__all__ = ["ExecutionRun"]

log = logging.getLogger(__name__)

_COMMIT = object()  # marks one commit() call among the followups handed back by the journal
_FINAL = object()  # marks the final commit: its durability resolves the outcome
_OUT = ("out",)
_CONTAINER_TYPES = frozenset({"loop", "parallel"})
_ERROR = ("error",)
# Enum members as module constants: ``NodeStatus.X`` is a slow metaclass lookup on hot paths.
_SUCCEEDED = NodeStatus.SUCCEEDED
_SKIPPED = NodeStatus.SKIPPED


def _ident(run: NodeRun) -> str:
    """The run's key as the log and resumes name it (``scope_key``): its own key, except in a
    retried container's attempt, whose keys carry the attempt ("b@L~2:0" -> "b@L:0")."""
    key = run.key
    return key if "~" not in key else scope_key(run.node.id, run.frame.scope)


class ExecutionRun:
    """One execution on this worker: its frames, ready queue, tasks and journal."""

    def __init__(
        self,
        engine: Engine,
        *,
        execution_id: str,
        dag: CompiledDag,
        input: Any,
        store: ExecutionStore,
        variables: dict[str, Any] | None,
        steps: Sequence[StepRecord],
        resumes: Sequence[Resume],
        emit_started: bool,
        open_runs: Collection[str],
    ) -> None:
        self.engine = engine
        self.settings = engine.settings
        self.execution_id = execution_id
        self.dag = dag
        self.plan: ExecutionPlan = plan_for(dag)
        self.nodes = self.plan.nodes
        self.input = input
        self.variables: dict[str, Any] = (
            dict(dag.variables) if variables is None else dict(variables)
        )
        self.replay: dict[str, StepRecord] = {s.key: s for s in steps}
        self.pending_resumes: dict[str, deque[Resume]] = {}
        for r in resumes:
            self.pending_resumes.setdefault(scope_key(r.node_id, r.scope), deque()).append(r)
        self.open_logged = set(open_runs)
        self.emit_started = emit_started
        self.journal = Journal(
            store,
            flush_ms=self.settings.event_flush_ms,
            on_durable=self._on_durable,
            on_error=self._on_store_error,
        )
        self.top = Frame("", "", (), "", None, None, self.plan.member_count[""])
        self.exec_limit = max(1, self.settings.max_concurrency_per_execution)
        self.max_output = self.settings.max_output_bytes
        self.ready: deque[NodeRun] = deque()
        self.work: deque[NodeRun] = deque()
        self.runners = 0  # runner tasks alive
        self.executing = 0  # runners inside a node run
        self.in_runner = False  # processing a result inside a runner (it writes the commit)
        self.lead_wanted = False  # a runner asked for a commit it writes itself (journal.lead)
        # Runs that start without waiting for a commit (see flush_starts).
        self.free_starts: list[NodeRun] = []
        self.resolve_deadline = False  # outcome durable, waiting for cancelled handlers to end
        self.waiting_worker = False  # the per-worker budget is spent; the engine pumps us later
        self.starting = False  # inside start(): no pause decision yet (see _started)
        self.tasks: set[asyncio.Task[None]] = set()
        self.parked: dict[str, NodeRun] = {}
        self.wake_timers: dict[str, asyncio.TimerHandle] = {}  # durable waits due while running
        # Containers with a timeoutMs: their running attempt's timer, by container run key.
        self.container_timers: dict[str, asyncio.TimerHandle] = {}
        # Containers waiting to start their next attempt (retry backoff), by container run key.
        self.retry_timers: dict[str, asyncio.TimerHandle] = {}
        # Runs of output nodes inside containers: name -> {scope: value} (see _final_outputs).
        self.nested_outputs: dict[str, dict[Scope, Any]] = {}
        self.inflight = 0  # commit() calls whose followups have not come back yet
        self.uncommitted = False  # a step was recorded since the last commit() call
        self.draining = False
        self.outputs: dict[str, Any] = {}
        self.token_usage: dict[str, int] | None = None
        self.finishing = False
        self.status = "RUNNING"
        self.error: dict[str, Any] | None = None
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.done: asyncio.Future[Outcome] = loop.create_future()
        track_run(self)  # the ready-queue gauge reads len(self.ready) when collected
        # result() callers, resolved directly (no shield hop): one loop iteration, not two.
        self.waiters: list[asyncio.Future[Outcome]] = []

    # ------------------------------------------------------------------ lifecycle
    def begin(self) -> None:
        """Start (or, with committed steps, replay up to where the earlier run stopped).

        Called by ``Engine.start`` before it returns, so a cancel or resume given right after
        ``start`` already sees the replayed state (parked nodes, runs to re-run)."""
        self.starting = True
        self.loop.call_soon(self._started)
        try:
            if not self.emit_started:
                # A take-over: seqs the previous worker may have streamed live stay its own.
                self.journal.cover_live_window(self.open_logged, self.nodes)
            if self.emit_started:
                self.event(
                    "execution:started",
                    payload={"workflowId": self.dag.workflow_id, "input": self.input},
                )
                # Rides on the first step's commit: nothing has to wait for it.
                self.journal.control(
                    ControlUpdate(status="RUNNING", variables=dict(self.variables))
                )
                # This run's trace context, for a later resume's span link (rides along too).
                if (traced := trace_step(self.dag.start_node)) is not None:
                    self.journal.step(traced)
            starts: list[NodeRun] = []
            self.enter_frame(self.top, starts)
            self.flush_starts(starts)
        except Exception as exc:
            self._internal_error(exc)

    def _started(self) -> None:
        # Pause (or stall) decisions wait until the caller of start() had its turn: a cancel or
        # resume handed over right after a replay must not find the execution paused again.
        self.starting = False
        if not self.finishing:
            self.check_idle()

    def cancel(self, reason: str = "") -> None:
        if self.finishing:
            return
        self.finishing = True
        self.cancel_frame(self.top)
        self._end_orphans()
        self.status = "CANCELLED"
        self.event("execution:cancelled", payload={"reason": reason} if reason else {})
        self._finalize(
            ControlUpdate(status="CANCELLED", variables=dict(self.variables), release_lease=True)
        )

    def resume(self, resume: Resume) -> bool:
        """Apply a resume while running; False when the run is already finishing."""
        if self.finishing:
            return False
        key = scope_key(resume.node_id, resume.scope)
        run = self.parked.pop(key, None)
        if run is None:
            # Not parked (yet): a replay may still reach it. Kept until then.
            self.pending_resumes.setdefault(key, deque()).append(resume)
            return True
        self._resume_parked(run, resume)
        self.pump()
        return True

    # ------------------------------------------------------------------ events and records
    def event(
        self,
        type_: str,
        *,
        run: NodeRun | None = None,
        node: CompiledNode | None = None,
        scope: Scope = (),
        payload: dict[str, Any] | None = None,
    ) -> None:
        if run is not None:
            node, scope = run.node, run.frame.scope
        body = payload if payload is not None else {}
        if node is not None:
            body["nodeType"] = node.type
            self.journal.event(EventDraft(type_, time.time(), node.id, scope, body))
        else:
            self.journal.event(EventDraft(type_, time.time(), "", (), body))

    def node_event(self, type_: str, run: NodeRun, body: dict[str, Any]) -> None:
        """``event`` for a node run (the hot path: two per node)."""
        node = run.node
        body["nodeType"] = node.type
        self.journal.event(EventDraft(type_, time.time(), node.id, run.frame.scope, body))

    def record(self, step: StepRecord, log_: NodeLogRecord | None = None) -> None:
        self.journal.step(step, log_)
        self.uncommitted = True

    def flush_starts(self, starts: list[NodeRun]) -> None:
        """Start ``starts`` once what was recorded for them is durable (at once on a replay).

        ``free_starts`` (a parallel's next branches, opened because a sibling branch finished)
        start at once: nothing recorded here is theirs to wait for. When they are all there is,
        no commit is asked for: the records ride on the next commit, or the journal's flush timer
        writes them (group commit across branches; a crash before then re-runs the branch)."""
        if self.free_starts:
            free, self.free_starts = self.free_starts, []
            self.work.extend(free)
            if not starts:
                if not self.in_runner:
                    self.drain_work()
                # else the runner drains them once its node run is over (see _runner)
                return
        if self.uncommitted:
            self.uncommitted = False
            self.inflight += 1
            starts.append(_COMMIT)  # type: ignore[arg-type]
            if self.in_runner:
                self.lead_wanted = True  # the runner writes it right after (journal.lead)
                self.journal.commit(starts, spawn=False)
            else:
                self.journal.commit(starts)
        elif starts:
            self.work.extend(starts)
            self.drain_work()
        else:
            self.check_idle()

    def _on_durable(self, followups: list[Any]) -> None:
        try:
            work = self.work
            for f in followups:
                if f is _COMMIT:
                    self.inflight -= 1
                elif f is _FINAL:
                    self._resolve_outcome()
                    return
                else:
                    work.append(f)
            if self.finishing:
                work.clear()
                return
            self.drain_work()
        except Exception as exc:
            self._internal_error(exc)

    def _on_store_error(self, exc: BaseException) -> None:
        """The store refused a write (lease lost, database gone): stop without writing more."""
        log.warning("execution %s: store write failed, stopping: %r", self.execution_id, exc)
        self.finishing = True
        for task in list(self.tasks):
            task.cancel()
        self._resolve_failure(exc)

    def _resolve_failure(self, exc: BaseException) -> None:
        if self.done.done():
            return
        self.done.set_exception(exc)
        self.done.exception()  # retrieved: the waiters carry it to the callers
        for w in self.waiters:
            if not w.done():
                w.set_exception(exc)
        self.waiters.clear()

    def _internal_error(self, exc: BaseException) -> None:
        log.exception("execution %s: engine error", self.execution_id, exc_info=exc)
        if self.finishing:
            self._resolve_failure(exc)
            return
        self._fail_execution(
            {
                "message": f"engine error: {type(exc).__name__}: {exc}",
                "code": "INTERNAL",
                "nodeId": "",
            }
        )

    # ------------------------------------------------------------------ frames
    def enter_frame(self, frame: Frame, starts: list[NodeRun]) -> None:
        """Make a frame's entries ready (a body with no members is done at once)."""
        if frame.pending == 0:
            self.frame_done(frame, starts)
            return
        suffix = frame.key_suffix
        for node in self.plan.entry_nodes[frame.container]:
            starts.append(NodeRun(node, frame, node.id + suffix))

    def frame_done(self, frame: Frame, starts: list[NodeRun]) -> None:
        frame.closed = True
        if frame.owner is None:
            self._complete_execution()
        else:
            frame.owner.frame_done(frame, starts)

    def fail_frame(self, frame: Frame, error: dict[str, Any], starts: list[NodeRun]) -> None:
        """An unrouted failure in ``frame``: stop what runs there, then fail its owner."""
        frame.closed = True
        self.cancel_frame(frame)
        if frame.owner is None:
            self._fail_execution(error)
        else:
            frame.owner.frame_failed(frame, error, starts)

    def cancel_frame(self, frame: Frame) -> None:
        """Cancel every open run in ``frame`` (containers first cancel their own frames)."""
        frame.closed = True
        for run in list(frame.open.values()):
            self.cancel_run(run)

    def cancel_run(self, run: NodeRun) -> None:
        if run.finished:
            return
        run.finished = True
        run.frame.open.pop(run.node.id, None)
        if run.container is not None:
            run.container.cancel()
        if run.task is not None:
            run.task.cancel()
        if self.retry_timers:
            timer = self.retry_timers.pop(run.key, None)
            if timer is not None:
                timer.cancel()  # a container between two attempts
        if self.parked:
            self.parked.pop(_ident(run), None)
        now = time.time()
        self.event("node:cancelled", run=run)
        self.journal.node_log(
            NodeLogRecord(
                node_id=run.node.id,
                node_type=run.node.type,
                scope=run.frame.scope,
                status=NodeStatus.CANCELLED,
                attempt=run.attempt,
                started_at=run.started_at or now,
                finished_at=now,
            )
        )

    def _end_orphans(self) -> None:
        """Runs whose node:started a crashed worker logged, still waiting here to run again:
        end them in the log too (every node:started gets exactly one end)."""
        for run in self.ready:
            self._drop(run)
        self.ready.clear()

    def resolver_for(self, frame: Frame) -> Resolver:
        lookup = RunLookup(
            frame,
            nodes=self.nodes,
            input=self.input,
            variables=self.variables,
            start_node=self.dag.start_node,
        )
        return self.engine.make_resolver(lookup, self.execution_id)

    # ------------------------------------------------------------------ scheduling
    def drain_work(self) -> None:
        """Begin every run in ``work`` (iteratively: replays and skips can cascade far)."""
        if self.draining:
            return
        self.draining = True
        try:
            work = self.work
            ready = self.ready
            while work and not self.finishing:
                run = work.popleft()
                if run.frame.closed or self.replay or run.node.type in _CONTAINER_TYPES:
                    self._begin_run(run)
                else:
                    ready.append(run)  # _begin_run's common case, inlined
        finally:
            self.draining = False
        self.pump()

    def _begin_run(self, run: NodeRun) -> None:
        if run.frame.closed:
            self._drop(run)
            return
        step = self.replay.pop(run.key, None) if self.replay else None
        if step is None and run.node.type not in _CONTAINER_TYPES:
            self.ready.append(run)
            return
        starts: list[NodeRun] = []
        if step is not None:
            self._apply_step(run, step, starts)
        elif run.node.is_container:
            self._start_container(run, starts)
        else:
            self.ready.append(run)
            return
        self.flush_starts(starts)

    def pump(self) -> None:
        """Make sure enough runners are alive for the ready runs (within the per-execution limit).

        Runners are tasks that take ready runs one after another, so a chain of nodes runs in
        one task with no task creation per node; a fan-out gets one runner per ready run."""
        if self.finishing or self.waiting_worker:
            return
        ready = len(self.ready)
        spare = self.runners - self.executing
        while ready > spare and self.runners < self.exec_limit:
            self.runners += 1
            spare += 1
            task = self.loop.create_task(self._runner())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        if not self.ready:  # check_idle returns at once while runs are ready
            self.check_idle()

    def _take_ready(self) -> NodeRun | None:
        """The next runnable ready run, holding a worker slot; None when there is none (or the
        worker budget is spent: the engine pumps this execution again when a slot frees)."""
        ready = self.ready
        engine = self.engine
        while ready and not self.finishing:
            if engine._worker_used < engine._worker_limit:
                engine._worker_used += 1  # take_worker_slot's fast path, inlined
            elif not engine.take_worker_slot(self):
                return None
            run = ready.popleft()
            if run.frame.closed or run.finished:
                engine.release_worker_slot()
                self._drop(run)
                continue
            return run
        return None

    def _drop(self, run: NodeRun) -> None:
        """A run whose frame was cancelled before it started. If its node:started is already in
        the log (a crashed worker's, or a parked approval's), end it there too."""
        if not run.finished and (_ident(run) in self.open_logged or run.resume is not None):
            run.finished = True
            self.open_logged.discard(_ident(run))
            self.node_event("node:cancelled", run, {})

    async def _runner(self) -> None:
        current = asyncio.current_task()
        assert current is not None
        engine = self.engine
        journal = self.journal
        try:
            while True:
                run = self._take_ready()
                if run is None:
                    return
                self.executing += 1
                try:
                    # One node run (inlined here: a coroutine level less on every resume).
                    self._begin_execute(run, current)
                    try:
                        outcome = await run_attempts(self, run)
                    except asyncio.CancelledError:
                        if not (run.finished and not self.finishing):
                            raise
                        # We cancelled this run (its frame failed): go on with other work.
                        current.uncancel()
                        outcome = None
                    finally:
                        run.task = None
                    if outcome is not None:
                        self._end_execute(run, outcome, current)
                finally:
                    self.executing -= 1
                    engine.release_worker_slot()
                    if self.resolve_deadline and not self.executing:
                        self._set_outcome()
                if self.work:  # free starts (next parallel branches): ready now
                    self.drain_work()
                if self.lead_wanted:
                    # Write what this run recorded here, without a writer task (group commit: if
                    # a write is already in flight, it takes our records in its next batch).
                    self.lead_wanted = False
                    await journal.lead()
        finally:
            self.runners -= 1
            if not self.finishing:
                self.pump()

    def check_idle(self) -> None:
        """Nothing runs, nothing is ready, nothing waits on a commit: pause or complete."""
        if (
            self.finishing
            or self.executing
            or self.ready
            or self.inflight
            or self.work
            or self.draining
            or self.top.closed
            or self.starting
            or self.retry_timers
        ):
            return
        if self.parked:
            self._pause()
        else:
            self._internal_error(RuntimeError("scheduler stalled: nothing ready, nothing running"))

    # ------------------------------------------------------------------ running one node
    def _begin_execute(self, run: NodeRun, task: asyncio.Task[None]) -> None:
        """A node run starts in ``task``: open in its frame, ``node:started`` (unless logged)."""
        node = run.node
        run.frame.open[node.id] = run
        run.task = task
        if run.resume is None:
            run.started_at = now = time.time()
            if self.open_logged and _ident(run) in self.open_logged:
                self.open_logged.discard(_ident(run))
            else:
                self.journal.event(
                    EventDraft(
                        "node:started", now, node.id, run.frame.scope, {"nodeType": node.type}
                    )
                )

    def _end_execute(
        self, run: NodeRun, outcome: NodeResult | NodeFailure, task: asyncio.Task[None]
    ) -> None:
        """Apply the outcome of a node run's attempts (a result, a park or a failure)."""
        if self.finishing or run.finished:
            if run.finished and task.cancelling():
                task.uncancel()  # the handler swallowed our cancellation; the runner goes on
            return
        self.in_runner = True
        try:
            starts: list[NodeRun] = []
            if run.resume is not None and run.resume.resume_id:
                self.journal.control(ControlUpdate(applied_resume_ids=[run.resume.resume_id]))
            if isinstance(outcome, NodeFailure):
                self.fail_node(run, outcome.to_error(run.node.id), starts)
            else:
                self._node_result(run, outcome, starts)
            self.flush_starts(starts)
        except Exception as exc:
            self._internal_error(exc)
        finally:
            self.in_runner = False

    def chunk(self, run: NodeRun, content: str) -> None:
        if self.finishing or run.finished:
            return
        run.chunks += 1
        self.event("stream:chunk", run=run, payload={"content": content})

    def _node_result(self, run: NodeRun, result: NodeResult, starts: list[NodeRun]) -> None:
        node = run.node
        if result.pause is not None:
            self._park(run, result)
            return
        control: ControlUpdate | None = None
        if result.variables:
            self.variables.update(result.variables)
            control = ControlUpdate(variables=dict(self.variables))
        if result.token_usage:
            delta = {
                "inputTokens": int(result.token_usage.get("inputTokens") or 0),
                "outputTokens": int(result.token_usage.get("outputTokens") or 0),
            }
            if result.token_usage.get("estimated"):
                delta["estimated"] = True
            usage = self.token_usage or {"inputTokens": 0, "outputTokens": 0}
            usage["inputTokens"] += delta["inputTokens"]
            usage["outputTokens"] += delta["outputTokens"]
            self.token_usage = usage
            control = control or ControlUpdate()
            # What this step adds: the store sums them (a replayed run starts from zero here).
            control.token_usage = delta
        if control is not None:
            self.journal.control(control)
        if run.chunks:
            self.event("stream:done", run=run, payload={})
        output = result.output
        now = time.time()
        scope = run.frame.scope
        if result.event_fields:
            payload = {**result.event_fields, "output": output, "attempt": run.attempt}
            payload["nodeType"] = node.type
        else:
            payload = {"output": output, "attempt": run.attempt, "nodeType": node.type}
        journal = self.journal
        journal.event(EventDraft("node:completed", now, node.id, scope, payload))
        # () is meaningful: nothing fires (a condition with no true branch and no else).
        handles = result.handles
        if handles is None:
            handles = _OUT
        elif handles.__class__ is not tuple:
            handles = tuple(handles)
        # Positional arguments on this hot path (keywords cost twice as much here):
        # StepRecord(key, node_id, scope, status, output, error, fired_handles) and
        # NodeLogRecord(node_id, node_type, scope, status, attempt, started_at, finished_at,
        # input, output, error, token_usage).
        journal.step(
            StepRecord(run.key, node.id, scope, _SUCCEEDED, output, None, handles),
            NodeLogRecord(
                node.id,
                node.type,
                scope,
                _SUCCEEDED,
                run.attempt,
                run.started_at,
                now,
                result.input,
                output,
                None,
                result.token_usage,
            ),
        )
        self.uncommitted = True
        self.complete_node(run, output, handles, starts)

    def _park(self, run: NodeRun, result: NodeResult) -> None:
        pause = result.pause
        assert pause is not None
        node = run.node
        info = PausedNodeInfo(
            node_id=node.id,
            scope=run.frame.scope,
            reason=pause.reason,
            input_schema=pause.input_schema,
            wake_at=pause.wake_at,
        )
        run.parked = info
        run.frame.open[node.id] = run
        self.record(
            StepRecord(
                key=run.key,
                node_id=node.id,
                scope=run.frame.scope,
                status=NodeStatus.PAUSED,
                data={
                    "reason": pause.reason,
                    "inputSchema": pause.input_schema,
                    "wakeAt": pause.wake_at,
                    "attempt": run.attempt,
                    "startedAt": run.started_at,
                },
            ),
            NodeLogRecord(
                node_id=node.id,
                node_type=node.type,
                scope=run.frame.scope,
                status=NodeStatus.PAUSED,
                attempt=run.attempt,
                started_at=run.started_at,
                input=result.input,
            ),
        )
        self._park_or_resume(run)

    def _park_or_resume(self, run: NodeRun) -> None:
        ident = _ident(run)
        queue = self.pending_resumes.get(ident)
        if queue:
            resume = queue.popleft()
            if not queue:
                del self.pending_resumes[ident]
            self._resume_parked(run, resume)
        else:
            wake_at = run.parked.wake_at if run.parked is not None else None
            if wake_at is not None:
                delay = wake_at - time.time()
                if delay * 1000.0 <= self.settings.durable_wait_threshold_ms:
                    # Due, or so close that a wait would not park for it (a replay claimed at
                    # wake_at, a little early by another service's clock): wake it now. A timer
                    # would lose to the pause that ends this run when nothing else is ready,
                    # and the execution would park again on a wake_at already due.
                    from .engine import Resume

                    self._resume_parked(run, Resume("", run.node.id, run.frame.scope))
                    return
                # A durable wait that comes due while the execution is still running (another
                # branch busy) wakes here; once the execution pauses, the state service hands it
                # back to a worker at wake_at and the replay wakes it (above).
                self.wake_timers[run.key] = self.loop.call_later(delay, self._wake, run)
            self.parked[ident] = run

    def _wake(self, run: NodeRun) -> None:
        self.wake_timers.pop(run.key, None)
        if not self.finishing and self.parked.get(_ident(run)) is run:
            from .engine import Resume

            self.resume(Resume("", run.node.id, run.frame.scope))

    def _resume_parked(self, run: NodeRun, resume: Resume) -> None:
        timer = self.wake_timers.pop(run.key, None)
        if timer is not None:
            timer.cancel()
        run.resume = resume
        run.parked = None
        run.frame.open.pop(run.node.id, None)
        # The execution runs again: the row says so (GET shows RUNNING, and a worker dying from
        # here on leaves a RUNNING execution whose lease expires, so another worker takes it).
        self.journal.control(ControlUpdate(status="RUNNING"))
        self.event(
            "execution:resumed",
            payload={"nodeId": run.node.id, "scope": scope_json(run.frame.scope)},
        )
        self.ready.append(run)

    # ------------------------------------------------------------------ settling
    def complete_node(
        self, run: NodeRun, output: Any, handles: Sequence[str], starts: list[NodeRun]
    ) -> None:
        """``run`` finished with ``output``: fire ``handles``, settle successors, free memory."""
        run.finished = True
        node = run.node
        frame = run.frame
        frame.open.pop(node.id, None)
        plan = self.plan
        nid = node.id
        if nid in plan.retained:
            frame.outputs[nid] = output
            name = plan.output_names.get(nid)
            if name is not None:
                if frame is self.top:
                    self.outputs[name] = output
                else:  # one value per run, ordered by scope at the end (_final_outputs)
                    runs = self.nested_outputs.get(name)
                    if runs is None:
                        runs = self.nested_outputs[name] = {}
                    runs[frame.scope] = output
            elif frame is self.top and nid in plan.leaf_outputs:
                self.outputs[nid] = output
        if node.outgoing:
            self._propagate(frame, node, handles, starts)
        else:  # nothing to settle downstream (a branch body's single node, a leaf)
            self._settled(frame, nid, starts)

    def fail_node(self, run: NodeRun, error: dict[str, Any], starts: list[NodeRun]) -> None:
        """``run`` failed after its retries: route down its error edges, or fail its frame."""
        node = run.node
        routed = node.id in self.plan.has_error_edge
        self.event("node:error", run=run, payload={"error": error, "attempt": run.attempt})
        now = time.time()
        self.record(
            StepRecord(
                key=run.key,
                node_id=node.id,
                scope=run.frame.scope,
                status=NodeStatus.FAILED,
                error=error,
                fired_handles=_ERROR if routed else (),
            ),
            NodeLogRecord(
                node_id=node.id,
                node_type=node.type,
                scope=run.frame.scope,
                status=NodeStatus.FAILED,
                attempt=run.attempt,
                started_at=run.started_at or now,
                finished_at=now,
                error=error,
            ),
        )
        self.settle_failure(run, error, routed, starts)

    def settle_failure(
        self, run: NodeRun, error: dict[str, Any], routed: bool, starts: list[NodeRun]
    ) -> None:
        run.finished = True
        run.frame.open.pop(run.node.id, None)
        if routed:
            self.complete_node(run, {"error": error}, _ERROR, starts)
        else:
            self.fail_frame(run.frame, error, starts)

    def _propagate(
        self, frame: Frame, node: CompiledNode, handles: Sequence[str], starts: list[NodeRun]
    ) -> None:
        """Settle ``node``'s outgoing edges in ``frame`` and everything that cascades from it."""
        nodes = self.nodes
        edges = self.plan.edges
        edge_handles = self.plan.edge_handles
        counts = frame.counts
        if counts is None:
            counts = frame.counts = {}
        stack: list[tuple[CompiledNode, Sequence[str]]] = [(node, handles)]
        while stack:
            src, fired = stack.pop()
            for e in src.outgoing:
                target = nodes[edges[e].target]
                c = counts.get(target.id)
                if c is None:
                    c = counts[target.id] = [0, 0]
                c[0] += 1
                if edge_handles[e] in fired:
                    c[1] += 1
                if c[0] == len(target.incoming):
                    del counts[target.id]
                    if c[1]:
                        starts.append(NodeRun(target, frame, target.id + frame.key_suffix))
                    else:
                        self._skip(frame, target)
                        stack.append((target, ()))
            self._settled(frame, src.id, starts)
            if frame.closed:
                return

    def _skip(self, frame: Frame, node: CompiledNode) -> None:
        key = node.id + frame.key_suffix
        if self.replay and self.replay.pop(key, None) is not None:
            return  # already in the log
        self.event("node:skipped", node=node, scope=frame.scope, payload={})
        now = time.time()
        scope = frame.scope
        # Positional, as in _node_result (StepRecord(key, node_id, scope, status),
        # NodeLogRecord(node_id, node_type, scope, status, attempt, started_at, finished_at)).
        self.record(
            StepRecord(key, node.id, scope, _SKIPPED),
            NodeLogRecord(node.id, node.type, scope, _SKIPPED, 0, now, now),
        )

    def _settled(self, frame: Frame, nid: str, starts: list[NodeRun]) -> None:
        plan = self.plan
        released = plan.releases.get(nid)
        if released:
            outputs = frame.outputs
            left = frame.readers_left
            if left is None:
                left = frame.readers_left = {}
            for x in released:
                if x in outputs and x not in plan.keep and not plan.retain_all:
                    n = left.get(x, plan.reader_count[x]) - 1
                    if n <= 0:
                        del outputs[x]
                        left.pop(x, None)
                    else:
                        left[x] = n
        frame.pending -= 1
        if frame.pending == 0 and not frame.closed:
            frame.closed = True  # frame_done, inlined
            if frame.owner is None:
                self._complete_execution()
            else:
                frame.owner.frame_done(frame, starts)

    # ------------------------------------------------------------------ containers
    def _start_container(self, run: NodeRun, starts: list[NodeRun]) -> None:
        frame = run.frame
        frame.open[run.node.id] = run
        run.started_at = time.time()
        run.attempt = 1
        decided = False
        if self.replay:
            decided = f"{run.key}#start" in self.replay
            # A retried container: the replay goes straight to its latest attempt.
            retried = self.replay.pop(f"{run.key}#attempt", None)
            if retried is not None and retried.data:
                run.attempt = int(retried.data["attempt"])
                decided = True
        ident = _ident(run)
        if ident in self.open_logged or decided:
            self.open_logged.discard(ident)
        else:
            self.event("node:started", run=run, payload={})
        self._container_attempt(run, starts)

    def _container_attempt(self, run: NodeRun, starts: list[NodeRun]) -> None:
        """Start attempt ``run.attempt`` of a container: a fresh run of its body."""
        from .containers import make_container

        container = make_container(self, run)
        run.container = container
        timeout_ms = run.node.timeout_ms
        if timeout_ms:
            container.timed = True
            self.container_timers[run.key] = self.loop.call_later(
                timeout_ms / 1000, self._container_timeout, container
            )
        try:
            container.start(starts)
        except NodeFailure as exc:
            container.close()
            self.container_failed(run, exc.to_error(run.node.id), exc.retryable, starts)

    def stop_container_timer(self, container: ContainerRun) -> None:
        container.timed = False
        timer = self.container_timers.pop(container.run.key, None)
        if timer is not None:
            timer.cancel()

    def _container_timeout(self, container: ContainerRun) -> None:
        """A container's attempt ran past its timeoutMs: cancel its body, fail the attempt."""
        run = container.run
        self.container_timers.pop(run.key, None)
        container.timed = False
        if self.finishing or container.closed or run.finished:
            return
        try:
            node = run.node
            error = NodeFailure(
                f"node {node.id}: attempt {run.attempt} timed out after {node.timeout_ms} ms",
                "TIMEOUT",
            ).to_error(node.id)
            starts: list[NodeRun] = []
            container.fail(error, starts)
            self.flush_starts(starts)
        except Exception as exc:
            self._internal_error(exc)

    def container_failed(
        self, run: NodeRun, error: dict[str, Any], retryable: bool, starts: list[NodeRun]
    ) -> None:
        """A container attempt failed (its body is cancelled already): another attempt after the
        backoff while ``retry`` allows, else the container fails (routable by its error edge).

        A retry discards what the failed attempt produced: its results, its frames and the runs
        of output nodes inside it (``nested_outputs``); variables it set and calls it made stay.
        The next attempt is recorded (``"<key>#attempt"``) with the ``node:retrying`` event, so a
        replay goes straight to it."""
        node = run.node
        policy = node.retry
        if not retryable or run.attempt >= policy.max_attempts or self.finishing:
            self.fail_node(run, error, starts)
            return
        run.container = None
        delay_ms = policy.delay_ms(run.attempt)
        self.event(
            "node:retrying",
            run=run,
            payload={"attempt": run.attempt, "error": error, "delayMs": delay_ms},
        )
        self.record(
            StepRecord(
                key=f"{run.key}#attempt",
                node_id=node.id,
                scope=run.frame.scope,
                status=NodeStatus.RUNNING,
                data={"attempt": run.attempt + 1},
            )
        )
        if self.nested_outputs:
            self._discard_nested_outputs(run)
        self.retry_timers[run.key] = self.loop.call_later(
            delay_ms / 1000, self._retry_container, run
        )

    def _retry_container(self, run: NodeRun) -> None:
        self.retry_timers.pop(run.key, None)
        if self.finishing or run.finished or run.frame.closed:
            return
        try:
            run.attempt += 1
            starts: list[NodeRun] = []
            self._container_attempt(run, starts)
            self.flush_starts(starts)
        except Exception as exc:
            self._internal_error(exc)

    def _discard_nested_outputs(self, run: NodeRun) -> None:
        """Forget the output-node runs inside the container run ``run`` (a retried attempt)."""
        base = run.frame.scope
        depth = len(base)
        cid = run.node.id
        for runs in self.nested_outputs.values():
            stale = [
                s
                for s in runs
                if len(s) > depth and s[depth].container == cid and s[:depth] == base
            ]
            for s in stale:
                del runs[s]

    def decision(
        self, run: NodeRun, name: str, make: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """A container decision: the recorded one on a replay, else ``make()`` recorded now."""
        key = f"{run.key}#{name}"
        step = self.replay.pop(key, None) if self.replay else None
        if step is not None and step.data is not None:
            return step.data
        data = make()
        self.record(
            StepRecord(
                key=key,
                node_id=run.node.id,
                scope=run.frame.scope,
                status=NodeStatus.RUNNING,
                data=data,
            )
        )
        return data

    def container_completed(self, run: NodeRun, results: list[Any], starts: list[NodeRun]) -> None:
        node = run.node
        output = {"results": results}
        try:
            check_output_size(node.id, output, self.max_output)
        except NodeFailure as exc:
            self.fail_node(run, exc.to_error(node.id), starts)
            return
        self.event("node:completed", run=run, payload={"output": output, "attempt": run.attempt})
        now = time.time()
        self.record(
            StepRecord(
                key=run.key,
                node_id=node.id,
                scope=run.frame.scope,
                status=NodeStatus.SUCCEEDED,
                output=output,
                fired_handles=_OUT,
            ),
            NodeLogRecord(
                node_id=node.id,
                node_type=node.type,
                scope=run.frame.scope,
                status=NodeStatus.SUCCEEDED,
                attempt=run.attempt,
                started_at=run.started_at,
                finished_at=now,
                output=output,
            ),
        )
        self.complete_node(run, output, _OUT, starts)

    # ------------------------------------------------------------------ replay
    def _apply_step(self, run: NodeRun, step: StepRecord, starts: list[NodeRun]) -> None:
        """A committed step: take its result without running the node or emitting events."""
        status = NodeStatus(step.status)  # tolerate plain strings from other callers
        if status is NodeStatus.SUCCEEDED:
            self.complete_node(run, step.output, step.fired_handles, starts)
        elif status is NodeStatus.FAILED:
            routed = bool(step.fired_handles)
            self.settle_failure(run, step.error or {}, routed, starts)
        elif status is NodeStatus.SKIPPED:
            # A skip is re-derived by _propagate; a stray one means the graph changed under us.
            self.complete_node(run, None, (), starts)
        elif status is NodeStatus.PAUSED:
            data = step.data or {}
            run.attempt = int(data.get("attempt") or 1)
            run.started_at = float(data.get("startedAt") or 0.0)
            run.parked = PausedNodeInfo(
                node_id=run.node.id,
                scope=run.frame.scope,
                reason=data.get("reason") or "",
                input_schema=data.get("inputSchema"),
                wake_at=data.get("wakeAt"),
            )
            run.frame.open[run.node.id] = run
            self._park_or_resume(run)
        else:  # RUNNING/CANCELLED: not a result; run it again
            if run.node.is_container:
                self._start_container(run, starts)
            else:
                self.ready.append(run)

    # ------------------------------------------------------------------ the end
    def _complete_execution(self) -> None:
        if self.finishing:
            return
        self.finishing = True
        self.status = "SUCCEEDED"
        if self.nested_outputs:
            self._final_outputs()
        self.event("execution:completed", payload={"outputs": self.outputs})
        self._finalize(
            ControlUpdate(
                status="SUCCEEDED",
                outputs=self.outputs,
                variables=dict(self.variables),
                release_lease=True,
            )
        )

    def _final_outputs(self) -> None:
        """An output node inside containers gives the list of its runs' values, ordered by scope
        (iteration/branch indices, outer first), not by finish order. Scopes where it did not
        run (skipped, a loop of no iterations) have no entry; no run at all, no output."""
        for name, runs in self.nested_outputs.items():
            if runs:
                self.outputs[name] = [runs[s] for s in sorted(runs)]

    def _fail_execution(self, error: dict[str, Any]) -> None:
        if self.finishing:
            return
        self.finishing = True
        self.cancel_frame(self.top)
        self._end_orphans()
        self.status = "FAILED"
        self.error = error
        self.event("execution:failed", payload={"error": error})
        self._finalize(
            ControlUpdate(
                status="FAILED", error=error, variables=dict(self.variables), release_lease=True
            )
        )

    def _pause(self) -> None:
        self.finishing = True
        self.status = "PAUSED"
        for timer in self.wake_timers.values():
            timer.cancel()
        self.wake_timers.clear()
        paused = [r.parked for r in self.parked.values() if r.parked is not None]
        self.event(
            "execution:paused",
            payload={
                "pausedNodes": [
                    {
                        "nodeId": p.node_id,
                        "scope": scope_json(p.scope),
                        "reason": p.reason,
                        "inputSchema": p.input_schema,
                    }
                    for p in paused
                ]
            },
        )
        wakes = [p.wake_at for p in paused if p.wake_at is not None]
        self._finalize(
            ControlUpdate(
                status="PAUSED",
                paused_nodes=paused,
                variables=dict(self.variables),
                wake_at=min(wakes) if wakes else None,
                release_lease=True,
            )
        )

    def _finalize(self, control: ControlUpdate) -> None:
        count_finished(control.status or "")
        for timer in self.wake_timers.values():
            timer.cancel()
        self.wake_timers.clear()
        for timers in (self.container_timers, self.retry_timers):
            for timer in timers.values():
                timer.cancel()
            timers.clear()
        if self.pending_resumes:
            # Resumes for nodes this run never parked (stale or duplicate): report them consumed
            # so the queue cannot replay them forever; the log says why.
            for queue in self.pending_resumes.values():
                for r in queue:
                    log.warning(
                        "execution %s: resume %s for %s matched no parked node",
                        self.execution_id,
                        r.resume_id,
                        r.node_id,
                    )
                    if r.resume_id:
                        control.applied_resume_ids.append(r.resume_id)
            self.pending_resumes.clear()
        self.journal.control(control)
        # Runs still open were cancelled by whoever ended the execution; idle runners exit on
        # their own (a runner may be writing a batch right now: never cancel it).
        # The final commit resolves the outcome once durable (see _on_durable).
        if self.in_runner:
            self.lead_wanted = True
            self.journal.commit([_FINAL], spawn=False)
        else:
            self.journal.commit([_FINAL])

    def _resolve_outcome(self) -> None:
        """Resolve ``done`` once no handler is still unwinding from a cancellation (bounded)."""
        if self.executing and not self.resolve_deadline:
            self.resolve_deadline = True
            self.loop.call_later(5.0, self._set_outcome)
            return
        if not self.executing:
            self._set_outcome()

    def _set_outcome(self) -> None:
        from .engine import Outcome

        if self.done.done():
            return
        outcome = Outcome(
            status=self.status,
            outputs=self.outputs if self.status == "SUCCEEDED" else {},
            error=self.error,
            paused_nodes=[r.parked for r in self.parked.values() if r.parked is not None],
            variables=dict(self.variables),
            token_usage=dict(self.token_usage) if self.token_usage else None,
        )
        self.done.set_result(outcome)
        for w in self.waiters:
            if not w.done():
                w.set_result(outcome)
        self.waiters.clear()

"""Child executions for ``subworkflow`` nodes: start one, watch it, cancel it.

The node handler (``handlers/subworkflow.py``) reaches this through ``ctx.services.subworkflows``.
Everything durable lives in the state service: the child is an execution of its own (its own
event log, ``parent_execution_id``/``parent_node_id``/``depth`` set), created under an
idempotency key derived from the parent's node run, so a node that runs again after a crash
finds the child it started instead of starting a second one. A child created here is claimed by
this worker at once when it has room (as ``StartExecution`` does); otherwise any worker's claim
loop picks it up. The child is created with the node attempt's ``traceparent``
(``CreateExecutionRequest.trace_context``), so its first run is part of the parent's trace
wherever it runs.

Waking a parked parent when its child ends, and cancelling children with their parent, are done
by the state service inside the transaction that ends an execution (``weft_state.children``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from weft.state.v1 import state_pb2
from weft.workflow.v1 import workflow_pb2
from weft_common import jsonutil
from weft_common.errors import DeadlineExceeded, Unavailable, WeftError

from .settings import ExecutorSettings
from .tracing import creation_trace_context

if TYPE_CHECKING:
    from .clients import StateClient
    from .worker import Worker

__all__ = ["TERMINAL", "ChildExecutions", "ChildOutcome", "child_key"]

T = TypeVar("T")
log = logging.getLogger("weft.executor.subworkflows")

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
_STOP_EVENTS = frozenset(
    {"execution:completed", "execution:failed", "execution:cancelled", "execution:paused"}
)
_LINEAGE_CACHE = 4096
_MAX_KEY = 200  # the state service stores idempotency keys of up to 255 characters
# Worth another try: the state service restarting or briefly unreachable (plain WeftError is
# INTERNAL/UNKNOWN on the way). Every call retried here is idempotent.
_TRANSIENT = (Unavailable, DeadlineExceeded)


def child_key(idempotency_key: str, attempt: int) -> str:
    """The idempotency key of the child a node run's ``attempt`` starts (same after a crash).
    Readable when short; a node deep in nested containers has a long run key, hashed to fit
    the state service's key column."""
    key = f"subworkflow:{idempotency_key}:{attempt}"
    if len(key) <= _MAX_KEY:
        return key
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return f"subworkflow:{digest}:{attempt}"


def _status_name(value: int) -> str:
    return str(workflow_pb2.ExecutionStatus.Name(value)).removeprefix("EXECUTION_STATUS_")


@dataclass(frozen=True, slots=True)
class ChildOutcome:
    """Where a child execution stands (SUCCEEDED/FAILED/CANCELLED, or PAUSED/RUNNING/PENDING)."""

    execution_id: str
    workflow_id: str
    status: str
    parent_execution_id: str = ""
    outputs: Any = None
    error: dict[str, Any] | None = None
    # [{nodeId, reason, wakeAt?}] of the child's parked nodes (wakeAt: a durable wait).
    paused_nodes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL


def outcome_from_proto(execution: workflow_pb2.Execution) -> ChildOutcome:
    error: dict[str, Any] | None = None
    if execution.HasField("error") and (execution.error.code or execution.error.message):
        e = execution.error
        error = {"message": e.message, "code": e.code, "nodeId": e.node_id}
        if e.status:
            error["status"] = e.status
        if e.details_json:
            error["details"] = jsonutil.loads(e.details_json)
    return ChildOutcome(
        execution_id=execution.execution_id,
        workflow_id=execution.workflow_id,
        status=_status_name(execution.status),
        parent_execution_id=execution.parent_execution_id,
        outputs=jsonutil.loads(execution.outputs_json) if execution.outputs_json else {},
        error=error,
        paused_nodes=[_paused_json(p) for p in execution.paused_nodes],
    )


def _paused_json(p: workflow_pb2.PausedNode) -> dict[str, Any]:
    out: dict[str, Any] = {"nodeId": p.node_id, "reason": p.reason}
    if p.HasField("wake_at"):
        out["wakeAt"] = p.wake_at.ToDatetime().isoformat(timespec="milliseconds") + "Z"
    return out


class ChildExecutions:
    """Starts, watches and cancels child executions through the state service."""

    def __init__(
        self, settings: ExecutorSettings, state: StateClient, worker: Worker | None = None
    ) -> None:
        self.settings = settings
        self.state = state
        self.worker = worker
        # execution id -> (depth, owner); children started here are known without a lookup.
        self._lineage: OrderedDict[str, tuple[int, str]] = OrderedDict()

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, again after a transient failure, for up to one lease period (the parent's
        own commits give up after that too)."""
        deadline = time.monotonic() + self.settings.lease_ms / 1000
        delay = 0.1
        while True:
            try:
                return await call()
            except WeftError as exc:
                transient = isinstance(exc, _TRANSIENT) or type(exc) is WeftError
                if not transient or time.monotonic() + delay > deadline:
                    raise
                log.info("state service call failed (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _get(self, execution_id: str) -> workflow_pb2.Execution:
        return await self._retrying(lambda: self.state.get_execution(execution_id))

    # -- lineage --------------------------------------------------------------------------------

    def _remember(self, execution_id: str, depth: int, owner: str) -> None:
        self._lineage[execution_id] = (depth, owner)
        self._lineage.move_to_end(execution_id)
        while len(self._lineage) > _LINEAGE_CACHE:
            self._lineage.popitem(last=False)

    async def lineage(self, execution_id: str) -> tuple[int, str]:
        """``(depth, owner)`` of an execution: depth 0 at top level, one more per parent."""
        known = self._lineage.get(execution_id)
        if known is not None:
            return known
        # Walk up to the first ancestor whose depth is known (or the top): O(depth) lookups once.
        chain: list[tuple[str, str]] = []
        current = execution_id
        top_depth = self.settings.max_subworkflow_depth + 1  # a runaway chain: over the limit
        for _ in range(self.settings.max_subworkflow_depth + 2):
            execution = await self._get(current)
            chain.append((current, execution.owner))
            parent = execution.parent_execution_id
            if not parent:
                top_depth = 0
                break
            cached = self._lineage.get(parent)
            if cached is not None:
                top_depth = cached[0] + 1
                break
            current = parent
        last = len(chain) - 1
        for i, (eid, owner) in enumerate(chain):
            self._remember(eid, top_depth + last - i, owner)
        return top_depth + last, chain[0][1]

    # -- starting -------------------------------------------------------------------------------

    async def start(
        self,
        *,
        parent_execution_id: str,
        parent_node_id: str,
        idempotency_key: str,
        workflow_id: str,
        version: int,
        input: Any,
        depth: int,
        owner: str,
    ) -> str:
        """The child's execution id (an existing one for a key already used). Raises
        ``NotFound`` when the workflow (version) is not registered."""
        request = state_pb2.CreateExecutionRequest(
            workflow_id=workflow_id,
            workflow_version=version,
            input_json=jsonutil.dumps(input),
            idempotency_key=idempotency_key,
            owner=owner,
            parent_execution_id=parent_execution_id,
            parent_node_id=parent_node_id,
            depth=depth,
            lease_ms=self.settings.lease_ms,
            # The node attempt's span (current here): the child's first run continues the
            # parent's trace on whichever executor claims it ("" with tracing off).
            trace_context=creation_trace_context(),
        )
        worker = self.worker
        reserved = worker is not None and worker.try_reserve()
        if reserved:
            assert worker is not None
            request.claim_worker_id = worker.worker_id
            request.load = True  # what LoadExecution would say, in the same round trip
        try:
            response = await self._retrying(lambda: self.state.create_execution(request))
        except BaseException:
            if reserved:
                assert worker is not None
                worker.unreserve()
            raise
        if reserved:
            assert worker is not None
            if response.HasField("lease") and response.lease.token:
                loaded = response.loaded if response.HasField("loaded") else None
                worker.run_leased(response.lease, reserved=True, loaded=loaded)
            else:
                worker.unreserve()
        self._remember(response.execution_id, depth, owner)
        return str(response.execution_id)

    # -- watching -------------------------------------------------------------------------------

    async def outcome(self, execution_id: str) -> ChildOutcome:
        return outcome_from_proto(await self._get(execution_id))

    async def wait(self, execution_id: str, *, within_s: float) -> ChildOutcome:
        """Follow the child until it ends or pauses, for at most ``within_s``; then where it
        stands (still RUNNING when the time ran out)."""
        execution = await self._get(execution_id)
        outcome = outcome_from_proto(execution)
        if outcome.ended or outcome.status == "PAUSED":
            return outcome
        try:
            async with asyncio.timeout(within_s):
                async for event in self.state.follow_events(
                    execution_id=execution_id, after_seq=execution.last_seq
                ):
                    if event.type in _STOP_EVENTS:
                        break
        except TimeoutError:
            pass
        return await self.outcome(execution_id)

    # -- cancelling -----------------------------------------------------------------------------

    def abandoning(self, parent_execution_id: str) -> bool:
        """The parent is being given up on this worker (lease lost, shutting down): its child
        must be left alone for the worker that takes the parent over."""
        worker = self.worker
        return worker is not None and worker.abandoning(parent_execution_id)

    async def cancel(self, execution_id: str, reason: str) -> None:
        """Cancel a child (best effort: the state service also cancels children of a parent
        that ends)."""
        try:
            await self._retrying(
                lambda: self.state.request_cancel(execution_id=execution_id, reason=reason)
            )
        except WeftError as exc:
            log.info("cancelling child execution %s failed: %s", execution_id, exc)
            return
        if self.worker is not None:
            self.worker.cancel_local(execution_id)

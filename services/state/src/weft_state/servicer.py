"""``weft.state.v1.StateService``: protobuf ↔ domain conversion, nothing else.

Domain errors (``weft_common.errors``) become gRPC statuses in the server's interceptor.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import grpc
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from weft.state.v1 import state_pb2, state_pb2_grpc
from weft.workflow.v1 import workflow_pb2
from weft_common import jsonutil
from weft_common.errors import InvalidArgument, Unavailable, WeftError
from weft_common.telemetry_grpc import MessageCall

from . import commits, executions, leases, resumes, stream, workflows
from .database import is_transient_error
from .domain import (
    CommitRequest,
    CommitResult,
    ControlChange,
    CreateExecution,
    EventIn,
    ExecutionRecord,
    ExecutionStatus,
    LeaseGrant,
    LeaseRef,
    LoadedExecution,
    NodeLogRow,
    PausedNode,
    Scope,
    StepRow,
    StoredEvent,
    WorkflowVersionRecord,
)
from .store import StateStore

__all__ = ["StateServicer"]

log = logging.getLogger("weft.state.servicer")

Ctx: TypeAlias = grpc.aio.ServicerContext


# --- scalars --------------------------------------------------------------------------------


def _ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _dt(ts: Timestamp) -> datetime:
    # = ts.ToDatetime(tzinfo=UTC) (microseconds, truncated), several times faster.
    return _EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def _scope(entries: Sequence[workflow_pb2.ScopeEntry]) -> Scope:
    if not entries:
        return ()  # top level: most records
    return tuple([(e.container, e.index) for e in entries])


def _scope_pb(scope: Scope) -> list[workflow_pb2.ScopeEntry]:
    return [workflow_pb2.ScopeEntry(container=c, index=i) for c, i in scope]


def _error(msg: workflow_pb2.ExecutionError) -> dict[str, Any]:
    out: dict[str, Any] = {"message": msg.message, "code": msg.code}
    if msg.node_id:
        out["nodeId"] = msg.node_id
    if msg.status:
        out["status"] = msg.status
    if msg.details_json:
        out["details"] = jsonutil.loads(msg.details_json)
    return out


def _error_pb(err: dict[str, Any] | None) -> workflow_pb2.ExecutionError | None:
    if not err:
        return None
    details = err.get("details")
    return workflow_pb2.ExecutionError(
        message=str(err.get("message", "")),
        code=str(err.get("code", "")),
        node_id=str(err.get("nodeId", "")),
        status=int(err.get("status") or 0),
        details_json=jsonutil.dumps(details) if details is not None else "",
    )


_NODE_STATUS = {v: k.removeprefix("NODE_STATUS_") for k, v in workflow_pb2.NodeStatus.items()}
_NODE_STATUS_PB = {name: v for v, name in _NODE_STATUS.items()}
_EXEC_STATUS: dict[int, ExecutionStatus | None] = {
    v: (None if v == 0 else ExecutionStatus(k.removeprefix("EXECUTION_STATUS_")))
    for k, v in workflow_pb2.ExecutionStatus.items()
}
_EXEC_STATUS_PB = {status: v for v, status in _EXEC_STATUS.items() if status is not None}


def _node_status(value: int) -> str:
    return _NODE_STATUS[value]


def _node_status_pb(name: str) -> int:
    return _NODE_STATUS_PB[name]


def _exec_status(value: int) -> ExecutionStatus | None:
    return _EXEC_STATUS[value]


def _exec_status_pb(status: ExecutionStatus) -> int:
    return _EXEC_STATUS_PB[status]


def _lease_ref(msg: state_pb2.Lease) -> LeaseRef:
    if not msg.execution_id:
        raise InvalidArgument("lease.execution_id is required")
    return LeaseRef(execution_id=msg.execution_id, token=msg.token, worker_id=msg.worker_id)


def _lease_pb(lease: LeaseGrant) -> state_pb2.Lease:
    return state_pb2.Lease(
        execution_id=lease.execution_id,
        worker_id=lease.worker_id,
        token=lease.token,
        expires_at=_ts(lease.expires_at),
    )


# --- records --------------------------------------------------------------------------------


def _definition(msg: workflow_pb2.WorkflowDefinition) -> dict[str, Any]:
    return json_format.MessageToDict(msg)


def _definition_pb(data: dict[str, Any]) -> workflow_pb2.WorkflowDefinition:
    return json_format.ParseDict(
        data, workflow_pb2.WorkflowDefinition(), ignore_unknown_fields=True
    )


def _dag_pb(data: bytes) -> workflow_pb2.CompiledDag:
    dag = workflow_pb2.CompiledDag()
    dag.ParseFromString(data)
    return dag


def _workflow_pb(rec: WorkflowVersionRecord) -> state_pb2.WorkflowVersion:
    return state_pb2.WorkflowVersion(
        workflow_id=rec.workflow_id,
        version=rec.version,
        definition=_definition_pb(rec.definition),
        dag=_dag_pb(rec.dag),
        created_at=_ts(rec.created_at),
        owner=rec.owner,
    )


def _paused_pb(node: PausedNode) -> workflow_pb2.PausedNode:
    return workflow_pb2.PausedNode(
        node_id=node.node_id,
        scope=_scope_pb(node.scope),
        reason=node.reason,
        input_schema_json=node.input_schema_json,
        wake_at=_ts(node.wake_at),
    )


def _execution_pb(rec: ExecutionRecord) -> workflow_pb2.Execution:
    return workflow_pb2.Execution(
        execution_id=rec.execution_id,
        workflow_id=rec.workflow_id,
        workflow_version=rec.workflow_version,
        status=_exec_status_pb(rec.status),  # type: ignore[arg-type]
        input_json=rec.input_json,
        outputs_json=rec.outputs_json,
        error=_error_pb(rec.error),
        paused_nodes=[_paused_pb(p) for p in rec.paused_nodes],
        created_at=_ts(rec.created_at),
        started_at=_ts(rec.started_at),
        finished_at=_ts(rec.finished_at),
        parent_execution_id=rec.parent_execution_id,
        owner=rec.owner,
        token_usage=workflow_pb2.TokenUsage(
            input_tokens=rec.input_tokens,
            output_tokens=rec.output_tokens,
            estimated=rec.tokens_estimated,
        ),
        last_seq=rec.last_seq,
    )


def _node_log_pb(log: NodeLogRow) -> workflow_pb2.NodeLog:
    usage = log.token_usage
    return workflow_pb2.NodeLog(
        node_id=log.node_id,
        scope=_scope_pb(log.scope),
        status=_node_status_pb(log.status),  # type: ignore[arg-type]
        attempt=log.attempt,
        input_json=log.input_json,
        output_json=log.output_json,
        error=_error_pb(log.error),
        started_at=_ts(log.started_at),
        finished_at=_ts(log.finished_at),
        duration_us=log.duration_us,
        token_usage=workflow_pb2.TokenUsage(
            input_tokens=int(usage.get("inputTokens", 0)),
            output_tokens=int(usage.get("outputTokens", 0)),
            estimated=bool(usage.get("estimated", False)),
        )
        if usage
        else None,
        node_type=log.node_type,
    )


def _node_log(msg: workflow_pb2.NodeLog) -> NodeLogRow:
    usage = None
    if msg.HasField("token_usage"):
        usage = {
            "inputTokens": msg.token_usage.input_tokens,
            "outputTokens": msg.token_usage.output_tokens,
            "estimated": msg.token_usage.estimated,
        }
    return NodeLogRow(
        node_id=msg.node_id,
        scope=_scope(msg.scope),
        status=_node_status(msg.status),
        attempt=msg.attempt,
        node_type=msg.node_type,
        input_json=msg.input_json,
        output_json=msg.output_json,
        error=_error(msg.error) if msg.HasField("error") else None,
        started_at=_dt(msg.started_at) if msg.HasField("started_at") else None,
        finished_at=_dt(msg.finished_at) if msg.HasField("finished_at") else None,
        duration_us=msg.duration_us,
        token_usage=usage,
    )


def _step(msg: state_pb2.StepRecord) -> StepRow:
    return StepRow(
        key=msg.key or msg.node_id,
        node_id=msg.node_id,
        scope=_scope(msg.scope),
        status=_node_status(msg.status),
        output_json=msg.output_json,
        error=_error(msg.error) if msg.HasField("error") else None,
        fired_handles=tuple(msg.fired_handles),
        data_json=msg.data_json,
    )


def _step_pb(step: StepRow) -> state_pb2.StepRecord:
    return state_pb2.StepRecord(
        key=step.key,
        node_id=step.node_id,
        scope=_scope_pb(step.scope),
        status=_node_status_pb(step.status),  # type: ignore[arg-type]
        output_json=step.output_json,
        error=_error_pb(step.error),
        fired_handles=list(step.fired_handles),
        data_json=step.data_json,
        step_seq=step.step_seq,
    )


def _event_in(msg: state_pb2.EventDraft) -> EventIn:
    if not msg.type:
        raise InvalidArgument("event draft without a type")
    return EventIn(
        type=msg.type,
        node_id=msg.node_id,
        scope=_scope(msg.scope),
        timestamp=_dt(msg.timestamp) if msg.HasField("timestamp") else None,
        payload_json=msg.payload_json,
    )


def _event_pb(event: StoredEvent) -> workflow_pb2.Event:
    body = jsonutil.loads(event.payload_json)
    ts = Timestamp()
    ts.FromJsonString(body["timestamp"])
    return workflow_pb2.Event(
        seq=event.seq,
        type=event.type,
        execution_id=event.execution_id,
        timestamp=ts,
        node_id=event.node_id,
        scope=[
            workflow_pb2.ScopeEntry(container=s["container"], index=s["index"])
            for s in body.get("scope") or ()
        ],
        payload_json=event.payload_json,
    )


def _control(msg: state_pb2.ControlState) -> ControlChange:
    return ControlChange(
        status=_exec_status(msg.status),
        variables_json=msg.variables_json,
        outputs_json=msg.outputs_json,
        error=_error(msg.error) if msg.HasField("error") else None,
        paused_nodes=tuple(
            PausedNode(
                node_id=p.node_id,
                scope=_scope(p.scope),
                reason=p.reason,
                input_schema_json=p.input_schema_json,
                wake_at=_dt(p.wake_at) if p.HasField("wake_at") else None,
            )
            for p in msg.paused_nodes
        ),
        applied_resume_ids=tuple(msg.applied_resume_ids),
        input_tokens=msg.token_usage.input_tokens,
        output_tokens=msg.token_usage.output_tokens,
        tokens_estimated=msg.token_usage.estimated,
        wake_at=_dt(msg.wake_at) if msg.HasField("wake_at") else None,
        release_lease=msg.release_lease,
    )


def _loaded_pb(loaded: LoadedExecution) -> state_pb2.LoadExecutionResponse:
    return state_pb2.LoadExecutionResponse(
        execution=_execution_pb(loaded.execution),
        dag=_dag_pb(loaded.dag),
        steps=[_step_pb(s) for s in loaded.steps],
        variables_json=loaded.variables_json,
        resumes=[
            state_pb2.ResumeRequest(
                resume_id=r.resume_id,
                node_id=r.node_id,
                scope=_scope_pb(r.scope),
                input_json=r.input_json,
                enqueued_at=_ts(r.enqueued_at),
            )
            for r in loaded.resumes
        ],
        version=loaded.version,
        cancel_requested=loaded.cancel_requested,
        depth=loaded.depth,
        trace_context=loaded.trace_context,
    )


def _commit_request(msg: state_pb2.CommitStepRequest) -> CommitRequest:
    return CommitRequest(
        lease=_lease_ref(msg.lease),
        expected_version=msg.expected_version,
        steps=tuple(_step(s) for s in msg.steps),
        node_logs=tuple(_node_log(n) for n in msg.node_logs),
        events=tuple(_event_in(e) for e in msg.events),
        control=_control(msg.control),
    )


_COMMIT_STREAM = "/weft.state.v1.StateService/CommitStream"


def _outcome_error(exc: WeftError) -> state_pb2.CommitStepOutcome:
    return state_pb2.CommitStepOutcome(
        code=exc.status.value[0],
        message=exc.message,
        details_json=jsonutil.dumps(exc.details) if exc.details else "",
    )


def _commit_error(exc: Exception) -> WeftError:
    """What a failed commit answers: its domain error; UNAVAILABLE when the database went away
    (ambiguous: it may have committed; the writer's retry finds out); else a logged failure."""
    if isinstance(exc, WeftError):
        return exc
    if is_transient_error(exc):
        return Unavailable(f"database unavailable: {exc}")
    log.exception("commit failed")
    return WeftError(f"commit failed: {exc}")


async def _commit_outcomes(
    store: StateStore, items: Sequence[state_pb2.CommitStepRequest]
) -> list[state_pb2.CommitStepOutcome]:
    """``CommitSteps`` (and one message of ``CommitStream``): one outcome per item."""
    if len(items) == 1:
        # One commit (the chain's case): the one-statement CommitStep path, answered as an item.
        try:
            result: CommitResult | WeftError = await commits.commit_step(
                store, _commit_request(items[0])
            )
        except Exception as exc:
            result = _commit_error(exc)
        return [_outcome(result)]
    outcomes: list[state_pb2.CommitStepOutcome | None] = []
    reqs: list[CommitRequest] = []
    for item in items:
        try:
            reqs.append(_commit_request(item))
            outcomes.append(None)
        except WeftError as exc:  # a malformed item fails alone
            outcomes.append(_outcome_error(exc))
    results = iter(await commits.commit_steps(store, reqs))
    return [o if o is not None else _outcome(next(results)) for o in outcomes]


def _outcome(result: CommitResult | WeftError) -> state_pb2.CommitStepOutcome:
    if isinstance(result, WeftError):
        return _outcome_error(result)
    return state_pb2.CommitStepOutcome(
        response=state_pb2.CommitStepResponse(version=result.version, last_seq=result.last_seq)
    )


# --- the service ----------------------------------------------------------------------------


def _unavailable_when_db_is_down(cls: type) -> type:
    """Wrap every RPC: a lost database connection becomes UNAVAILABLE (retryable), not INTERNAL."""
    for name, fn in list(vars(cls).items()):
        if name.startswith("_") or not hasattr(state_pb2_grpc.StateServiceServicer, name):
            continue  # not an RPC
        if inspect.isasyncgenfunction(fn):

            def wrap_stream(fn: Any = fn) -> Any:
                @functools.wraps(fn)
                async def method(self: Any, request: Any, context: Any) -> AsyncIterator[Any]:
                    try:
                        async for item in fn(self, request, context):
                            yield item
                    except Exception as exc:
                        if is_transient_error(exc):
                            raise Unavailable(f"database unavailable: {exc}") from exc
                        raise

                return method

            setattr(cls, name, wrap_stream())
        elif inspect.iscoroutinefunction(fn):

            def wrap_unary(fn: Any = fn) -> Any:
                @functools.wraps(fn)
                async def method(self: Any, request: Any, context: Any) -> Any:
                    try:
                        return await fn(self, request, context)
                    except Exception as exc:
                        if is_transient_error(exc):
                            raise Unavailable(f"database unavailable: {exc}") from exc
                        raise

                return method

            setattr(cls, name, wrap_unary())
    return cls


@_unavailable_when_db_is_down
class StateServicer(state_pb2_grpc.StateServiceServicer):
    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._closing = False
        self._idle_streams: set[Ctx] = set()

    async def RegisterWorkflow(
        self, request: state_pb2.RegisterWorkflowRequest, context: Ctx
    ) -> state_pb2.RegisterWorkflowResponse:
        workflow_id, version = await workflows.register_workflow(
            self.store,
            _definition(request.definition),
            request.dag.SerializeToString(deterministic=True),
            owner=request.owner,
        )
        return state_pb2.RegisterWorkflowResponse(workflow_id=workflow_id, version=version)

    async def GetWorkflow(
        self, request: state_pb2.GetWorkflowRequest, context: Ctx
    ) -> state_pb2.GetWorkflowResponse:
        rec = await workflows.get_workflow(
            self.store, request.workflow_id, request.version, owner=request.owner
        )
        return state_pb2.GetWorkflowResponse(workflow=_workflow_pb(rec))

    async def ListWorkflows(
        self, request: state_pb2.ListWorkflowsRequest, context: Ctx
    ) -> state_pb2.ListWorkflowsResponse:
        recs = await workflows.list_workflows(self.store, owner=request.owner)
        return state_pb2.ListWorkflowsResponse(workflows=[_workflow_pb(r) for r in recs])

    async def CreateExecution(
        self, request: state_pb2.CreateExecutionRequest, context: Ctx
    ) -> state_pb2.CreateExecutionResponse:
        inline = request.HasField("definition") and bool(
            request.definition.id or request.definition.nodes
        )
        created = await executions.create_execution(
            self.store,
            CreateExecution(
                input_json=request.input_json,
                workflow_id=request.workflow_id,
                workflow_version=request.workflow_version,
                definition=_definition(request.definition) if inline else None,
                dag=request.dag.SerializeToString(deterministic=True) if inline else b"",
                idempotency_key=request.idempotency_key,
                owner=request.owner,
                parent_execution_id=request.parent_execution_id,
                parent_node_id=request.parent_node_id,
                depth=request.depth,
                claim_worker_id=request.claim_worker_id,
                lease_ms=request.lease_ms,
                trace_context=request.trace_context,
            ),
        )
        loaded = None
        if request.load and created.lease is not None:
            # The worker that asked would call LoadExecution next: answer it now.
            lease = created.lease
            loaded = _loaded_pb(
                created.loaded
                or await leases.load_execution(
                    self.store, LeaseRef(lease.execution_id, lease.token, lease.worker_id)
                )
            )
        return state_pb2.CreateExecutionResponse(
            execution_id=created.execution_id,
            existing=created.existing,
            lease=_lease_pb(created.lease) if created.lease else None,
            loaded=loaded,
        )

    async def GetExecution(
        self, request: state_pb2.GetExecutionRequest, context: Ctx
    ) -> state_pb2.GetExecutionResponse:
        rec = await executions.get_execution(self.store, request.execution_id, owner=request.owner)
        return state_pb2.GetExecutionResponse(execution=_execution_pb(rec))

    async def ListExecutions(
        self, request: state_pb2.ListExecutionsRequest, context: Ctx
    ) -> state_pb2.ListExecutionsResponse:
        recs = await executions.list_executions(
            self.store, owner=request.owner, workflow_id=request.workflow_id, limit=request.limit
        )
        return state_pb2.ListExecutionsResponse(executions=[_execution_pb(r) for r in recs])

    async def ListNodeLogs(
        self, request: state_pb2.ListNodeLogsRequest, context: Ctx
    ) -> state_pb2.ListNodeLogsResponse:
        logs = await executions.list_node_logs(
            self.store, request.execution_id, owner=request.owner
        )
        return state_pb2.ListNodeLogsResponse(nodes=[_node_log_pb(n) for n in logs])

    async def ClaimExecutions(
        self, request: state_pb2.ClaimExecutionsRequest, context: Ctx
    ) -> state_pb2.ClaimExecutionsResponse:
        grants = await leases.claim_executions(
            self.store,
            request.worker_id,
            limit=request.max,
            lease_ms=request.lease_ms,
            wait_ms=request.wait_ms,
        )
        return state_pb2.ClaimExecutionsResponse(leases=[_lease_pb(g) for g in grants])

    async def RenewLeases(
        self, request: state_pb2.RenewLeasesRequest, context: Ctx
    ) -> state_pb2.RenewLeasesResponse:
        result = await leases.renew_leases(
            self.store,
            request.worker_id,
            [_lease_ref(lease) for lease in request.leases],
            request.lease_ms,
        )
        return state_pb2.RenewLeasesResponse(
            lost_execution_ids=result.lost,
            cancel_execution_ids=result.cancel,
            resumed_execution_ids=result.resumed,
        )

    async def ReleaseLease(
        self, request: state_pb2.ReleaseLeaseRequest, context: Ctx
    ) -> state_pb2.ReleaseLeaseResponse:
        await leases.release_lease(self.store, _lease_ref(request.lease))
        return state_pb2.ReleaseLeaseResponse()

    async def LoadExecution(
        self, request: state_pb2.LoadExecutionRequest, context: Ctx
    ) -> state_pb2.LoadExecutionResponse:
        loaded = await leases.load_execution(self.store, _lease_ref(request.lease))
        return _loaded_pb(loaded)

    async def CommitStep(
        self, request: state_pb2.CommitStepRequest, context: Ctx
    ) -> state_pb2.CommitStepResponse:
        result = await commits.commit_step(self.store, _commit_request(request))
        return state_pb2.CommitStepResponse(version=result.version, last_seq=result.last_seq)

    async def CommitSteps(
        self, request: state_pb2.CommitStepsRequest, context: Ctx
    ) -> state_pb2.CommitStepsResponse:
        return state_pb2.CommitStepsResponse(
            outcomes=await _commit_outcomes(self.store, request.commits)
        )

    async def CommitStream(
        self, request_iterator: AsyncIterator[state_pb2.CommitStreamRequest], context: Ctx
    ) -> None:
        """Each message as ``CommitSteps``, answered in order, one at a time (read the next one
        only after answering this one). Nothing ends the stream but the client, a broken
        connection or ``close_streams``: every failure, the database's included, is an item's
        outcome (UNAVAILABLE when the database went away: ambiguous, as a failed call is)."""
        self._idle_streams.add(context)  # waiting for a message: close_streams may end it
        try:
            while not self._closing:
                request = await context.read()
                if request is grpc.aio.EOF:
                    return
                self._idle_streams.discard(context)
                # A call of its own to telemetry: the trace context the message carries.
                with MessageCall(_COMMIT_STREAM, request.traceparent, request.tracestate) as call:
                    try:
                        outcomes = await _commit_outcomes(self.store, request.commits)
                    except Exception as exc:  # the whole message failed (as CommitSteps')
                        error = _commit_error(exc)
                        outcomes = [_outcome_error(error)] * len(request.commits)
                        call.code, call.error = error.status, error.message
                await context.write(state_pb2.CommitStreamResponse(outcomes=outcomes))
                self._idle_streams.add(context)
        finally:
            self._idle_streams.discard(context)

    async def close_streams(self) -> None:
        """Before the server stops: end the commit streams (an idle one at once, UNAVAILABLE,
        a busy one after answering its message), so the shutdown grace is not spent on them."""
        self._closing = True
        for context in list(self._idle_streams):
            with contextlib.suppress(Exception):  # AbortError: it ended as asked
                await context.abort(grpc.StatusCode.UNAVAILABLE, "state service stopping")

    async def StreamEvents(
        self, request: state_pb2.StreamEventsRequest, context: Ctx
    ) -> AsyncIterator[state_pb2.StreamEventsResponse]:
        async for event in stream.stream_events(
            self.store,
            request.execution_id,
            after_seq=request.after_seq,
            owner=request.owner,
            follow_after_terminal=request.follow_after_terminal,
        ):
            yield state_pb2.StreamEventsResponse(event=_event_pb(event))

    async def PublishLiveEvents(
        self, request: state_pb2.PublishLiveEventsRequest, context: Ctx
    ) -> state_pb2.PublishLiveEventsResponse:
        stream.publish_live(
            self.store,
            request.lease.execution_id,
            [(e.seq, _event_in(e.event)) for e in request.events],
        )
        return state_pb2.PublishLiveEventsResponse()

    async def EnqueueResume(
        self, request: state_pb2.EnqueueResumeRequest, context: Ctx
    ) -> state_pb2.EnqueueResumeResponse:
        resume_id = await resumes.enqueue_resume(
            self.store,
            request.execution_id,
            request.node_id,
            scope=_scope(request.scope),
            input_json=request.input_json,
            owner=request.owner,
        )
        return state_pb2.EnqueueResumeResponse(resume_id=resume_id)

    async def RequestCancel(
        self, request: state_pb2.RequestCancelRequest, context: Ctx
    ) -> state_pb2.RequestCancelResponse:
        status = await executions.request_cancel(
            self.store, request.execution_id, reason=request.reason, owner=request.owner
        )
        return state_pb2.RequestCancelResponse(status=_exec_status_pb(status))  # type: ignore[arg-type]

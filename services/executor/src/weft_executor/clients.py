"""gRPC clients of the services the executor calls: the state service and the dag-builder.

The one place that opens channels (with ``channel_options``) and turns failed RPCs into the
domain errors of ``weft_common.errors`` (``from_rpc_error``), so callers catch ``Conflict``,
``InvalidArgument``, ``Unavailable``... and never ``grpc.RpcError``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import grpc

from weft.dagbuilder.v1 import dag_builder_pb2, dag_builder_pb2_grpc
from weft.state.v1 import state_pb2, state_pb2_grpc
from weft.workflow.v1 import workflow_pb2
from weft_common.errors import (
    DeadlineExceeded,
    InvalidArgument,
    Unavailable,
    WeftError,
    from_rpc_error,
)
from weft_common.settings import CommonSettings
from weft_common.telemetry_grpc import instrumented_channel

__all__ = ["DagBuilderClient", "ServiceClients", "StateClient", "call"]

T = TypeVar("T")

log = logging.getLogger("weft.executor.clients")

# A stream broken by these is worth resubscribing (plain WeftError: INTERNAL/UNKNOWN on the way).
_TRANSIENT_STREAM_ERRORS = frozenset({Unavailable, DeadlineExceeded, WeftError})


async def call(awaitable: Awaitable[T]) -> T:
    """Await one RPC; a failure becomes the matching ``WeftError``."""
    try:
        return await awaitable
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from None


class StateClient:
    """The state service's RPCs the executor uses, with domain errors."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = state_pb2_grpc.StateServiceStub(channel)  # type: ignore[no-untyped-call]

    async def create_execution(
        self, request: state_pb2.CreateExecutionRequest
    ) -> state_pb2.CreateExecutionResponse:
        return await call(self.stub.CreateExecution(request))

    async def claim(
        self, *, worker_id: str, max_count: int, lease_ms: int, wait_ms: int
    ) -> list[state_pb2.Lease]:
        request = state_pb2.ClaimExecutionsRequest(
            worker_id=worker_id, max=max_count, lease_ms=lease_ms, wait_ms=wait_ms
        )
        # The long poll may legitimately take wait_ms; allow generous slack beyond it.
        response = await call(self.stub.ClaimExecutions(request, timeout=wait_ms / 1000 + 30))
        return list(response.leases)

    async def renew(
        self, *, worker_id: str, leases: list[state_pb2.Lease], lease_ms: int
    ) -> state_pb2.RenewLeasesResponse:
        request = state_pb2.RenewLeasesRequest(worker_id=worker_id, leases=leases, lease_ms=lease_ms)
        return await call(self.stub.RenewLeases(request, timeout=max(lease_ms / 1000, 5.0)))

    async def release(self, lease: state_pb2.Lease) -> None:
        await call(self.stub.ReleaseLease(state_pb2.ReleaseLeaseRequest(lease=lease), timeout=10))

    async def load(self, lease: state_pb2.Lease) -> state_pb2.LoadExecutionResponse:
        return await call(self.stub.LoadExecution(state_pb2.LoadExecutionRequest(lease=lease), timeout=30))

    async def get_execution(self, execution_id: str, owner: str = "") -> workflow_pb2.Execution:
        request = state_pb2.GetExecutionRequest(execution_id=execution_id, owner=owner)
        response = await call(self.stub.GetExecution(request, timeout=10))
        execution: workflow_pb2.Execution = response.execution
        return execution

    async def enqueue_resume(self, request: state_pb2.EnqueueResumeRequest) -> str:
        response = await call(self.stub.EnqueueResume(request, timeout=10))
        return str(response.resume_id)

    async def request_cancel(
        self, *, execution_id: str, reason: str, owner: str = ""
    ) -> int:
        request = state_pb2.RequestCancelRequest(execution_id=execution_id, reason=reason, owner=owner)
        response = await call(self.stub.RequestCancel(request, timeout=10))
        return int(response.status)

    async def stream_events(
        self, *, execution_id: str, after_seq: int, owner: str = ""
    ) -> AsyncIterator[workflow_pb2.Event]:
        request = state_pb2.StreamEventsRequest(
            execution_id=execution_id, after_seq=after_seq, owner=owner
        )
        stream = self.stub.StreamEvents(request)
        try:
            async for item in stream:
                yield item.event
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            stream.cancel()

    async def follow_events(
        self, *, execution_id: str, after_seq: int, owner: str = "", retry_budget_s: float = 60.0
    ) -> AsyncIterator[workflow_pb2.Event]:
        """``stream_events`` that survives the state service (or its database) going away for a
        while: it subscribes again after the last event it passed on, so nothing is lost or
        repeated. Gives up after ``retry_budget_s`` without progress."""
        last = after_seq
        delay = 0.1
        give_up_at = time.monotonic() + retry_budget_s
        while True:
            try:
                async for event in self.stream_events(
                    execution_id=execution_id, after_seq=last, owner=owner
                ):
                    if event.seq <= last:
                        continue
                    last = event.seq
                    give_up_at = time.monotonic() + retry_budget_s
                    delay = 0.1
                    yield event
                return
            except WeftError as exc:
                if type(exc) not in _TRANSIENT_STREAM_ERRORS or time.monotonic() > give_up_at:
                    raise
                log.info(
                    "event stream of %s broke after seq %d (%s); resubscribing",
                    execution_id, last, exc,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)


class DagBuilderClient:
    """Compiles inline definitions through the dag-builder service."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = dag_builder_pb2_grpc.DagBuilderServiceStub(channel)  # type: ignore[no-untyped-call]

    async def compile(self, workflow: workflow_pb2.WorkflowDefinition) -> workflow_pb2.CompiledDag:
        """The compiled DAG; an invalid workflow raises ``InvalidArgument`` whose details hold
        ``diagnostics: [{code, message, nodeId?, edgeId?, field?}]`` (the gateway's 422 body)."""
        request = dag_builder_pb2.CompileWorkflowRequest(workflow=workflow)
        try:
            response = await self.stub.CompileWorkflow(request, timeout=30)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        if not response.valid:
            diagnostics = [_diagnostic_json(d) for d in response.diagnostics]
            first = diagnostics[0]["message"] if diagnostics else "invalid workflow"
            raise InvalidArgument(
                f"invalid workflow: {first}", details={"diagnostics": diagnostics}
            )
        dag: workflow_pb2.CompiledDag = response.dag
        return dag


def _diagnostic_json(d: workflow_pb2.Diagnostic) -> dict[str, str]:
    out = {"code": d.code, "message": d.message}
    if d.node_id:
        out["nodeId"] = d.node_id
    if d.edge_id:
        out["edgeId"] = d.edge_id
    if d.field:
        out["field"] = d.field
    return out


class ServiceClients:
    """Channels to the state service and the dag-builder, opened once per process."""

    def __init__(self, settings: CommonSettings) -> None:
        # Trace context (traceparent) rides along every call when telemetry is on.
        self._state_channel = instrumented_channel(settings.state_addr, settings)
        self._dag_channel = instrumented_channel(settings.dag_builder_addr, settings)
        self.state = StateClient(self._state_channel)
        self.dag_builder = DagBuilderClient(self._dag_channel)

    async def close(self) -> None:
        await self._state_channel.close()
        await self._dag_channel.close()

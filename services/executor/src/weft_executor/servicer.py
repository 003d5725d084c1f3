"""``weft.executor.v1.ExecutorService``: start, resume, cancel and stream executions.

Proto in, proto out; the durable facts live in the state service and the running executions in
the ``Worker``. Errors are ``WeftError``s (the server's interceptor maps them to status codes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from weft.executor.v1 import executor_pb2, executor_pb2_grpc
from weft.state.v1 import state_pb2
from weft_common.errors import InvalidArgument

from .clients import ServiceClients
from .convert import resume_from_proto
from .tracing import creation_trace_context, remember_start_context
from .worker import Worker

__all__ = ["ExecutorServicer"]


class ExecutorServicer(executor_pb2_grpc.ExecutorServiceServicer):
    def __init__(self, clients: ServiceClients, worker: Worker) -> None:
        self.clients = clients
        self.worker = worker

    async def StartExecution(
        self, request: executor_pb2.StartExecutionRequest, context: grpc.aio.ServicerContext
    ) -> executor_pb2.StartExecutionResponse:
        create = state_pb2.CreateExecutionRequest(
            input_json=request.input_json,
            idempotency_key=request.idempotency_key,
            owner=request.owner,
            parent_execution_id=request.parent_execution_id,
            parent_node_id=request.parent_node_id,
            depth=request.depth,
            lease_ms=self.worker.settings.lease_ms,
            trace_context=creation_trace_context(),  # the first run continues this trace
        )
        if request.HasField("workflow") and request.workflow.nodes:
            dag = await self.clients.dag_builder.compile(request.workflow)
            create.definition.CopyFrom(request.workflow)
            create.dag.CopyFrom(dag)
        elif request.workflow_id:
            create.workflow_id = request.workflow_id
            create.workflow_version = request.workflow_version
        else:
            raise InvalidArgument("give either workflow_id or an inline workflow definition")
        # Run the new execution here at once rather than waiting for some worker's next poll.
        reserved = self.worker.try_reserve()
        if reserved:
            create.claim_worker_id = self.worker.worker_id
            create.load = True  # what LoadExecution would say, in the same round trip
        try:
            response = await self.clients.state.create_execution(create)
        except BaseException:
            if reserved:
                self.worker.unreserve()
            raise
        if not response.existing:
            remember_start_context(response.execution_id)  # its first run joins this trace
        if reserved:
            if response.HasField("lease") and response.lease.token:
                loaded = response.loaded if response.HasField("loaded") else None
                self.worker.run_leased(response.lease, reserved=True, loaded=loaded)
            else:
                self.worker.unreserve()
        return executor_pb2.StartExecutionResponse(
            execution_id=response.execution_id, existing=response.existing
        )

    async def ResumeExecution(
        self, request: executor_pb2.ResumeExecutionRequest, context: grpc.aio.ServicerContext
    ) -> executor_pb2.ResumeExecutionResponse:
        resume_id = await self.clients.state.enqueue_resume(
            state_pb2.EnqueueResumeRequest(
                execution_id=request.execution_id,
                node_id=request.node_id,
                scope=request.scope,
                input_json=request.input_json,
            )
        )
        # Running here (e.g. other branches still busy): apply it now. Otherwise the queued
        # resume made the execution claimable: claim it now instead of at the next poll.
        resume = resume_from_proto(
            state_pb2.ResumeRequest(
                resume_id=resume_id,
                node_id=request.node_id,
                scope=request.scope,
                input_json=request.input_json,
            )
        )
        if not self.worker.deliver_resume(request.execution_id, resume):
            self.worker.wake()
        return executor_pb2.ResumeExecutionResponse()

    async def CancelExecution(
        self, request: executor_pb2.CancelExecutionRequest, context: grpc.aio.ServicerContext
    ) -> executor_pb2.CancelExecutionResponse:
        await self.clients.state.request_cancel(
            execution_id=request.execution_id, reason=request.reason
        )
        self.worker.cancel_local(request.execution_id)
        return executor_pb2.CancelExecutionResponse()

    async def StreamExecutionEvents(
        self,
        request: executor_pb2.StreamExecutionEventsRequest,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[executor_pb2.StreamExecutionEventsResponse]:
        async for event in self.clients.state.follow_events(
            execution_id=request.execution_id, after_seq=request.after_seq
        ):
            yield executor_pb2.StreamExecutionEventsResponse(event=event)

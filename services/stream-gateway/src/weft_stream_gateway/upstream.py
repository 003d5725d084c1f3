"""gRPC clients of the dag-builder, executor and state services, as the gateway uses them.

Every failed call is turned into the domain error it stands for (``from_rpc_error``), so routes
only ever see ``WeftError`` subclasses carrying their HTTP status.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from weft.dagbuilder.v1 import dag_builder_pb2, dag_builder_pb2_grpc
from weft.executor.v1 import executor_pb2, executor_pb2_grpc
from weft.state.v1 import state_pb2, state_pb2_grpc
from weft.workflow.v1 import workflow_pb2
from weft_common.errors import InvalidArgument, WeftError, from_rpc_error
from weft_common.telemetry_grpc import instrumented_channel

from .settings import GatewaySettings
from .views import diagnostic_view, diagnostics_from_details

__all__ = ["Upstreams"]

T = TypeVar("T")



def _invalid_workflow(err: WeftError) -> WeftError:
    """An INVALID_ARGUMENT with diagnostics keeps them; other errors pass through unchanged."""
    if isinstance(err, InvalidArgument) and "diagnostics" in err.details:
        err.details["diagnostics"] = diagnostics_from_details(err.details) or []
    return err


class Upstreams:
    """Channels and stubs to the three services (one channel each, shared by every request)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.timeout = settings.upstream_timeout_s
        # Trace context rides on every call when tracing is on (the channels get no interceptor
        # otherwise).
        self._channels = {
            "dagBuilder": instrumented_channel(settings.dag_builder_addr, settings),
            "executor": instrumented_channel(settings.executor_addr, settings),
            "state": instrumented_channel(settings.state_addr, settings),
        }
        self.dag_builder = dag_builder_pb2_grpc.DagBuilderServiceStub(self._channels["dagBuilder"])  # type: ignore[no-untyped-call]
        self.executor = executor_pb2_grpc.ExecutorServiceStub(self._channels["executor"])  # type: ignore[no-untyped-call]
        self.state = state_pb2_grpc.StateServiceStub(self._channels["state"])  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        await asyncio.gather(*(ch.close() for ch in self._channels.values()))

    async def _call(self, fn: Callable[..., Awaitable[T]], request: Any) -> T:
        try:
            return await fn(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise _invalid_workflow(from_rpc_error(exc)) from None

    # ------------------------------------------------------------------ dag-builder
    async def validate(self, definition: workflow_pb2.WorkflowDefinition) -> tuple[bool, list[dict[str, Any]]]:
        resp = await self._call(
            self.dag_builder.ValidateWorkflow,
            dag_builder_pb2.ValidateWorkflowRequest(workflow=definition),
        )
        return resp.valid, [diagnostic_view(d) for d in resp.diagnostics]

    async def compile(self, definition: workflow_pb2.WorkflowDefinition) -> workflow_pb2.CompiledDag:
        """The compiled DAG; an invalid workflow raises InvalidArgument with ``diagnostics``."""
        resp = await self._call(
            self.dag_builder.CompileWorkflow,
            dag_builder_pb2.CompileWorkflowRequest(workflow=definition),
        )
        if not resp.valid:
            diagnostics = [diagnostic_view(d) for d in resp.diagnostics]
            raise InvalidArgument(_summary(diagnostics), details={"diagnostics": diagnostics})
        dag: workflow_pb2.CompiledDag = resp.dag
        return dag

    # ------------------------------------------------------------------ state: workflows
    async def register_workflow(
        self, definition: workflow_pb2.WorkflowDefinition, dag: workflow_pb2.CompiledDag, owner: str
    ) -> tuple[str, int]:
        resp = await self._call(
            self.state.RegisterWorkflow,
            state_pb2.RegisterWorkflowRequest(definition=definition, dag=dag, owner=owner),
        )
        return resp.workflow_id, resp.version

    async def get_workflow(self, workflow_id: str, version: int, owner: str) -> state_pb2.WorkflowVersion:
        resp = await self._call(
            self.state.GetWorkflow,
            state_pb2.GetWorkflowRequest(workflow_id=workflow_id, version=version, owner=owner),
        )
        workflow: state_pb2.WorkflowVersion = resp.workflow
        return workflow

    async def list_workflows(self, owner: str) -> list[state_pb2.WorkflowVersion]:
        resp = await self._call(self.state.ListWorkflows, state_pb2.ListWorkflowsRequest(owner=owner))
        return list(resp.workflows)

    # ------------------------------------------------------------------ executions
    async def start_execution(
        self,
        *,
        owner: str,
        input_json: str,
        idempotency_key: str = "",
        workflow_id: str = "",
        version: int = 0,
        definition: workflow_pb2.WorkflowDefinition | None = None,
    ) -> executor_pb2.StartExecutionResponse:
        request = executor_pb2.StartExecutionRequest(
            workflow_id=workflow_id,
            workflow_version=version,
            input_json=input_json,
            idempotency_key=idempotency_key,
            owner=owner,
        )
        if definition is not None:
            request.workflow.CopyFrom(definition)
        return await self._call(self.executor.StartExecution, request)

    async def get_execution(self, execution_id: str, owner: str) -> workflow_pb2.Execution:
        resp = await self._call(
            self.state.GetExecution,
            state_pb2.GetExecutionRequest(execution_id=execution_id, owner=owner),
        )
        execution: workflow_pb2.Execution = resp.execution
        return execution

    async def list_executions(self, owner: str, workflow_id: str, limit: int) -> list[workflow_pb2.Execution]:
        resp = await self._call(
            self.state.ListExecutions,
            state_pb2.ListExecutionsRequest(owner=owner, workflow_id=workflow_id, limit=limit),
        )
        return list(resp.executions)

    async def list_node_logs(self, execution_id: str, owner: str) -> list[workflow_pb2.NodeLog]:
        resp = await self._call(
            self.state.ListNodeLogs,
            state_pb2.ListNodeLogsRequest(execution_id=execution_id, owner=owner),
        )
        return list(resp.nodes)

    async def resume(
        self, execution_id: str, node_id: str, scope: list[dict[str, Any]], input_json: str
    ) -> None:
        request = executor_pb2.ResumeExecutionRequest(
            execution_id=execution_id, node_id=node_id, input_json=input_json
        )
        for s in scope:
            request.scope.add(container=str(s["container"]), index=int(s["index"]))
        await self._call(self.executor.ResumeExecution, request)

    async def cancel(self, execution_id: str, reason: str) -> None:
        await self._call(
            self.executor.CancelExecution,
            executor_pb2.CancelExecutionRequest(execution_id=execution_id, reason=reason),
        )

    async def stream_events(
        self, execution_id: str, after_seq: int, owner: str
    ) -> AsyncGenerator[workflow_pb2.Event, None]:
        """The state service's replay + live tail; errors surface as WeftError."""
        call = self.state.StreamEvents(
            state_pb2.StreamEventsRequest(execution_id=execution_id, after_seq=after_seq, owner=owner)
        )
        try:
            async for msg in call:
                yield msg.event
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    # ------------------------------------------------------------------ health
    async def health(self, deadline_s: float = 2.0) -> dict[str, str]:
        """Each upstream's gRPC health status (``SERVING``, ``NOT_SERVING``, or the error)."""

        async def one(key: str) -> tuple[str, str]:
            stub = health_pb2_grpc.HealthStub(self._channels[key])
            try:
                # "": the server as a whole (GrpcServer marks it SERVING once started).
                resp = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=deadline_s)
            except grpc.aio.AioRpcError as exc:
                return key, exc.code().name
            return key, health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

        return dict(await asyncio.gather(*(one(k) for k in self._channels)))


def _summary(diagnostics: list[dict[str, Any]]) -> str:
    first = diagnostics[0]
    where = f" (node {first['nodeId']})" if first.get("nodeId") else ""
    more = f" and {len(diagnostics) - 1} more" if len(diagnostics) > 1 else ""
    return f"invalid workflow: {first.get('message', '')}{where}{more}"

"""The dag-builder gRPC server on a free port, called through the generated stubs: validate,
compile (valid and invalid), gRPC health and reflection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from weft.dagbuilder.v1 import dag_builder_pb2, dag_builder_pb2_grpc
from weft_common.compiled import HandleKind, dag_from_proto
from weft_common.workflow import definition_to_proto_from_json
from weft_dag_builder.server import SERVICE_NAME, DagBuilderService, serve
from weft_dag_builder.settings import DagBuilderSettings

WORKFLOW: dict[str, Any] = {
    "id": "triage",
    "nodes": [
        {"id": "start", "type": "start"},
        {"id": "check", "type": "condition",
         "config": {"branches": [{"id": "big", "when": "start.total > 100"}, {"id": "else"}]}},
        {"id": "each", "type": "loop", "config": {"kind": "forEach", "items": "{{start.lines}}"}},
        {"id": "price", "type": "transform", "parent": "each",
         "config": {"expression": "loop.item.qty * loop.item.unit"}},
        {"id": "done", "type": "output", "config": {"value": "{{each.results}}"}},
    ],
    "edges": [
        {"source": "start", "target": "check"},
        {"source": "check", "sourceHandle": "condition:big", "target": "each"},
        {"source": "each", "target": "done"},
    ],
}

CYCLIC: dict[str, Any] = {
    "id": "cycle",
    "nodes": [
        {"id": "start", "type": "start"},
        {"id": "a", "type": "transform", "config": {"expression": "1"}},
        {"id": "b", "type": "transform", "config": {"expression": "a + "}},
    ],
    "edges": [
        {"source": "start", "target": "a"},
        {"source": "a", "target": "b"},
        {"source": "b", "target": "a"},
    ],
}


@pytest.fixture(scope="module")
async def service() -> AsyncIterator[DagBuilderService]:
    running = await serve(DagBuilderSettings(port=0, host="127.0.0.1"))
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture()
async def channel(service: DagBuilderService) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as ch:
        yield ch


async def test_serve_binds_a_free_port(service: DagBuilderService) -> None:
    assert service.port > 0


async def test_compile_returns_the_compiled_dag(channel: grpc.aio.Channel) -> None:
    stub = dag_builder_pb2_grpc.DagBuilderServiceStub(channel)
    request = dag_builder_pb2.CompileWorkflowRequest(workflow=definition_to_proto_from_json(WORKFLOW))
    response = await stub.CompileWorkflow(request)
    assert response.valid
    assert list(response.diagnostics) == []
    dag = dag_from_proto(response.dag)
    assert list(dag.nodes) == ["start", "check", "each", "price", "done"]
    assert dag.nodes["each"].children == ("price",)
    assert dag.nodes["price"].parent == "each"
    assert dag.nodes["price"].depth == 1
    assert dag.edges[1].handle_kind is HandleKind.CONDITION
    assert dag.edges[1].handle_value == "big"
    assert dag.nodes["start"].readers == ("check", "each")
    assert dag.output_nodes == ("done",)
    again = await stub.CompileWorkflow(request)
    assert again.dag.SerializeToString(deterministic=True) == response.dag.SerializeToString(
        deterministic=True
    )


async def test_invalid_workflow_is_an_answer_with_diagnostics(channel: grpc.aio.Channel) -> None:
    stub = dag_builder_pb2_grpc.DagBuilderServiceStub(channel)
    workflow = definition_to_proto_from_json(CYCLIC)
    compiled = await stub.CompileWorkflow(dag_builder_pb2.CompileWorkflowRequest(workflow=workflow))
    assert not compiled.valid
    assert not compiled.HasField("dag")
    validated = await stub.ValidateWorkflow(dag_builder_pb2.ValidateWorkflowRequest(workflow=workflow))
    assert not validated.valid
    for response in (compiled, validated):
        found = {(d.code, d.node_id, d.field) for d in response.diagnostics}
        assert ("CYCLE", "a", "") in found
        assert ("CYCLE", "b", "") in found
        assert ("INVALID_EXPRESSION", "b", "config.expression") in found


async def test_validate_accepts_a_valid_workflow(channel: grpc.aio.Channel) -> None:
    stub = dag_builder_pb2_grpc.DagBuilderServiceStub(channel)
    response = await stub.ValidateWorkflow(
        dag_builder_pb2.ValidateWorkflowRequest(workflow=definition_to_proto_from_json(WORKFLOW))
    )
    assert response.valid
    assert list(response.diagnostics) == []


async def test_health_reports_serving(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE_NAME):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_service(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        yield reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME)

    replies = [r async for r in stub.ServerReflectionInfo(ask())]
    names = {s.name for s in replies[0].list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names
    assert replies[1].file_descriptor_response.file_descriptor_proto

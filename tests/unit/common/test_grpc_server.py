"""The shared gRPC bootstrap: health, reflection, and domain errors mapped to statuses."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from weft.dagbuilder.v1 import dag_builder_pb2, dag_builder_pb2_grpc
from weft_common.errors import FailedPrecondition, NotFound, from_rpc_error
from weft_common.grpc_server import GrpcServer
from weft_common.settings import CommonSettings

SERVICE = dag_builder_pb2.DESCRIPTOR.services_by_name["DagBuilderService"].full_name


class Failing(dag_builder_pb2_grpc.DagBuilderServiceServicer):
    async def ValidateWorkflow(self, request, context):  # type: ignore[no-untyped-def]
        raise NotFound(f"workflow {request.workflow.id!r} not found", details={"workflowId": request.workflow.id})

    async def CompileWorkflow(self, request, context):  # type: ignore[no-untyped-def]
        raise FailedPrecondition("not paused there")


@pytest.fixture
async def server():  # type: ignore[no-untyped-def]
    srv = GrpcServer(
        settings=CommonSettings(),
        service_names=[SERVICE],
        register=lambda s: dag_builder_pb2_grpc.add_DagBuilderServiceServicer_to_server(Failing(), s),
    )
    port = await srv.start("127.0.0.1:0")
    yield port
    await srv.stop(0)


async def test_domain_errors_become_status_codes_with_details(server: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server}") as ch:
        stub = dag_builder_pb2_grpc.DagBuilderServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ValidateWorkflow(dag_builder_pb2.ValidateWorkflowRequest(workflow={"id": "wf"}))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        err = from_rpc_error(info.value)
        assert isinstance(err, NotFound)
        assert err.details == {"workflowId": "wf"}
        assert "'wf' not found" in err.message
        with pytest.raises(grpc.aio.AioRpcError) as info2:
            await stub.CompileWorkflow(dag_builder_pb2.CompileWorkflowRequest())
        assert info2.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_health_and_reflection(server: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", SERVICE):
            resp = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        call = refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        async for resp in call:
            names = {s.name for s in resp.list_services_response.service}
            assert SERVICE in names
            assert "grpc.health.v1.Health" in names
            break


async def test_keepalive_pings_do_not_get_a_quiet_stream_dropped() -> None:
    """Clients ping idle connections (``grpc_keepalive_ms``); the server must accept that rate,
    or it answers GOAWAY "too_many_pings" and every call on the connection (a quiet event stream,
    say) dies with UNAVAILABLE."""
    import asyncio

    from weft_common.grpc_server import channel_options

    settings = CommonSettings(grpc_keepalive_ms=200)
    srv = GrpcServer(settings=settings, service_names=[SERVICE], register=lambda s: None)
    port = await srv.start("127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=channel_options(settings)) as ch:
            watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=SERVICE))
            first = await watch.read()
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            # ~15 pings with no data on the stream; gRPC's default server would strike out at 3.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(asyncio.shield(next_read := asyncio.ensure_future(watch.read())), 3.0)
            await srv.health.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
            changed = await asyncio.wait_for(next_read, 5.0)
            assert changed.status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()
    finally:
        await srv.stop(0)

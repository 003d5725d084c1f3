"""The dag-builder process: a grpc.aio server with DagBuilderService, health and reflection."""

from __future__ import annotations

from weft.dagbuilder.v1 import dag_builder_pb2, dag_builder_pb2_grpc
from weft_common.grpc_server import GrpcServer

from .servicer import DagBuilderServicer
from .settings import DagBuilderSettings

__all__ = ["SERVICE_NAME", "DagBuilderService", "serve"]

SERVICE_NAME = dag_builder_pb2.DESCRIPTOR.services_by_name["DagBuilderService"].full_name


class DagBuilderService:
    """A dag-builder gRPC server; ``port`` is the bound port once started."""

    def __init__(self, settings: DagBuilderSettings) -> None:
        self.settings = settings
        servicer = DagBuilderServicer(settings.limits())
        self.grpc = GrpcServer(
            settings=settings,
            service_names=[SERVICE_NAME],
            register=lambda server: dag_builder_pb2_grpc.add_DagBuilderServiceServicer_to_server(  # type: ignore[no-untyped-call]
                servicer, server
            ),
        )
        self.port = 0

    async def start(self) -> None:
        self.port = await self.grpc.start(f"{self.settings.host}:{self.settings.port}")

    async def stop(self) -> None:
        await self.grpc.stop()


async def serve(settings: DagBuilderSettings) -> DagBuilderService:
    """Start the dag-builder and return it running (port 0 picks a free port)."""
    service = DagBuilderService(settings)
    await service.start()
    return service

"""The executor process: the ``ExecutorService`` gRPC server and the worker loop, started together."""

from __future__ import annotations

import gc
import logging

from weft.executor.v1 import executor_pb2, executor_pb2_grpc
from weft_common.grpc_server import GrpcServer

from .clients import ServiceClients
from .engine import Engine, tune_gc
from .servicer import ExecutorServicer
from .settings import ExecutorSettings
from .subworkflows import ChildExecutions
from .worker import Worker

__all__ = ["ExecutorService", "serve"]

log = logging.getLogger("weft.executor")

SERVICE_NAME = executor_pb2.DESCRIPTOR.services_by_name["ExecutorService"].full_name


class ExecutorService:
    """A started executor: gRPC server bound on ``port`` and a worker claiming executions."""

    def __init__(self, settings: ExecutorSettings) -> None:
        self.settings = settings
        self.clients = ServiceClients(settings)
        self.engine = Engine(settings)
        self.worker = Worker(settings, self.clients.state, self.engine)
        self.engine.services.subworkflows = ChildExecutions(
            settings, self.clients.state, self.worker
        )
        servicer = ExecutorServicer(self.clients, self.worker)
        self.grpc = GrpcServer(
            settings=settings,
            service_names=[SERVICE_NAME],
            register=lambda server: executor_pb2_grpc.add_ExecutorServiceServicer_to_server(  # type: ignore[no-untyped-call]
                servicer, server
            ),
        )
        self.port = 0

    @property
    def worker_id(self) -> str:
        return self.worker.worker_id

    async def start(self) -> None:
        # The worker's garbage-collector settings (once per process; see engine.tune_gc).
        if tune_gc():
            log.info("executor: gc.freeze() after start-up, gc thresholds %s", gc.get_threshold())
        self.port = await self.grpc.start(f"{self.settings.host}:{self.settings.port}")
        self.worker.start()
        log.info("executor worker %s running", self.worker.worker_id)

    async def stop(self) -> None:
        await self.grpc.stop()
        await self.worker.stop()
        close = getattr(self.engine, "aclose", None)
        if close is not None:
            await close()
        await self.clients.close()


async def serve(settings: ExecutorSettings) -> ExecutorService:
    """Start the executor (gRPC server and worker) and return it running."""
    service = ExecutorService(settings)
    await service.start()
    return service

"""The state service process: database (migrated at startup), event bus, gRPC server."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from weft.state.v1 import state_pb2, state_pb2_grpc
from weft_common.grpc_server import GrpcServer

from .database import Database, open_database
from .events import EventBus, make_bus
from .servicer import StateServicer
from .settings import StateSettings
from .store import StateStore, StoreOptions

__all__ = ["RunningStateService", "build_store", "serve"]

log = logging.getLogger("weft.state")

SERVICE_NAME = state_pb2.DESCRIPTOR.services_by_name["StateService"].full_name


async def build_store(settings: StateSettings) -> StateStore:
    """Open the database (running migrations) and start the bus."""
    db = await open_database(
        settings.resolved_database_url(),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )
    bus = make_bus(settings.redis_url, buffer=settings.stream_buffer, prefix=settings.redis_prefix)
    await bus.start()
    options = StoreOptions(
        stream_poll_s=settings.stream_poll_ms / 1000,
        claim_poll_s=settings.claim_poll_ms / 1000,
        resume_wait_s=settings.resume_wait_ms / 1000,
    )
    return StateStore(db, bus, options)


@dataclass
class RunningStateService:
    port: int
    grpc: GrpcServer
    store: StateStore
    servicer: StateServicer | None = None

    @property
    def db(self) -> Database:
        return self.store.db

    @property
    def bus(self) -> EventBus:
        return self.store.bus

    async def stop(self) -> None:
        if self.servicer is not None:
            # Idle commit streams would hold the grace period: end them first.
            await self.servicer.close_streams()
        await self.grpc.stop()
        await self.store.bus.close()
        await self.store.db.close()


async def serve(settings: StateSettings) -> RunningStateService:
    """Started and bound (``settings.port`` 0 picks a free port)."""
    store = await build_store(settings)
    servicer = StateServicer(store)
    server = GrpcServer(
        settings=settings,
        service_names=[SERVICE_NAME],
        register=lambda s: state_pb2_grpc.add_StateServiceServicer_to_server(servicer, s),  # type: ignore[no-untyped-call]
    )
    port = await server.start(f"{settings.host}:{settings.port}")
    return RunningStateService(port=port, grpc=server, store=store, servicer=servicer)

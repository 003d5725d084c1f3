"""State-service fixtures: a ``StateStore`` per backend (PostgreSQL+Redis, SQLite+in-process)
and the driver that commits like an executor (``state_support.Driver``)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from helpers.db import Backend, create_postgres_database, drop_postgres_database, postgres_url
from state_support import Driver, state_settings

from weft.state.v1 import state_pb2_grpc
from weft_state.server import RunningStateService, build_store, serve
from weft_state.store import StateStore


@pytest.fixture(scope="session")
async def _store_cache(postgres_database_url: str) -> AsyncIterator[dict[str, StateStore]]:
    # Depends on the database so that the stores close before it is dropped.
    cache: dict[str, StateStore] = {}
    yield cache
    for store in cache.values():
        await store.bus.close()
        await store.db.close()


@pytest.fixture
async def store(backend: Backend, _store_cache: dict[str, StateStore]) -> StateStore:
    if backend.name not in _store_cache:
        _store_cache[backend.name] = await build_store(state_settings(backend))
    return _store_cache[backend.name]


@pytest.fixture
def driver(store: StateStore) -> Driver:
    return Driver(store)


@pytest.fixture
async def fresh_store(backend: Backend, tmp_path: Path) -> AsyncIterator[StateStore]:
    """A store on an empty database of its own (for tests that look at *all* claimable work)."""
    name = ""
    if backend.name == "postgres":
        name = await create_postgres_database()
        url = postgres_url(name)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    store = await build_store(state_settings(dataclasses.replace(backend, database_url=url)))
    try:
        yield store
    finally:
        await store.bus.close()
        await store.db.close()
        if name:
            await drop_postgres_database(name)


@pytest.fixture
async def service(backend: Backend) -> AsyncIterator[RunningStateService]:
    running = await serve(state_settings(backend, port=0))
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def stub(service: RunningStateService) -> AsyncIterator[state_pb2_grpc.StateServiceStub]:
    """A client of ``service`` (test_grpc.py has its own, which also waits for health)."""
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    try:
        yield state_pb2_grpc.StateServiceStub(channel)
    finally:
        await channel.close()

"""State-service fixtures: a ``StateStore`` per backend (PostgreSQL+Redis, SQLite+in-process)
and the driver that commits like an executor (``state_support.Driver``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from helpers.db import Backend
from state_support import Driver, state_settings

from weft_state.server import build_store
from weft_state.store import StateStore


@pytest.fixture(scope="session")
async def _store_cache() -> AsyncIterator[dict[str, StateStore]]:
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

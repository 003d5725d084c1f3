"""Executor fixtures: the real state service (PostgreSQL + Redis, or SQLite + in-process bus), the
dag-builder and an executor, in-process on free ports.

The stacks get databases of their own (not the session's shared ones): their workers claim every
runnable execution they can see, and must not take other tests' executions.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from executor_support import Backends, Stack, start_stack


@pytest.fixture(scope="session")
async def executor_backends(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Backends]:
    backends = Backends(tmp_path_factory)
    yield backends
    await backends.close()


@pytest.fixture(params=["postgres", "sqlite"])
async def stack(request: pytest.FixtureRequest, executor_backends: Backends) -> Stack:
    """One stack per backend for the session: every test runs on PostgreSQL+Redis and SQLite."""
    return await executor_backends.shared_stack(request.param)


@pytest.fixture(params=["postgres", "sqlite"])
async def two_workers(
    request: pytest.FixtureRequest, executor_backends: Backends
) -> AsyncIterator[Stack]:
    """Two executors on one fresh database with short leases, for take-over tests."""
    stack = await start_stack(
        await executor_backends.new(request.param), executors=2, lease_ms=1500, heartbeat_ms=250
    )
    yield stack
    await stack.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``pg_restart`` tests restart the machine's shared PostgreSQL: they run only when asked
    for (``-m pg_restart``, or ``WEFT_TEST_PG_RESTART=1``), never as a side effect of running
    this directory while others use the same server."""
    if "pg_restart" in (config.getoption("-m") or "") or os.environ.get("WEFT_TEST_PG_RESTART") == "1":
        return
    keep = [item for item in items if item.get_closest_marker("pg_restart") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep

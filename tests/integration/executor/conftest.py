"""Executor fixtures: the real state service (PostgreSQL + Redis, or SQLite + in-process bus), the
dag-builder and an executor, in-process on free ports.

The stacks get databases of their own (not the session's shared ones): their workers claim every
runnable execution they can see, and must not take other tests' executions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from executor_support import Backends, Stack


@pytest.fixture(scope="session")
async def executor_backends(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Backends]:
    backends = Backends(tmp_path_factory)
    yield backends
    await backends.close()


@pytest.fixture(params=["postgres", "sqlite"])
async def stack(request: pytest.FixtureRequest, executor_backends: Backends) -> Stack:
    """One stack per backend for the session: every test runs on PostgreSQL+Redis and SQLite."""
    return await executor_backends.shared_stack(request.param)

"""Executor fixtures: the real state service (PostgreSQL + Redis, or SQLite + in-process bus), the
dag-builder and an executor, in-process on free ports.

The stacks get databases of their own (not the session's shared ones): their workers claim every
runnable execution they can see, and must not take other tests' executions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from executor_support import Stack, start_stack
from helpers.db import (
    REDIS_URL,
    Backend,
    check_redis,
    create_postgres_database,
    drop_postgres_database,
    flush_redis_prefix,
    postgres_url,
    random_name,
)


class Backends:
    """Fresh backends for executor stacks, cleaned up at the end of the session."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self.tmp = tmp
        self.databases: list[str] = []
        self.prefixes: list[str] = []
        self.stacks: dict[str, Stack] = {}

    async def new(self, name: str) -> Backend:
        if name == "sqlite":
            path: Path = self.tmp.mktemp("executor-sqlite") / "weft.db"
            return Backend("sqlite", f"sqlite+aiosqlite:///{path}", "")
        try:
            await check_redis()
            database = await create_postgres_database(random_name("weft_exec_"))
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
        self.databases.append(database)
        prefix = random_name("weft_exec_") + ":"
        self.prefixes.append(prefix)
        return Backend("postgres", postgres_url(database), REDIS_URL, prefix)

    async def shared_stack(self, name: str) -> Stack:
        if name not in self.stacks:
            self.stacks[name] = await start_stack(await self.new(name))
        return self.stacks[name]

    async def close(self) -> None:
        for stack in self.stacks.values():
            await stack.stop()
        for database in self.databases:
            await drop_postgres_database(database)
        for prefix in self.prefixes:
            await flush_redis_prefix(prefix)


@pytest.fixture(scope="session")
async def executor_backends(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Backends]:
    backends = Backends(tmp_path_factory)
    yield backends
    await backends.close()


@pytest.fixture(params=["postgres", "sqlite"])
async def stack(request: pytest.FixtureRequest, executor_backends: Backends) -> Stack:
    """One stack per backend for the session: every test runs on PostgreSQL+Redis and SQLite."""
    return await executor_backends.shared_stack(request.param)

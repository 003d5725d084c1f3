"""Shared fixtures: a fresh PostgreSQL database and a Redis prefix per test session, a SQLite
file, and the ``backend`` parametrization that runs a test on both PostgreSQL+Redis and
SQLite+in-process bus.

PostgreSQL or Redis being down makes these fixtures fail, never skip.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
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


@pytest.fixture(scope="session")
async def postgres_database_url() -> AsyncIterator[str]:
    """A fresh database ``weft_test_<random>`` on 127.0.0.1:5432, dropped after the session."""
    try:
        name = await create_postgres_database()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield postgres_url(name)
    finally:
        await drop_postgres_database(name)


@pytest.fixture(scope="session")
async def redis_prefix() -> AsyncIterator[str]:
    """A Redis key/channel prefix of this session; its keys are deleted at the end."""
    try:
        await check_redis()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    prefix = random_name("weft_test_") + ":"
    yield prefix
    await flush_redis_prefix(prefix)


@pytest.fixture(scope="session")
def sqlite_database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("sqlite") / "weft.db"
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="session")
async def postgres_backend(postgres_database_url: str, redis_prefix: str) -> Backend:
    return Backend("postgres", postgres_database_url, REDIS_URL, redis_prefix)


@pytest.fixture(scope="session")
def sqlite_backend(sqlite_database_url: str) -> Backend:
    return Backend("sqlite", sqlite_database_url, "")


@pytest.fixture(params=["postgres", "sqlite"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Runs the test once on PostgreSQL + Redis and once on SQLite + the in-process bus."""
    return request.getfixturevalue(f"{request.param}_backend")  # type: ignore[no-any-return]

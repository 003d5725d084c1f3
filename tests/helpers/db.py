"""Real databases for tests: a fresh PostgreSQL database per session, a SQLite file, and a
Redis channel prefix of our own.

PostgreSQL runs at 127.0.0.1:5432 (user postgres, trust auth) and Redis at 127.0.0.1:6379. When
either is unreachable the fixtures FAIL with a clear message: a test that needs them is never
silently skipped.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import asyncpg

__all__ = [
    "PG_ADMIN_DSN",
    "REDIS_URL",
    "Backend",
    "create_postgres_database",
    "drop_postgres_database",
    "flush_redis_prefix",
    "postgres_url",
    "random_name",
]

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
PG_ADMIN_DSN = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"


def random_name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(6)}"


def postgres_url(database: str) -> str:
    """The SQLAlchemy URL (asyncpg driver) of ``database`` on the test server."""
    return f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


async def create_postgres_database(name: str | None = None) -> str:
    """Create an empty database (``weft_test_<random>`` by default); returns its name."""
    name = name or random_name("weft_test_")
    try:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(
            f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} as {PG_USER} ({exc!r}); "
            "the state tests need it (they fail rather than skip)"
        ) from exc
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_postgres_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def flush_redis_prefix(prefix: str, url: str = REDIS_URL) -> None:
    """Delete every key under ``prefix`` (channels need no cleanup once nobody listens)."""
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def check_redis(url: str = REDIS_URL) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        raise RuntimeError(f"Redis is not reachable at {url} ({exc!r}); the tests need it") from exc
    finally:
        await client.aclose()


@dataclass(frozen=True)
class Backend:
    """Where a test's state lives: ``postgres`` (+ Redis) or ``sqlite`` (+ in-process bus)."""

    name: str
    database_url: str
    redis_url: str  # "" = in-process fan-out
    # Channel/key prefix for Redis, unique per test session (WEFT_REDIS_PREFIX).
    redis_prefix: str = ""

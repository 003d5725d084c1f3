"""The database: one async engine (asyncpg on PostgreSQL, aiosqlite for the embedded SQLite
file) and the Alembic migrations, run programmatically at startup."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from alembic import command
from alembic.config import Config
from asyncpg.exceptions import InternalClientError
from sqlalchemy import event, make_url, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from weft_common.telemetry import trace_sqlalchemy_engine

__all__ = ["Database", "is_transient_error", "migrate", "open_database"]

log = logging.getLogger("weft.state.db")

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant: serialises concurrent state-service replicas migrating one PostgreSQL database.
_MIGRATION_LOCK_ID = 0x57454654


@dataclass(slots=True)
class Database:
    engine: AsyncEngine
    url: str
    # PostgreSQL only: a plain asyncpg pool for the commit hot path (one prepared statement per
    # commit, no SQLAlchemy compilation or greenlet hop).
    pg_pool: asyncpg.Pool | None = None

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    async def close(self) -> None:
        if self.pg_pool is not None:
            await self.pg_pool.close()
        await self.engine.dispose()


def is_transient_error(exc: BaseException) -> bool:
    """Retrying later will work: the database went away (restart, failover, network), or the
    transaction lost a race it could not win now (deadlock, serialization, a locked SQLite file)."""
    if isinstance(
        exc,
        (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, InternalClientError),
    ):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        # shutdown, cannot connect now, connection lost; serialization failure, deadlock
        return exc.sqlstate in _RETRYABLE_SQLSTATES
    if isinstance(exc, sqlite3.OperationalError):
        return "locked" in str(exc) or "busy" in str(exc)  # another process holds the file
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        return orig is not None and (
            is_transient_error(orig)
            or (orig.__cause__ is not None and is_transient_error(orig.__cause__))
        )
    return False


_RETRYABLE_SQLSTATES = frozenset(
    {"57P01", "57P02", "57P03", "08006", "08003", "08001", "40001", "40P01"}
)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def _drop_closed(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    # The event loop marks an asyncpg connection closed as soon as the server hangs up; the pool
    # discards it and connects a fresh one (a DisconnectionError here means "retry the checkout").
    if dbapi_conn.driver_connection.is_closed():
        raise DisconnectionError("connection closed by the server")


async def _keep_session(_conn: asyncpg.Connection) -> None:
    return None


async def open_database(url: str, *, pool_size: int = 20, max_overflow: int = 20) -> Database:
    """Connect and bring the schema up to date."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # One connection: SQLite has one writer, and serialising in-process avoids "database is
        # locked" between our own transactions.
        engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=60)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    else:
        # No pool_pre_ping: with asyncpg it costs three round trips per checkout (BEGIN, ";",
        # ROLLBACK), paid by every CreateExecution, LoadExecution, claim and read. Instead a
        # connection the server already closed (restart, failover) is dropped at checkout, so
        # reads after a restart still reconnect instead of failing once.
        engine = create_async_engine(url, pool_size=pool_size, max_overflow=max_overflow)
        event.listen(engine.sync_engine, "checkout", _drop_closed)
    trace_sqlalchemy_engine(engine)  # a span per statement when telemetry is on
    db = Database(engine=engine, url=url)
    await migrate(db)
    if db.is_postgres:
        db.pg_pool = await asyncpg.create_pool(
            make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
            min_size=1,
            max_size=pool_size,
            # The fast path runs single autocommit statements and leaves no session state, so
            # the default reset (a RESET ALL/UNLISTEN/... round trip per release) is skipped.
            reset=_keep_session,
            # Its statements (the one-statement commit and create) are key lookups whose best
            # plan never depends on the values: plan them once per connection instead of
            # re-planning every commit (a custom plan of the commit CTE is ~0.3 ms of server CPU).
            server_settings={"plan_cache_mode": "force_generic_plan"},
        )
    return db


def _upgrade(conn: Connection) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


async def migrate(db: Database) -> None:
    """Run every pending Alembic migration (safe with several replicas starting at once)."""
    async with db.engine.connect() as conn:
        if db.is_postgres:
            await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_ID})
            await conn.commit()
        try:
            await conn.run_sync(_upgrade)
            await conn.commit()
        finally:
            if db.is_postgres:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_ID})
                await conn.commit()
    log.info("database schema up to date (%s)", db.engine.dialect.name)

"""The database layer: pooled connections the server closed are replaced, not handed out."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from helpers.db import (
    PG_ADMIN_DSN,
    create_postgres_database,
    drop_postgres_database,
    postgres_url,
)
from sqlalchemy import text

from weft_state.database import open_database

pytestmark = pytest.mark.postgres


async def test_reads_reconnect_after_the_server_closed_the_pooled_connections() -> None:
    # What a PostgreSQL restart or failover does to idle pooled connections. The pool pings no
    # connection at checkout (that costs round trips on every read): it drops the ones already
    # seen closed, so the first read afterwards still works.
    name = await create_postgres_database()
    db = await open_database(postgres_url(name), pool_size=2)
    try:
        async with db.engine.connect() as a, db.engine.connect() as b:  # two pooled, then idle
            before = {
                (await a.execute(text("SELECT pg_backend_pid()"))).scalar(),
                (await b.execute(text("SELECT pg_backend_pid()"))).scalar(),
            }
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            killed = await admin.fetchval(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid = ANY($1::int[])) t",
                list(before),
            )
        finally:
            await admin.close()
        assert killed == 2
        await asyncio.sleep(0.2)  # the event loop sees the server hang up
        for _ in range(3):
            async with db.engine.connect() as conn:
                pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar()
            assert pid not in before
    finally:
        await db.close()
        await drop_postgres_database(name)

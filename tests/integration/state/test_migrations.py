"""The Alembic migrations: the same revisions build the schema on PostgreSQL and SQLite, match
the models exactly, and upgrade a database that holds data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from helpers.db import Backend, create_postgres_database, drop_postgres_database, postgres_url
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from weft_state.database import MIGRATIONS, open_database
from weft_state.models import Base


def _upgrade(conn: Any, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)


def _diff(conn: Any) -> list[Any]:
    ctx = MigrationContext.configure(conn, opts={"compare_type": False})
    return list(compare_metadata(ctx, Base.metadata))


async def test_migrations_build_the_models_and_upgrade_with_data(backend: Backend, tmp_path: Path) -> None:
    name = ""
    if backend.name == "postgres":
        name = await create_postgres_database()
        url = postgres_url(name)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'migrate.db'}"
    try:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, "0001")
            await conn.execute(text(
                "INSERT INTO executions (execution_id, workflow_id, workflow_version, status, input_json,"
                " outputs_json, error_json, variables_json, version, cancel_requested, cancel_reason,"
                " resume_pending, open_pauses, resume_counter, owner, parent_execution_id, parent_node_id,"
                " depth, created_at, updated_at, last_seq, step_seq, input_tokens, output_tokens,"
                " tokens_estimated) VALUES ('e1', 'w', 1, 'RUNNING', '', '', '', '', 0, false, '', false,"
                " 0, 0, '', '', '', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 0, 0, 0, 0, false)"))
            await conn.execute(text(
                "INSERT INTO node_logs (execution_id, node_id, scope_key, scope_json, status, attempt,"
                " node_type, input_json, output_json, error_json, duration_us, token_usage_json)"
                " VALUES ('e1', 'a', '', '', 'SUCCEEDED', 1, 't', '', '', '', 0, '')"))
        await engine.dispose()

        db = await open_database(url)  # what the service does at startup: upgrade to head
        try:
            async with db.engine.connect() as conn:
                assert await conn.run_sync(_diff) == []
                row = (await conn.execute(text("SELECT node_id, ordinal FROM node_logs"))).one()
                assert tuple(row) == ("a", 0)
            await (await open_database(url)).close()  # idempotent: nothing left to run
        finally:
            await db.close()
    finally:
        if name:
            await drop_postgres_database(name)

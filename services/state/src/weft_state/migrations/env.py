"""Alembic environment: run on the connection handed over by ``weft_state.database.migrate``."""

from __future__ import annotations

from alembic import context

from weft_state.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - migrations always run programmatically
    raise RuntimeError("run migrations through weft_state.database.migrate()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()

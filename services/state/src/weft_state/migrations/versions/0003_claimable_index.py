"""A partial index of the executions claimers look at (parked approvals left out).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CLAIMABLE_SQL = (
    "status IN ('PENDING', 'RUNNING') OR (status = 'PAUSED' AND "
    "(resume_pending OR wake_at IS NOT NULL OR cancel_requested))"
)


def upgrade() -> None:
    op.create_index(
        "ix_executions_claimable",
        "executions",
        ["created_at"],
        postgresql_where=sa.text(CLAIMABLE_SQL),
        sqlite_where=sa.text(CLAIMABLE_SQL),
    )


def downgrade() -> None:
    op.drop_index("ix_executions_claimable", table_name="executions")

"""Node logs remember the order they were first written (ties of started_at, logs without it).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("node_logs") as batch:
        batch.add_column(sa.Column("ordinal", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("node_logs") as batch:
        batch.drop_column("ordinal")

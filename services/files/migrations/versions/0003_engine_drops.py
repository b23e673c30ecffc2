"""Engine drops: a deleted index whose chunks dense and sparse still hold, until a gateway or an
ingest worker has dropped them (a delete no longer depends on both engines answering in time).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

Self-contained, as the others: plain column types, nothing imported from the application.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "engine_drops",
        sa.Column("index_id", sa.String(64), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
    )
    op.create_index("ix_engine_drops_requested_at", "engine_drops", ["requested_at"])


def downgrade() -> None:
    op.drop_index("ix_engine_drops_requested_at", table_name="engine_drops")
    op.drop_table("engine_drops")

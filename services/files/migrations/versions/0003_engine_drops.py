"""Engine drops and rebuild jobs.

Engine drops: a deleted index whose chunks dense and sparse still hold, until a gateway or an
ingest worker has dropped them (a delete no longer depends on both engines answering in time).
Rebuild jobs: ``jobs.kind`` ("sync", what every existing job is) and ``jobs.engines`` (the
engines a rebuild re-indexes the parsed texts into).

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
    op.add_column("jobs", sa.Column("kind", sa.String(16), nullable=False, server_default="sync"))
    op.add_column("jobs", sa.Column("engines", sa.Text(), nullable=False, server_default=sa.text("''")))


def downgrade() -> None:
    op.drop_column("jobs", "engines")
    op.drop_column("jobs", "kind")
    op.drop_index("ix_engine_drops_requested_at", table_name="engine_drops")
    op.drop_table("engine_drops")

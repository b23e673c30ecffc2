"""Issue 3: index kind and config (pipelines), resync requests, the planned version of job
items, page images.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-22

New columns are NOT NULL with server defaults, so rows written at 0001 get the values the code
would have given them: every old index is a plain "index" with config "{}" and no resync request;
an old job item's planned version is 0 ("unknown": GetFileStatus does not blame it on the current
version). Columns are added and dropped with plain ALTER TABLE on both databases (SQLite >= 3.35
drops columns natively); no table is rebuilt, so no foreign-key cascade can fire.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("indexes", sa.Column("kind", sa.String(16), nullable=False, server_default="index"))
    op.add_column("indexes", sa.Column("config_json", sa.Text(), nullable=False, server_default="{}"))
    op.add_column(
        "indexes", sa.Column("resync_requested", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    pipeline = sa.column("kind") == "pipeline"
    op.create_index(
        "uq_indexes_pipeline_name",
        "indexes",
        ["project_id", "name"],
        unique=True,
        sqlite_where=pipeline,
        postgresql_where=pipeline,
    )
    op.add_column("job_items", sa.Column("source_version", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "page_images",
        sa.Column(
            "parsed_file_id",
            sa.String(64),
            sa.ForeignKey("directory_files.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("page_index", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("content_type", sa.Text(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("page_images")
    op.drop_column("job_items", "source_version")
    op.drop_index("uq_indexes_pipeline_name", table_name="indexes")
    for column in ("resync_requested", "config_json", "kind"):
        op.drop_column("indexes", column)

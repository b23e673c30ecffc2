"""The catalog schema as first released (commit 9763b69): projects, keys, directories, files,
indexes, sync jobs and parsed text.

Revision ID: 0001
Revises:
Create Date: 2025-11-22

Self-contained on purpose (plain column types, no imports from the application): a migration
must keep describing the schema of its time however the code changes later.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ACTIVE = ("pending", "running")


def _id() -> sa.String:
    return sa.String(64)


def _name() -> sa.types.TypeEngine[str]:
    # Byte-order collation on PostgreSQL, like SQLite's BINARY.
    return sa.String(1024).with_variant(sa.String(1024, collation="C"), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", _id(), primary_key=True),
        sa.Column("name", _name(), nullable=False, unique=True),
        sa.Column("organization_id", _id(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_hash", sa.String(64), primary_key=True),
        sa.Column(
            "project_id", _id(), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True
        ),
        sa.Column("created_at", _ts(), nullable=False),
    )
    op.create_table(
        "directories",
        sa.Column("id", _id(), primary_key=True),
        sa.Column(
            "project_id", _id(), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True
        ),
        sa.Column("name", _name(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
    )
    op.create_table(
        "blobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "directory_files",
        sa.Column("id", _id(), primary_key=True),
        sa.Column("directory_id", _id(), sa.ForeignKey("directories.id", ondelete="CASCADE"), nullable=False),
        sa.Column("project_id", _id(), nullable=False),
        sa.Column("display_name", _name(), nullable=False),
        sa.Column("name_folded", sa.Text(), nullable=False),
        sa.Column("unique_id", _name(), nullable=False),
        sa.Column("external_file_id", sa.Text(), nullable=False),
        sa.Column("blob_id", sa.String(64), sa.ForeignKey("blobs.id"), nullable=True, index=True),
        sa.Column("metadata_json", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.Text(), nullable=False),
        sa.Column("source_file_id", _id(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.UniqueConstraint("directory_id", "unique_id", name="uq_directory_files_unique_id"),
        sa.UniqueConstraint("directory_id", "source_file_id", name="uq_directory_files_source"),
        sa.Index("ix_directory_files_name", "directory_id", "display_name", "id"),
    )
    op.create_table(
        "indexes",
        sa.Column("id", _id(), primary_key=True),
        sa.Column("project_id", _id(), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", _name(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("source_directory_id", _id(), nullable=False, index=True),
        sa.Column("output_directory_id", _id(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("metadata_json", sa.Text(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.Column("last_synced_at", _ts(), nullable=True),
        sa.Index("ix_indexes_project_created", "project_id", "created_at", "id"),
    )
    jobs = op.create_table(
        "jobs",
        sa.Column("id", _id(), primary_key=True),
        sa.Column("index_id", _id(), sa.ForeignKey("indexes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("worker_id", sa.Text(), nullable=False),
        sa.Column("lease_until", _ts(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("total_items", sa.Integer(), nullable=False),
        sa.Column("done_items", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("started_at", _ts(), nullable=True),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.UniqueConstraint("index_id", "seq", name="uq_jobs_index_seq"),
        sa.Index("ix_jobs_claim", "status", "created_at", "id"),
    )
    active = jobs.c.status.in_(_ACTIVE)
    op.create_index(
        "uq_jobs_one_active", "jobs", ["index_id"], unique=True, sqlite_where=active, postgresql_where=active
    )
    op.create_table(
        "job_items",
        sa.Column("job_id", _id(), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("source_file_id", _id(), primary_key=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("parsed_file_id", _id(), nullable=False),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
    )
    op.create_table(
        "parsed_texts",
        sa.Column(
            "parsed_file_id", _id(), sa.ForeignKey("directory_files.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("index_id", _id(), sa.ForeignKey("indexes.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("source_file_id", _id(), nullable=False),
        sa.Column("source_version", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("pages_json", sa.Text(), nullable=False),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "parsed_texts",
        "job_items",
        "jobs",
        "indexes",
        "directory_files",
        "blobs",
        "directories",
        "api_keys",
        "projects",
    ):
        op.drop_table(table)

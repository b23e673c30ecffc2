"""API keys that can be administered: an id (to name a key without its secret), a name, admin
rights, an optional expiry, revocation and the time of last use. Keys made before this revision
get an id here and are not admin keys.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

Self-contained, as the others: plain column types, nothing imported from the application.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("name", sa.Text(), nullable=False, server_default=sa.text("''")))
        batch.add_column(sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    keys = sa.table("api_keys", sa.column("key_hash", sa.String(64)), sa.column("id", sa.String(64)))
    conn = op.get_bind()
    for (key_hash,) in conn.execute(sa.select(keys.c.key_hash)).all():
        conn.execute(keys.update().where(keys.c.key_hash == key_hash).values(id=str(uuid.uuid4())))
    with op.batch_alter_table("api_keys") as batch:
        batch.alter_column("id", existing_type=sa.String(64), nullable=False)
        batch.create_index("ix_api_keys_id", ["id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index("ix_api_keys_id")
        for column in ("last_used_at", "revoked_at", "expires_at", "is_admin", "name", "id"):
            batch.drop_column(column)

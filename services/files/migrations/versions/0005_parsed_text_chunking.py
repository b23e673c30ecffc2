"""The chunking each parsed text's chunks were made with (``parsed_texts.chunking``).

A pipeline's ``transform_config`` sets its index's chunk size and overlap; a sync plans a file
again when the chunking its chunks were made with differs from the index's. Existing texts were
chunked with the worker's defaults: "".

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

Self-contained, as the others: plain column types, nothing imported from the application.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("parsed_texts", sa.Column("chunking", sa.Text(), nullable=False, server_default=sa.text("''")))


def downgrade() -> None:
    with op.batch_alter_table("parsed_texts") as batch:
        batch.drop_column("chunking")

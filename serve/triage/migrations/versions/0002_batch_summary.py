"""Batch summary: the counts of a loaded batch that its report draws (JSON, serve.report.BatchReport).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("batches", sa.Column("summary", sa.Text(), nullable=True))


def downgrade() -> None:
    # SQLite drops a column only by copying the table, which batch mode does.
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("summary")

"""progress of a running calculation: stage, done/total, ETA, when it was last reported

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-10
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calculations") as batch:
        batch.add_column(sa.Column("progress_stage", sa.String(200), nullable=True))
        batch.add_column(sa.Column("progress_unit", sa.String(20), nullable=True))
        batch.add_column(sa.Column("progress_done", sa.Integer, nullable=True))
        batch.add_column(sa.Column("progress_total", sa.Integer, nullable=True))
        batch.add_column(sa.Column("progress_eta_s", sa.Float, nullable=True))
        batch.add_column(sa.Column("progress_updated", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calculations") as batch:
        for name in ("progress_updated", "progress_eta_s", "progress_total", "progress_done", "progress_unit",
                     "progress_stage"):
            batch.drop_column(name)

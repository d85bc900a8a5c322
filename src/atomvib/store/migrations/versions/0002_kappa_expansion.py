"""queryable κ(300 K) and thermal expansion α(300 K) of the kappa and qha tasks

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calculations") as batch:
        batch.add_column(sa.Column("kappa_300k_w_per_mk", sa.Float, nullable=True))
        batch.add_column(sa.Column("thermal_expansion_300k_per_k", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calculations") as batch:
        batch.drop_column("thermal_expansion_300k_per_k")
        batch.drop_column("kappa_300k_w_per_mk")

"""initial schema: structures, sources, runs, calculations

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "structures",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("formula", sa.String(200), nullable=False),
        sa.Column("natoms", sa.Integer, nullable=False),
        sa.Column("spacegroup", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("extxyz", sa.Text, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
    )
    op.create_index("ix_structures_formula", "structures", ["formula"])
    op.create_table(
        "sources",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("structure_hash", sa.String(64), sa.ForeignKey("structures.hash"), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.UniqueConstraint("structure_hash", "source", name="uq_source"),
    )
    op.create_index("ix_sources_structure_hash", "sources", ["structure_hash"])
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started", sa.Float, nullable=False),
        sa.Column("heartbeat", sa.Float, nullable=False),
        sa.Column("finished", sa.Float, nullable=True),
        sa.Column("command", sa.Text, nullable=False),
    )
    op.create_table(
        "calculations",
        sa.Column("key", sa.String(32), primary_key=True),
        sa.Column("structure_hash", sa.String(64), nullable=False),
        sa.Column("task", sa.String(40), nullable=False),
        sa.Column("engine", sa.String(200), nullable=False),
        sa.Column("engine_version", sa.String(80), nullable=False),
        sa.Column("settings_digest", sa.String(64), nullable=False),
        sa.Column("settings_json", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("started", sa.Float, nullable=True),
        sa.Column("finished", sa.Float, nullable=True),
        sa.Column("seconds", sa.Float, nullable=True),
        sa.Column("omega_max_thz", sa.Float, nullable=True),
        sa.Column("has_imaginary", sa.Boolean, nullable=True),
        sa.Column("energy_ev", sa.Float, nullable=True),
        sa.Column("result_dir", sa.Text, nullable=False),
        sa.Column("summary_json", sa.Text, nullable=False),
        sa.Column("atomvib_version", sa.String(40), nullable=False),
        sa.Column("host", sa.String(200), nullable=False),
        sa.UniqueConstraint(
            "structure_hash", "task", "engine", "engine_version", "settings_digest", name="uq_calculation"
        ),
    )
    op.create_index("ix_calc_status", "calculations", ["status"])
    op.create_index("ix_calculations_structure_hash", "calculations", ["structure_hash"])


def downgrade() -> None:
    op.drop_table("calculations")
    op.drop_table("runs")
    op.drop_table("sources")
    op.drop_table("structures")

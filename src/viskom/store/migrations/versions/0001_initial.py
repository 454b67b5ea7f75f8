"""Initial schema: exposures, stage_runs and metrics.

Revision ID: 0001
Revises:
Create Date: 2025-11-24

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the three tables with their keys and indexes."""
    op.create_table(
        "exposures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("checksum", sa.String(length=64), nullable=True),
        sa.Column("frame_type", sa.String(length=16), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("date_obs", _utc(), nullable=True),
        sa.Column("mjd_obs", sa.Float(), nullable=True),
        sa.Column("exptime", sa.Float(), nullable=True),
        sa.Column("ra", sa.Float(), nullable=True),
        sa.Column("dec", sa.Float(), nullable=True),
        sa.Column("pa", sa.Float(), nullable=True),
        sa.Column("obs_id", sa.String(length=32), nullable=True),
        sa.Column("dither", sa.Integer(), nullable=True),
        sa.Column("exposure_index", sa.Integer(), nullable=True),
        sa.Column("img_cat", sa.String(length=64), nullable=True),
        sa.Column("img_t1", sa.String(length=64), nullable=True),
        sa.Column("img_t2", sa.String(length=64), nullable=True),
        sa.Column("obs_mode", sa.String(length=64), nullable=True),
        sa.Column("n_quadrants", sa.Integer(), nullable=True),
        sa.Column(
            "header",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True), "postgresql"
            ),
            nullable=True,
        ),
        sa.Column("ingested_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_exposures"),
        sa.UniqueConstraint("name", name="uq_exposures_name"),
    )
    op.create_index("ix_exposures_date_obs", "exposures", ["date_obs"])

    op.create_table(
        "stage_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("exposure_id", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("stage_version", sa.String(length=32), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("software_version", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", _utc(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["exposure_id"],
            ["exposures.id"],
            name="fk_stage_runs_exposure_id_exposures",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_stage_runs"),
        sa.UniqueConstraint("exposure_id", "stage", name="uq_stage_runs_exposure_id_stage"),
    )

    op.create_table(
        "metrics",
        sa.Column("exposure_id", sa.Integer(), nullable=False),
        sa.Column("unit", sa.String(length=16), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["exposure_id"],
            ["exposures.id"],
            name="fk_metrics_exposure_id_exposures",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("exposure_id", "unit", "metric", name="pk_metrics"),
    )
    op.create_index("ix_metrics_metric", "metrics", ["metric"])


def downgrade() -> None:
    """Drop everything (all data is lost)."""
    op.drop_index("ix_metrics_metric", table_name="metrics")
    op.drop_table("metrics")
    op.drop_table("stage_runs")
    op.drop_index("ix_exposures_date_obs", table_name="exposures")
    op.drop_table("exposures")

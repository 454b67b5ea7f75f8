"""Claims of work units, and the full provenance history of stage runs.

- `claims`: one row per work unit (an exposure's stage, a month's period products, the
  calibrations), held by an owner (one task of one run) under a lease that its heartbeat
  extends; a lease that runs out (a worker killed) lets another owner take the unit.
- `stage_runs` (the current run of each exposure and stage) gains the stage's own
  configuration as JSON, the calibrations it used, the raw file's checksum, the host, the
  failure class (transient or permanent), consecutive attempts, when a transient failure
  may be retried, and when the run finished.
- `stage_run_history`: every run, one row each, never overwritten.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _provenance_columns() -> list[sa.Column]:
    return [
        sa.Column("config", _json(), nullable=True),
        sa.Column("calibrations", _json(), nullable=True),
        sa.Column("raw_checksum", sa.String(length=64), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("failure_class", sa.String(length=16), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    ]


def upgrade() -> None:
    """Add the claims and history tables and the provenance columns of stage_runs."""
    op.create_table(
        "claims",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("exposure_id", sa.Integer(), nullable=True),
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["exposure_id"],
            ["exposures.id"],
            name="fk_claims_exposure_id_exposures",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key", name="pk_claims"),
    )
    op.create_index("ix_claims_owner", "claims", ["owner"])
    with op.batch_alter_table("stage_runs") as batch:
        for column in _provenance_columns():
            batch.add_column(column)
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("retry_after", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "stage_run_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("exposure_id", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("stage_version", sa.String(length=32), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("software_version", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=True),
        *_provenance_columns(),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["exposure_id"],
            ["exposures.id"],
            name="fk_stage_run_history_exposure_id_exposures",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_stage_run_history"),
    )
    op.create_index(
        "ix_stage_run_history_exposure_stage", "stage_run_history", ["exposure_id", "stage"]
    )


def downgrade() -> None:
    """Drop the history and claims tables and the new stage_runs columns."""
    op.drop_index("ix_stage_run_history_exposure_stage", table_name="stage_run_history")
    op.drop_table("stage_run_history")
    with op.batch_alter_table("stage_runs") as batch:
        for name in ("retry_after", "attempts", "finished_at", "failure_class", "host",
                     "raw_checksum", "calibrations", "config"):  # fmt: skip
            batch.drop_column(name)
    op.drop_index("ix_claims_owner", table_name="claims")
    op.drop_table("claims")

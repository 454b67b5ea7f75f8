"""Quality outcomes and header warnings.

Adds ``exposures.header_warnings`` (unusable header values found at registration) and the
``quality_outcomes`` table (what a stage found nothing of or left out, per exposure, stage
and unit; replaced whenever that stage is recorded again for the exposure).

Revision ID: 0002
Revises: 0001
Create Date: 2025-12-01

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the header_warnings column and the quality_outcomes table."""
    with op.batch_alter_table("exposures") as batch:
        batch.add_column(
            sa.Column(
                "header_warnings",
                sa.JSON(none_as_null=True).with_variant(
                    postgresql.JSONB(none_as_null=True), "postgresql"
                ),
                nullable=True,
            )
        )
    op.create_table(
        "quality_outcomes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("exposure_id", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("unit", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["exposure_id"],
            ["exposures.id"],
            name="fk_quality_outcomes_exposure_id_exposures",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_quality_outcomes"),
    )
    op.create_index(
        "ix_quality_outcomes_exposure_stage", "quality_outcomes", ["exposure_id", "stage"]
    )
    op.create_index("ix_quality_outcomes_code", "quality_outcomes", ["code"])


def downgrade() -> None:
    """Drop the table and the column (their data are lost)."""
    op.drop_index("ix_quality_outcomes_code", table_name="quality_outcomes")
    op.drop_index("ix_quality_outcomes_exposure_stage", table_name="quality_outcomes")
    op.drop_table("quality_outcomes")
    with op.batch_alter_table("exposures") as batch:
        batch.drop_column("header_warnings")

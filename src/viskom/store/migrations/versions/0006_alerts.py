"""The alerts table: metrics out of their bands and quality outcomes, for people to see.

One row per watched key (kind, metric or outcome code, unit, frame type): open or cleared,
warning or alarm, the last breaching value, the band (for learned bands its alarm edges),
the last breaching exposure (NULL once deleted), DATE-OBS of the first and last breach and
of the last exposure evaluated, breaches in a row, a one-line message, the acknowledgement,
the notification (when, through which channels, the last error) and when it cleared.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the alerts table."""
    when = sa.DateTime(timezone=True)
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("unit", sa.String(length=16), nullable=False),
        sa.Column("frame_type", sa.String(length=16), nullable=True),
        sa.Column("stage", sa.String(length=64), nullable=True),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("low", sa.Float(), nullable=True),
        sa.Column("high", sa.Float(), nullable=True),
        sa.Column("exposure_id", sa.Integer(), nullable=True),
        sa.Column("first_seen", when, nullable=True),
        sa.Column("last_seen", when, nullable=True),
        sa.Column("last_checked", when, nullable=True),
        sa.Column("breaches", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("acknowledged_at", when, nullable=True),
        sa.Column("acknowledged_by", sa.String(length=255), nullable=True),
        sa.Column("notified_at", when, nullable=True),
        sa.Column("notified_via", sa.String(length=64), nullable=True),
        sa.Column("notify_error", sa.Text(), nullable=True),
        sa.Column("cleared_at", when, nullable=True),
        sa.Column("updated_at", when, nullable=False),
        sa.ForeignKeyConstraint(
            ["exposure_id"],
            ["exposures.id"],
            name="fk_alerts_exposure_id_exposures",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.UniqueConstraint("key", name="uq_alerts_key"),
    )
    op.create_index("ix_alerts_state", "alerts", ["state"])
    op.create_index("ix_alerts_exposure_id", "alerts", ["exposure_id"])


def downgrade() -> None:
    """Drop the alerts table (the measurements stay; the next run raises alerts anew)."""
    op.drop_index("ix_alerts_exposure_id", table_name="alerts")
    op.drop_index("ix_alerts_state", table_name="alerts")
    op.drop_table("alerts")

"""The products table: every file a stage or a period product wrote.

One row per file in the product tree: the exposure (or, for month products, the period
'YYYY-MM'), the stage, the kind ('catalogue', 'flux_radius', ...), the path relative to the
data root, its size and SHA-256; replaced when the stage is recorded again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the products table."""
    op.create_table(
        "products",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("exposure_id", sa.Integer(), nullable=True),
        sa.Column("period", sa.String(length=16), nullable=True),
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["exposure_id"],
            ["exposures.id"],
            name="fk_products_exposure_id_exposures",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_products"),
        sa.UniqueConstraint("path", name="uq_products_path"),
    )
    op.create_index("ix_products_exposure_stage", "products", ["exposure_id", "stage"])
    op.create_index("ix_products_period", "products", ["period"])
    op.create_index("ix_products_kind", "products", ["kind"])


def downgrade() -> None:
    """Drop the products table (the files stay on disk)."""
    op.drop_index("ix_products_kind", table_name="products")
    op.drop_index("ix_products_period", table_name="products")
    op.drop_index("ix_products_exposure_stage", table_name="products")
    op.drop_table("products")

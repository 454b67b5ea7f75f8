"""The fetched_files table: every raw frame the archive was asked for, and what came of it.

One row per file name: the archive it came from (eas, public), its URL (never with
credentials), state (fetched, failed, not_found), where it is now (the raw folder, or the
second folder it was moved to), size, SHA-256 of the bytes as served, when it arrived, the
attempts and the last error. `viskom status` reads it to show fetched / registered /
measured.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the fetched_files table."""
    op.create_table(
        "fetched_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("archive", sa.String(length=16), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("tried_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_fetched_files"),
        sa.UniqueConstraint("name", name="uq_fetched_files_name"),
    )
    op.create_index("ix_fetched_files_state", "fetched_files", ["state"])


def downgrade() -> None:
    """Drop the fetched_files table (the files stay on disk)."""
    op.drop_index("ix_fetched_files_state", table_name="fetched_files")
    op.drop_table("fetched_files")

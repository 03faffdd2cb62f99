"""ledger_snapshots: checkpoints of the projections (derived data, one row per projection, replaced).

Not part of the append-only record: a snapshot can always be thrown away and rebuilt from
ledger_events, so its rows are updated in place.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ledger_snapshots",
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("version", sa.String(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("applied", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ledger_snapshots")

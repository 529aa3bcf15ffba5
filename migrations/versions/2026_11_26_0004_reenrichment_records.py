"""re-enrichment records: one per story per run of ``akhbar replay --from-db``

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 00:24:46.373032
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import models.base

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reenrichments",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("story_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("changed", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                  nullable=False),
        sa.Column("enrichment_version", sa.String(length=32), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("finished_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("outcome IN ('updated', 'unchanged', 'failed', 'missing')",
                           name=op.f("ck_reenrichments_outcome")),
        sa.PrimaryKeyConstraint("run_id", "story_id", name=op.f("pk_reenrichments")),
    )


def downgrade() -> None:
    op.drop_table("reenrichments")

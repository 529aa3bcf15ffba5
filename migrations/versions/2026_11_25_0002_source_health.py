"""source health: one row per long-running source (feed, drop folder, push endpoint)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 23:37:33.413346
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import models.base

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "source_health",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("last_seen", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_poll", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("next_poll", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("failure_score", sa.Float(), nullable=False),
        sa.Column("etag", sa.Text(), nullable=True),
        sa.Column("last_modified", sa.String(length=64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "cursor",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("updated_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('active', 'quiet', 'disabled')", name=op.f("ck_source_health_state")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_source_health")),
    )


def downgrade() -> None:
    op.drop_table("source_health")

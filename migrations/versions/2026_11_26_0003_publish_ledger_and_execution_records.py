"""publish ledger and execution records: what producers sent, and every attempt to process it

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 00:19:33.077696
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.base

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "executions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.String(length=36), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cleared_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "outcome IS NULL OR outcome IN ('stored', 'skipped', 'retry', 'timeout', 'error', 'quarantined')",
            name=op.f("ck_executions_outcome"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_executions")),
    )
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_executions_delivery_id"), ["delivery_id"], unique=False)
        batch_op.create_index("ix_executions_task_attempt", ["task_id", "attempt"], unique=False)

    op.create_table(
        "published_deliveries",
        sa.Column("delivery_id", sa.String(length=36), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("message", sa.LargeBinary(), nullable=False),
        sa.Column("published_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_sent_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sends", sa.Integer(), nullable=False),
        sa.Column("settled_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("delivery_id", name=op.f("pk_published_deliveries")),
    )
    with op.batch_alter_table("published_deliveries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_published_deliveries_run_id"), ["run_id"], unique=False)
        batch_op.create_index(
            "ix_published_deliveries_settled_published", ["settled_at", "published_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("published_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_published_deliveries_settled_published")
        batch_op.drop_index(batch_op.f("ix_published_deliveries_run_id"))
    op.drop_table("published_deliveries")
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_index("ix_executions_task_attempt")
        batch_op.drop_index(batch_op.f("ix_executions_delivery_id"))
    op.drop_table("executions")

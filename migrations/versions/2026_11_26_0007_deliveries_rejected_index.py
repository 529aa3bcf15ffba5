"""deliveries: a partial index on the rejected deliveries instead of an index on every status

``ix_deliveries_status`` took a B-tree entry for every delivery, while the only lookup by status
is the dead-letter listing of the rejected ones (oldest first); ``ix_deliveries_rejected`` holds
only those, in the listing's order.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 05:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REJECTED = sa.text("status = 'rejected'")


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_deliveries_rejected", ["received_at", "id"], unique=False,
                              postgresql_where=REJECTED, sqlite_where=REJECTED)
        batch_op.drop_index(batch_op.f("ix_deliveries_status"))


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deliveries_status"), ["status"], unique=False)
        batch_op.drop_index("ix_deliveries_rejected", postgresql_where=REJECTED, sqlite_where=REJECTED)

"""story_versions: one index on story_id, the unique (story_id, version) one

``ix_story_versions_story_id`` repeated the leading column of ``uq_story_versions_story_id_version``:
every lookup by story (its versions, the cascade from a deleted story) can use the unique index,
and every new version paid for a second B-tree entry.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 05:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("story_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_story_versions_story_id"))


def downgrade() -> None:
    with op.batch_alter_table("story_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_story_versions_story_id"), ["story_id"], unique=False)

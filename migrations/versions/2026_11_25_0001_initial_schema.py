"""initial schema: deliveries, stories, versions, exact-duplicate keys

Revision ID: 0001
Revises:
Create Date: 2026-11-25 23:12:53.837660
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import models.base

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('stories',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('canonical_delivery_id', sa.String(length=36), nullable=False),
    sa.Column('source', sa.String(length=128), nullable=False),
    sa.Column('source_id', sa.String(length=512), nullable=False),
    sa.Column('title', sa.Text(), nullable=True),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('paragraphs', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'),
        nullable=False),
    sa.Column('normalized_title', sa.Text(), nullable=False),
    sa.Column('normalized_body', sa.Text(), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('url', sa.Text(), nullable=True),
    sa.Column('published_at', models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('language', sa.String(length=16), nullable=True),
    sa.Column('enrichment', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'),
        nullable=False),
    sa.Column('enrichment_version', sa.String(length=32), nullable=False),
    sa.Column('pipeline_version', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('withdrawn', sa.Boolean(), nullable=False),
    sa.Column('signature', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', models.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stories'))
    )
    with op.batch_alter_table('stories', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stories_source'), ['source'], unique=False)

    op.create_table('deliveries',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('source', sa.String(length=128), nullable=False),
    sa.Column('source_id', sa.String(length=512), nullable=True),
    sa.Column('format', sa.String(length=16), nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=True),
    sa.Column('correlation_id', sa.String(length=64), nullable=False),
    sa.Column('received_at', models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('processed_at', models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('story_id', sa.Integer(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=True),
    sa.Column('duplicate_of', sa.String(length=36), nullable=True),
    sa.Column('content_hash', sa.String(length=64), nullable=True),
    sa.Column('title', sa.Text(), nullable=True),
    sa.Column('body', sa.Text(), nullable=True),
    sa.Column('record', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'),
        nullable=True),
    sa.Column('raw', sa.LargeBinary(), nullable=True),
    sa.Column('error', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'),
        nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['story_id'], ['stories.id'], name=op.f('fk_deliveries_story_id_stories'),
        ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deliveries'))
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_received', ['received_at', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_deliveries_run_id'), ['run_id'], unique=False)
        batch_op.create_index('ix_deliveries_source_source_id', ['source', 'source_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_deliveries_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_deliveries_story_id'), ['story_id'], unique=False)

    op.create_table('fingerprints',
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('story_id', sa.Integer(), nullable=True),
    sa.Column('delivery_id', sa.String(length=36), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['story_id'], ['stories.id'], name=op.f('fk_fingerprints_story_id_stories'),
        ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('content_hash', name=op.f('pk_fingerprints'))
    )
    with op.batch_alter_table('fingerprints', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_fingerprints_story_id'), ['story_id'], unique=False)

    op.create_table('source_keys',
    sa.Column('source', sa.String(length=128), nullable=False),
    sa.Column('source_id', sa.String(length=512), nullable=False),
    sa.Column('delivery_id', sa.String(length=36), nullable=False),
    sa.Column('story_id', sa.Integer(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['story_id'], ['stories.id'], name=op.f('fk_source_keys_story_id_stories'),
        ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('source', 'source_id', name=op.f('pk_source_keys'))
    )
    with op.batch_alter_table('source_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_source_keys_story_id'), ['story_id'], unique=False)

    op.create_table('story_versions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('story_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('delivery_id', sa.String(length=36), nullable=False),
    sa.Column('title', sa.Text(), nullable=True),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('paragraphs', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'),
        nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('changes', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'),
        nullable=True),
    sa.Column('created_at', models.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['story_id'], ['stories.id'], name=op.f('fk_story_versions_story_id_stories'),
        ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_story_versions')),
    sa.UniqueConstraint('story_id', 'version', name=op.f('uq_story_versions_story_id_version'))
    )
    with op.batch_alter_table('story_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_story_versions_story_id'), ['story_id'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('story_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_story_versions_story_id'))

    op.drop_table('story_versions')
    with op.batch_alter_table('source_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_source_keys_story_id'))

    op.drop_table('source_keys')
    with op.batch_alter_table('fingerprints', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_fingerprints_story_id'))

    op.drop_table('fingerprints')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deliveries_story_id'))
        batch_op.drop_index(batch_op.f('ix_deliveries_status'))
        batch_op.drop_index('ix_deliveries_source_source_id')
        batch_op.drop_index(batch_op.f('ix_deliveries_run_id'))
        batch_op.drop_index('ix_deliveries_received')

    op.drop_table('deliveries')
    with op.batch_alter_table('stories', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stories_source'))

    op.drop_table('stories')


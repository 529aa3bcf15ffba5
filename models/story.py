"""The story aggregate: stories, their versions, and the exact-duplicate keys that point at them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, utcnow


class Story(Base):
    """One distinct story; its deliveries (duplicates, near-duplicates, updates) all point at it."""

    __tablename__ = "stories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # The delivery that created the story.
    canonical_delivery_id: Mapped[str] = mapped_column(String(36))
    source: Mapped[str] = mapped_column(String(128), index=True)
    source_id: Mapped[str] = mapped_column(String(512))
    # The latest version's text, exactly as the source sent it.
    title: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    paragraphs: Mapped[list[Any]]
    normalized_title: Mapped[str] = mapped_column(Text)
    normalized_body: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    url: Mapped[str | None] = mapped_column(Text)
    published_at: Mapped[datetime | None]
    language: Mapped[str | None] = mapped_column(String(16))
    enrichment: Mapped[dict[str, Any]]
    enrichment_version: Mapped[str] = mapped_column(String(32))
    pipeline_version: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer, default=1)
    withdrawn: Mapped[bool] = mapped_column(Boolean, default=False)
    # Compact near-duplicate signature; the database copy is what rebuilds the Redis index.
    signature: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    versions: Mapped[list[StoryVersion]] = relationship(
        back_populates="story", order_by="StoryVersion.version", cascade="all, delete-orphan"
    )


class StoryVersion(Base):
    """One version of a story: version 1 is the first delivery, later ones are updates."""

    __tablename__ = "story_versions"
    __table_args__ = (UniqueConstraint("story_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Looked up through the unique (story_id, version) index: no index of its own.
    story_id: Mapped[int] = mapped_column(ForeignKey("stories.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    delivery_id: Mapped[str] = mapped_column(String(36))
    title: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    paragraphs: Mapped[list[Any]]
    content_hash: Mapped[str] = mapped_column(String(64))
    # What changed from the previous version: {"paragraphs_added": [...], "paragraphs_removed": [...], ...}
    changes: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    story: Mapped[Story] = relationship(back_populates="versions")


class Fingerprint(Base):
    """Exact-duplicate key: one row per distinct match form ever stored.

    Inserted with ``ON CONFLICT DO NOTHING`` in the same transaction as the story, so two workers
    racing on the same text cannot both create a story: the loser's insert waits for the winner's
    commit and then finds its row.
    """

    __tablename__ = "fingerprints"

    content_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    story_id: Mapped[int | None] = mapped_column(ForeignKey("stories.id", ondelete="CASCADE"), index=True)
    delivery_id: Mapped[str] = mapped_column(String(36))
    version: Mapped[int] = mapped_column(Integer, default=1)


class SourceKey(Base):
    """Exact-duplicate key: the first delivery of each (source, source id)."""

    __tablename__ = "source_keys"

    source: Mapped[str] = mapped_column(String(128), primary_key=True)
    source_id: Mapped[str] = mapped_column(String(512), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(36))
    story_id: Mapped[int | None] = mapped_column(ForeignKey("stories.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)

"""SQLAlchemy models, sessions and queries: the only package that writes SQL."""

from models.base import Base
from models.delivery import STATUSES, Delivery
from models.ledger import Execution, PublishedDelivery
from models.reenrich import Reenrichment
from models.sources import SourceHealth
from models.story import Fingerprint, SourceKey, Story, StoryVersion

__all__ = [
    "STATUSES",
    "Base",
    "Delivery",
    "Execution",
    "Fingerprint",
    "PublishedDelivery",
    "Reenrichment",
    "SourceHealth",
    "SourceKey",
    "Story",
    "StoryVersion",
]

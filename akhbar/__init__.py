"""akhbar: a streaming ingestion worker for Arabic news wire stories.

This small package holds what every part shares: settings, logging, the command line and the
compression of queue messages and ledger rows.
The data path itself lives in ``producers/`` (sources to queue), ``worker/`` (Celery app, tasks,
pipeline stages) and ``models/`` (SQLAlchemy models, sessions and queries).
"""

__version__ = "0.1.0"

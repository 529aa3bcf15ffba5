"""The naive design akhbar is measured against: the obvious Celery + SQLAlchemy ingestion worker.

One Celery message per story with Celery's default JSON serializer; CAMeL Tools' stock
normalization chain; exact duplicates found with SELECTs; near-duplicates with datasketch's
MinHashLSH stored in Redis; one ORM commit per story; ``acks_late``, prefetch 1, prefork workers.
Its own tables (:mod:`bench.naive.models`) in its own database, its own Redis key prefix.

Run by ``bench.e2e``; a worker is ``celery -A bench.naive.app worker``, configured from the same
``AKHBAR_DATABASE_URL``, ``AKHBAR_REDIS_URL`` and ``AKHBAR_REDIS_PREFIX`` variables as akhbar's.
"""

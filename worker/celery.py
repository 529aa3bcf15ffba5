"""The module ``celery -A worker.celery worker`` loads."""

from worker.app import create_app

app = create_app()

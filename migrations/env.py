"""Alembic environment: the URL comes from the config (set by ``models.session.alembic_config``)
or, when run as ``alembic`` from the command line, from akhbar's settings."""

from __future__ import annotations

from alembic import context

import models  # noqa: F401  (registers every table on Base.metadata)
from models.base import Base
from models.session import get_engine, normalize_url

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from akhbar.settings import get_settings

    return normalize_url(get_settings().database_url)


def run_migrations_offline() -> None:
    url = _url()
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = _url()
    with get_engine(url).connect() as connection:
        # SQLite cannot ALTER most things: batch mode recreates the table.
        # https://alembic.sqlalchemy.org/en/latest/batch.html
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

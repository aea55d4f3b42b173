"""Alembic environment: the URL comes from the Config's attributes (set by
db.migrate.alembic_config or pytest-alembic's connection), else from the settings."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection, Engine

from db.engine import create_fresh_engine, normalize_url
from db.models import Base
from db.settings import get_settings

config = context.config
target_metadata = Base.metadata

# Only the plain `alembic` command configures logging; inside segbench it would
# override the application's logging.
if config.cmd_opts is not None and config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    url = (
        config.attributes.get("database_url")
        or config.get_main_option("sqlalchemy.url")
        or get_settings().database_url
    )
    return normalize_url(url)


def configure(**kwargs) -> None:
    context.configure(target_metadata=target_metadata, compare_type=True, **kwargs)


def run_migrations_offline() -> None:
    url = database_url()
    configure(url=url, literal_binds=True, render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def run_on(connection: Connection) -> None:
    configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")  # pytest-alembic passes one
    if isinstance(connectable, Connection):
        run_on(connectable)
        return
    if isinstance(connectable, Engine):
        with connectable.connect() as connection:
            run_on(connection)
            connection.commit()
        return
    # Foreign keys off on SQLite: batch mode recreates tables, and ON DELETE CASCADE
    # would empty the child tables when the parent's old copy is dropped.
    engine = create_fresh_engine(database_url(), foreign_keys=False, pooled=False)
    try:
        with engine.connect() as connection:
            run_on(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

"""Fixtures: every database test runs on SQLite (a temporary file) and on PostgreSQL
(a fresh, uniquely named database on 127.0.0.1:5432, dropped afterwards)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pytest_alembic.plugin.fixtures import alembic_runner  # noqa: F401  (also without the plugin)
from sqlalchemy import text

from db import migrate
from db.engine import make_engine
from db.models import Base
from db.session import session_scope
from tests.support.pg_databases import create_database, drop_database

BACKENDS = ["sqlite", "postgresql"]


def pytest_configure(config: pytest.Config) -> None:
    # pytest-alembic's marker, for runs with its plugin off (-p no:pytest_alembic)
    config.addinivalue_line("markers", "alembic: Tests which use pytest-alembic.")


def new_database(backend: str, tmp_dir) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_dir / f'segbench-{uuid.uuid4().hex[:8]}.db'}"
    return create_database("segbench_test")


@pytest.fixture(params=BACKENDS)
def empty_url(request, tmp_path) -> Iterator[str]:
    """A fresh database without any schema."""
    url = new_database(request.param, tmp_path)
    yield url
    drop_database(url)


@pytest.fixture(scope="module", params=BACKENDS)
def migrated_url(request, tmp_path_factory) -> Iterator[str]:
    """One database per module and back end, upgraded to head through Alembic."""
    url = new_database(request.param, tmp_path_factory.mktemp("db"))
    migrate.upgrade(url)
    yield url
    drop_database(url)


@pytest.fixture
def db_url(migrated_url) -> str:
    """The module's database, emptied before each test."""
    with make_engine(migrated_url).begin() as connection:
        if connection.dialect.name == "postgresql":
            names = ", ".join(t.name for t in Base.metadata.sorted_tables)
            connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(Base.metadata.sorted_tables):
                connection.execute(table.delete())
    return migrated_url


@pytest.fixture
def session(db_url):
    with session_scope(db_url) as session:
        yield session

"""Fixtures: a fresh SQLite database per test (schema upgraded through Alembic), the
dashboard pointed at it through SEGBENCH_DATABASE_URL, and a populated variant."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from db import migrate
from db.session import dispose_engine
from tests.dashboard.dashboard_fixtures import (
    Populated,
    clear_settings,
    point_dashboard_at,
    populate,
)
from tests.support.pg_databases import create_database, drop_database


@pytest.fixture(autouse=True)
def _fresh_settings():
    yield
    clear_settings()


@pytest.fixture(scope="session")
def _template_db(tmp_path_factory) -> Path:
    """One upgraded empty database, copied for each test (Alembic runs once)."""
    path = tmp_path_factory.mktemp("template") / "empty.db"
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    dispose_engine(url)
    return path


@pytest.fixture(scope="session")
def _populated_template(tmp_path_factory, _template_db) -> tuple[Path, Populated]:
    path = tmp_path_factory.mktemp("populated") / "populated.db"
    shutil.copy(_template_db, path)
    url = f"sqlite:///{path}"
    populated = populate(url)
    dispose_engine(url)
    return path, populated


@pytest.fixture
def empty_url(tmp_path, monkeypatch, _template_db) -> str:
    path = tmp_path / "empty.db"
    shutil.copy(_template_db, path)
    url = f"sqlite:///{path}"
    point_dashboard_at(monkeypatch, url)
    yield url
    dispose_engine(url)


@pytest.fixture
def populated(tmp_path, monkeypatch, _populated_template) -> Populated:
    template, result = _populated_template
    path = tmp_path / "populated.db"
    shutil.copy(template, path)
    url = f"sqlite:///{path}"
    point_dashboard_at(monkeypatch, url)
    yield Populated(**{**result.__dict__, "url": url})
    dispose_engine(url)


@pytest.fixture(scope="session")
def browser():
    """One Chromium for every browser test of the session (launching it costs seconds)."""
    from playwright.sync_api import sync_playwright

    from tests.dashboard.browser_tools import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database at head (skipped when no server answers); PostgreSQL
    keeps NaN losses, which SQLite cannot store."""
    url = create_database("segbench_dash")
    migrate.upgrade(url)
    yield url
    drop_database(url)

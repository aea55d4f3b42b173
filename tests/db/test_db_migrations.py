"""Alembic is the only schema authority: migrations match the models, go up and down
on both back ends, and leave data alone when there is nothing to do."""

from __future__ import annotations

import pytest
from pytest_alembic.tests import (  # noqa: F401  (collected as tests here)
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy import func, inspect, select, text

from db import migrate
from db.engine import create_fresh_engine
from db.errors import DatabaseUnreachable, SchemaOutdated
from db.models import SCHEMA_REVISION, Base, Run
from db.session import ensure_schema, session_scope
from tests.support.runs import submit_runs


@pytest.fixture
def alembic_engine(empty_url):
    engine = create_fresh_engine(empty_url, foreign_keys=False, pooled=False)
    yield engine
    engine.dispose()


@pytest.fixture
def alembic_config(empty_url):
    return migrate.alembic_config(empty_url)


def table_names(url: str) -> set[str]:
    engine = create_fresh_engine(url, pooled=False)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_round_trip(empty_url):
    migrate.upgrade(empty_url)
    assert migrate.current_revision(empty_url) == migrate.head_revision()
    assert {t.name for t in Base.metadata.sorted_tables} <= table_names(empty_url)
    migrate.downgrade(empty_url, "base")
    assert migrate.current_revision(empty_url) is None
    assert table_names(empty_url) <= {"alembic_version"}
    migrate.upgrade(empty_url)
    assert migrate.current_revision(empty_url) == migrate.head_revision()


def test_upgrade_of_populated_database_keeps_its_rows(db_url):
    ids = submit_runs(db_url, 6)
    migrate.upgrade(db_url)
    with session_scope(db_url) as session:
        assert session.scalar(select(func.count(Run.id))) == 6
        assert sorted(session.scalars(select(Run.id))) == sorted(ids)


def test_embedded_sqlite_is_created_on_first_use(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    ensure_schema(url)
    assert migrate.current_revision(url) == migrate.head_revision()


def test_schema_from_an_unknown_revision_is_refused(empty_url):
    migrate.upgrade(empty_url)
    engine = create_fresh_engine(empty_url, pooled=False)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999_newer'"))
    engine.dispose()
    with pytest.raises(SchemaOutdated, match=r"9999_newer.*does not know"):
        ensure_schema(empty_url)


def test_downgraded_schema_asks_for_upgrade_or_is_upgraded(empty_url):
    migrate.upgrade(empty_url)
    migrate.downgrade(empty_url, "base")
    if empty_url.startswith("sqlite"):
        ensure_schema(empty_url)
        assert migrate.current_revision(empty_url) == migrate.head_revision()
    else:
        with pytest.raises(SchemaOutdated, match="run `segbench db upgrade"):
            ensure_schema(empty_url)


@pytest.mark.parametrize(
    "url",
    ["postgresql://someone:hunter2@127.0.0.1:1/segbench", "sqlite:////nonexistent/dir/x.db"],
)
def test_unreachable_database_is_one_clear_sentence(url):
    with pytest.raises(DatabaseUnreachable) as info, session_scope(url):
        pass
    message = str(info.value)
    assert "hunter2" not in message
    assert url.replace("hunter2", "***") in message
    assert message.count("\n") == 0 and message.endswith(".")


def test_models_name_the_head_revision():
    assert migrate.head_revision() == SCHEMA_REVISION

"""Session scopes, and the schema check that turns an old schema into one sentence."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from db import migrate
from db.engine import (
    dispose_shared_engine,
    is_sqlite,
    normalize_url,
    redact,
    session_factory,
    shared_key,
    stamped_revision,
)
from db.errors import SchemaOutdated
from db.models import SCHEMA_REVISION
from db.settings import get_settings

_schema_ok: set[str] = set()


def dispose_engine(url: str) -> None:
    """Close the shared engine of `url` and forget its schema check (tests drop their
    databases; a worker closes connections before its pool forks)."""
    dispose_shared_engine(url)
    _schema_ok.discard(shared_key(url))


def ensure_schema(url: str | None = None) -> None:
    """Make sure the schema of `url` is at the code's Alembic head.

    An embedded SQLite file is created or upgraded automatically; any other database
    (PostgreSQL) is only checked, and an old or missing schema raises SchemaOutdated
    telling the user to run `segbench db upgrade`. Checked once per URL and process.
    """
    url = normalize_url(url or get_settings().database_url)
    key = shared_key(url)  # a relative SQLite path: the file of the current folder
    if key in _schema_ok:
        return
    current = stamped_revision(url)
    if current == SCHEMA_REVISION:
        _schema_ok.add(key)
        return
    current, head = migrate.current_revision(url), migrate.head_revision()
    if current is not None and current not in migrate.known_revisions():
        raise SchemaOutdated(
            f"The database at {redact(url)} has schema revision {current}, which this "
            "version of segbench does not know (written by a newer version?); upgrade "
            "segbench or use another database."
        )
    if current != head:
        if is_sqlite(url):
            migrate.upgrade(url)
        elif current is None:
            raise SchemaOutdated(
                f"The database at {redact(url)} has no segbench schema yet; "
                f"run `segbench db upgrade --db {redact(url)}` first."
            )
        else:
            raise SchemaOutdated(
                f"The database at {redact(url)} has schema revision {current} but this "
                f"code expects {head}; run `segbench db upgrade --db {redact(url)}`."
            )
    _schema_ok.add(key)


@contextmanager
def session_scope(url: str | None = None, *, check_schema: bool = True) -> Iterator[Session]:
    """A session that commits on success and rolls back on any exception."""
    url = normalize_url(url or get_settings().database_url)
    if check_schema:
        ensure_schema(url)
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()

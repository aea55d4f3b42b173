"""Alembic, driven from code: `segbench db upgrade` works from any working directory."""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import exc as sa_exc

import migrations
from db.engine import check_connection, create_fresh_engine, normalize_url, unreachable
from db.settings import get_settings

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent


def alembic_config(url: str | None = None) -> Config:
    """An Alembic Config for the packaged migrations; env.py reads the URL from it."""
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = normalize_url(url or get_settings().database_url)
    return config


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The revision the code's models correspond to."""
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"migrations/ must have exactly one head, found {heads}.")
    return heads[0]


@lru_cache(maxsize=1)
def known_revisions() -> frozenset[str]:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return frozenset(r.revision for r in script.walk_revisions())


def current_revision(url: str) -> str | None:
    """The revision stamped in the database (None for an empty database)."""
    engine = create_fresh_engine(url, pooled=False)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as error:
        raise unreachable(url, error) from None
    finally:
        engine.dispose()


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Upgrade the schema of `url` to `revision` (idempotent); a URL that does not
    answer raises DatabaseUnreachable."""
    url = url or get_settings().database_url
    check_connection(url)
    try:
        command.upgrade(alembic_config(url), revision)
    except (sa_exc.OperationalError, sa_exc.IntegrityError, sa_exc.ProgrammingError):
        # Several processes upgrading a fresh database at once: the losers' CREATE
        # TABLE fails (a lock on SQLite, a duplicate on PostgreSQL) and they find the
        # winner's schema, once its transaction is committed.
        if revision == "head" and _wait_for_head(url, seconds=30):
            return
        raise


def downgrade(url: str | None = None, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def _wait_for_head(url: str, *, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if _at_head(url):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def _at_head(url: str) -> bool:
    try:
        return current_revision(url) == head_revision()
    except Exception:
        return False

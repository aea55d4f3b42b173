"""Engines (one per URL) and the checks that turn a bad URL into one clear sentence."""

from __future__ import annotations

import math
import sqlite3
import threading
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, make_url, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from db.errors import DatabaseUnreachable
from db.settings import get_settings

SQLITE_BUSY_TIMEOUT_S = 30
PG_CONNECT_TIMEOUT_S = 10

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_sessionmakers: dict[str, sessionmaker[Session]] = {}


def normalize_url(url: str) -> str:
    """PostgreSQL URLs go through psycopg 3; everything else is left as given."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def redact(url: str) -> str:
    """The URL with its password hidden, for messages."""
    try:
        shown = make_url(normalize_url(url)).render_as_string(hide_password=True)
        return shown.replace("postgresql+psycopg://", "postgresql://", 1)
    except Exception:
        return "<unparseable database URL>"


def is_sqlite(url: str) -> bool:
    return normalize_url(url).startswith("sqlite")


def _on_sqlite_connect(foreign_keys: bool):
    def configure(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        cursor = dbapi_connection.cursor()
        # WAL lets the dashboard read while a worker writes; busy_timeout makes a writer
        # wait for the lock instead of failing at once.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        try:
            cursor.execute("SELECT sqrt(4.0)")
        except sqlite3.OperationalError:  # SQLite built without math functions
            dbapi_connection.create_function("sqrt", 1, _sqrt, deterministic=True)
        cursor.close()

    return configure


def _sqrt(x: float | None) -> float | None:
    return None if x is None or x < 0 else math.sqrt(x)


def create_fresh_engine(url: str, *, foreign_keys: bool = True, pooled: bool = True) -> Engine:
    """A new engine with segbench's connection settings (use make_engine to share one).

    Migrations use ``foreign_keys=False`` on SQLite, because Alembic's batch mode
    recreates tables and a cascading foreign key would delete the child rows.
    """
    url = normalize_url(url)
    kwargs: dict = {} if pooled else {"poolclass": NullPool}
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
            **kwargs,
        )
        event.listen(engine, "connect", _on_sqlite_connect(foreign_keys))
        return engine
    connect_args = {}
    if url.startswith("postgresql"):
        connect_args = {"connect_timeout": PG_CONNECT_TIMEOUT_S, "application_name": "segbench"}
    return create_engine(url, connect_args=connect_args, pool_pre_ping=True, **kwargs)


def shared_key(url: str) -> str:
    """The URL the shared engines are kept under: a relative SQLite path made absolute
    against the current folder, so that a process that changes folder never writes
    through an engine opened for the file of another folder."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        parsed = make_url(url)
        database = parsed.database
        if database and database != ":memory:" and not Path(database).is_absolute():
            return parsed.set(database=str(Path(database).resolve())).render_as_string(False)
    return url


def session_factory(url: str) -> sessionmaker[Session]:
    """The sessionmaker bound to the shared engine of `url`."""
    url = shared_key(url)
    make_engine(url)
    return _sessionmakers[url]


def make_engine(url: str | None = None) -> Engine:
    """The shared engine for `url` (default: the settings' database_url)."""
    url = shared_key(url or get_settings().database_url)
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = create_fresh_engine(url)
            _sessionmakers[url] = sessionmaker(engine, expire_on_commit=False)
        return engine


def dispose_shared_engine(url: str) -> None:
    """Close the shared engine of `url` and forget it."""
    url = shared_key(url)
    with _lock:
        engine = _engines.pop(url, None)
        _sessionmakers.pop(url, None)
    if engine is not None:
        engine.dispose()


def unreachable(url: str, error: BaseException) -> DatabaseUnreachable:
    """The one-sentence error for a database that does not answer."""
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()
    reason = reason[0].rstrip(".") if reason else type(error).__name__
    if is_sqlite(url):
        return DatabaseUnreachable(
            f"Cannot open the SQLite database {redact(url)} ({reason}); "
            "check that its directory exists and is writable."
        )
    return DatabaseUnreachable(
        f"Cannot connect to the database at {redact(url)} ({reason}); check that the "
        "server is running and that host, port, user, password and database name are right."
    )


def check_connection(url: str) -> None:
    """Raise DatabaseUnreachable unless `url` answers a trivial query."""
    stamped_revision(url)


def stamped_revision(url: str) -> str | None:
    """The Alembic revision stamped in the database (None: no schema); raises
    DatabaseUnreachable when `url` does not answer."""
    try:
        with make_engine(url).connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as error:
        raise unreachable(url, error) from None
    except sa_exc.DatabaseError as error:  # e.g. a file that is not an SQLite database
        reason = (str(error.orig or error).strip().splitlines() or ["not a database"])[0]
        raise DatabaseUnreachable(
            f"{redact(url)} is not a segbench database ({reason}); expected a SQLite file "
            "written by segbench, or a PostgreSQL URL."
        ) from None
    except sa_exc.ArgumentError as error:
        raise DatabaseUnreachable(
            f"The database URL {redact(url)} is not valid ({error}); expected e.g. "
            "sqlite:///segbench.db or postgresql://user:password@host:5432/segbench."
        ) from None

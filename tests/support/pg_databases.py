"""Fresh PostgreSQL databases for tests, one module for every test folder: create one
per test or module on the server at SEGBENCH_TEST_PG, drop it afterwards; skip when
no server answers."""

from __future__ import annotations

import os
import uuid
from functools import cache

import psycopg
import pytest

PG_SERVER = os.environ.get("SEGBENCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@cache
def postgres_available() -> bool:
    try:
        psycopg.connect(PG_SERVER, connect_timeout=3).close()
        return True
    except psycopg.Error:
        return False


def admin(sql: str) -> None:
    with psycopg.connect(PG_SERVER, autocommit=True) as connection:
        connection.execute(sql)


def create_database(prefix: str = "segbench_test") -> str:
    """URL of a new empty database (the test is skipped without a server)."""
    if not postgres_available():
        pytest.skip(f"PostgreSQL is not reachable at {PG_SERVER}")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin(f'CREATE DATABASE "{name}"')
    return PG_SERVER.rsplit("/", 1)[0] + f"/{name}"


def drop_database(url: str) -> None:
    """Close this process's connections to `url`, then drop it."""
    from db.session import dispose_engine

    dispose_engine(url)
    if url.startswith("postgresql"):
        admin(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')

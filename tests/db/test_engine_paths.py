"""A relative SQLite URL names the file in the current folder, also for a process that
changes folder: the shared engines are kept by absolute path (once, an in-process
command wrote into the database of an earlier test's folder)."""

from __future__ import annotations

from sqlalchemy import text

from db import migrate
from db.engine import dispose_shared_engine, make_engine


def test_a_relative_sqlite_url_follows_the_current_folder(tmp_path, monkeypatch):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        migrate.upgrade("sqlite:///segbench.db")
        with make_engine("sqlite:///segbench.db").begin() as connection:
            connection.execute(text("CREATE TABLE here (name TEXT)"))
            connection.execute(text("INSERT INTO here VALUES (:n)"), {"n": name})
    for name in ("a", "b"):
        monkeypatch.chdir(tmp_path / name)
        with make_engine("sqlite:///segbench.db").connect() as connection:
            assert connection.execute(text("SELECT name FROM here")).scalars().all() == [name]
        dispose_shared_engine("sqlite:///segbench.db")

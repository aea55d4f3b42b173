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


def test_the_schema_check_follows_the_current_folder(tmp_path, monkeypatch):
    """A schema checked in one folder is not taken as checked in another: the second
    folder's empty file is created at head on first use (the README tour once failed
    with "no such table" after an earlier test in the same process)."""
    from db.session import dispose_engine, session_scope

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        with session_scope("sqlite:///segbench.db") as session:
            assert session.execute(text("SELECT count(*) FROM sweeps")).scalar_one() == 0
        dispose_shared_engine("sqlite:///segbench.db")
    dispose_engine("sqlite:///segbench.db")

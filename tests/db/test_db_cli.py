"""`segbench db upgrade` and `segbench status` as a user runs them: a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from db import migrate
from db.queries import STATUS_KEYS
from tests.support.runs import submit_runs

ENTRY = [sys.executable, "-m", "worker.cli"]  # what the `segbench` script runs


def segbench(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*ENTRY, *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


def test_status_json_has_the_contract_keys(db_url):
    ids = submit_runs(db_url, 3)
    submit_runs(db_url, 2, sweep="other")
    result = segbench("status", "--sweep", "test-sweep", "--db", db_url, "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["id"] for row in rows] == ids
    assert all(list(row) == list(STATUS_KEYS) for row in rows)
    assert rows[0]["status"] == "queued" and rows[0]["dice"] is None


def test_db_upgrade_works_from_any_directory(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    result = segbench("db", "upgrade", "--db", url, cwd=tmp_path / "..")
    assert result.returncode == 0, result.stderr
    assert migrate.current_revision(url) == migrate.head_revision()
    table = segbench("status", "--db", url)
    assert table.returncode == 0 and "queued: 0" in table.stdout


def test_unreachable_database_is_one_line_and_exit_1():
    result = segbench("status", "--db", "postgresql://u:pw@127.0.0.1:1/x", "--format", "json")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "127.0.0.1:1" in result.stderr and ":pw@" not in result.stderr

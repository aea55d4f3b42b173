"""`segbench dashboard`: the command line it runs and the options it refuses."""

from __future__ import annotations

from typer.testing import CliRunner

from worker.cli import load_commands
from worker.cli.dashboard import APP, dashboard_environment, streamlit_command


def test_streamlit_command_binds_to_localhost_headless():
    command = streamlit_command(8600)
    assert command[1:4] == ["-m", "streamlit", "run"]
    assert command[4] == str(APP) and APP.is_file()
    options = dict(zip(command[5::2], command[6::2], strict=True))
    assert options["--server.address"] == "127.0.0.1"
    assert options["--server.port"] == "8600"
    assert options["--server.headless"] == "true"


def test_database_url_reaches_the_dashboard(monkeypatch):
    monkeypatch.setenv("SEGBENCH_DATABASE_URL", "sqlite:///other.db")
    assert dashboard_environment(None)["SEGBENCH_DATABASE_URL"] == "sqlite:///other.db"
    env = dashboard_environment("postgresql://u@h/db")
    assert env["SEGBENCH_DATABASE_URL"] == "postgresql://u@h/db"


def test_bad_port_is_one_sentence():
    result = CliRunner().invoke(load_commands(), ["dashboard", "--port", "70000"])
    assert result.exit_code == 1
    assert "port must be between 1 and 65535, got 70000" in result.output

"""`segbench dashboard`: the command line it runs, the port it chooses and the options
it refuses. (Never invoked here with a port it would serve on: the command replaces
its process with Streamlit.) Under a second."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from typer.testing import CliRunner

from worker.cli import load_commands
from worker.cli.dashboard import (
    APP,
    DEFAULT_PORT,
    choose_port,
    dashboard_environment,
    port_is_free,
    streamlit_command,
)


@contextmanager
def listening(port: int = 0) -> Iterator[int]:
    """A socket listening on 127.0.0.1:port (0: any free port), as a server would."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:  # taken already (a `make run` on this machine): just as good
            yield port
            return
        s.listen()
        yield s.getsockname()[1]


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


def test_a_taken_default_port_moves_to_the_next_free_one_and_says_so():
    with listening(DEFAULT_PORT):
        assert not port_is_free(DEFAULT_PORT)
        port, note = choose_port(None)
    assert port != DEFAULT_PORT and DEFAULT_PORT < port <= DEFAULT_PORT + 20
    assert note.startswith(f"port {DEFAULT_PORT} is taken") and f"serving on {port}" in note
    assert "--port" in note


def test_a_free_port_is_served_as_asked():
    with listening() as port:
        pass  # closed again: free
    assert port_is_free(port)
    assert choose_port(port) == (port, None)


def test_a_taken_port_given_with_port_is_one_sentence_naming_a_free_one():
    with listening() as port:
        result = CliRunner().invoke(load_commands(), ["dashboard", "--port", str(port)])
    assert result.exit_code == 1
    text = result.output.strip()
    assert text.count("\n") == 0 and text.startswith(f"error: port {port} on 127.0.0.1 is taken")
    assert "pass another --port" in text and "is free)" in text

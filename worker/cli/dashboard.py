"""`segbench dashboard`: the Streamlit dashboard on 127.0.0.1."""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from worker.cli.app import app
from worker.cli.options import DbOpt, fail

# The dashboard is started as a Streamlit script, not imported: the CLI sits above it.
APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


def streamlit_command(port: int, address: str = "127.0.0.1") -> list[str]:
    """The `streamlit run` command line of the dashboard."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.address",
        address,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
        # An error shows as its sentence; details (paths, tracebacks) stay in the log.
        "--client.showErrorDetails",
        "none",
    ]


DEFAULT_PORT = 8501
PORTS_TRIED = 20  # 8501 taken (by `make run`, say): the next free one of 8502..8521


def port_is_free(port: int, address: str = "127.0.0.1") -> bool:
    """Whether nothing listens on address:port (bound as Streamlit binds: SO_REUSEADDR,
    so a closed connection's TIME_WAIT does not count as taken). Other errors (a
    privileged port, an address not of this machine) are left to Streamlit to say."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError as error:
            return error.errno != errno.EADDRINUSE
    return True


def choose_port(port: int | None, address: str = "127.0.0.1") -> tuple[int, str | None]:
    """The port to serve on and, when it is not the one asked for, the sentence that
    says why. --port given and taken: one sentence naming a free one, exit 1."""
    if port is not None:
        if not 0 < port < 65536:
            fail(f"port must be between 1 and 65535, got {port}.")
        if not port_is_free(port, address):
            free = next_free(port + 1, address)
            hint = f" ({free} is free)" if free else ""
            fail(
                f"port {port} on {address} is taken (another dashboard, or `make run`?); "
                f"pass another --port{hint}."
            )
        return port, None
    if port_is_free(DEFAULT_PORT, address):
        return DEFAULT_PORT, None
    free = next_free(DEFAULT_PORT + 1, address)
    if free is None:
        fail(
            f"ports {DEFAULT_PORT}-{DEFAULT_PORT + PORTS_TRIED} on {address} are all taken; "
            "pass a free one with --port."
        )
    return free, (
        f"port {DEFAULT_PORT} is taken (another dashboard, or `make run`?): serving on {free}; "
        "--port N chooses"
    )


def next_free(start: int, address: str) -> int | None:
    """The first free port of start .. start + PORTS_TRIED - 1 (None: all taken)."""
    stop = min(start + PORTS_TRIED, 65536)
    return next((p for p in range(start, stop) if port_is_free(p, address)), None)


def dashboard_environment(db: str | None) -> dict[str, str]:
    """This process's environment, with the database URL the dashboard should read."""
    env = dict(os.environ)
    if db:
        env["SEGBENCH_DATABASE_URL"] = db
    return env


@app.command()
def dashboard(
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            help=f"Port to serve on (default {DEFAULT_PORT}, or the next free one when it is "
            "taken).",
            show_default=False,
        ),
    ] = None,
    db: DbOpt = None,
    address: Annotated[
        str, typer.Option("--address", help="Address to bind (default: this machine only).")
    ] = "127.0.0.1",
) -> None:
    """Serve the dashboard (launch, live progress, leaderboard, figures) until Ctrl-C."""
    if not APP.is_file():
        fail(f"the dashboard is missing ({APP} not found).")
    if address not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(
            f"warning: serving on {address}; anyone who can reach it can read the results "
            "(set SEGBENCH_DASHBOARD_PASSWORD to protect launching, cancelling, retrying).",
            err=True,
        )
    port, note = choose_port(port, address)
    if note:
        typer.echo(note, err=True)
    typer.echo(f"segbench dashboard on http://{address}:{port}", err=True)
    command = streamlit_command(port, address)
    # Replace this process, so stopping `segbench dashboard` stops Streamlit too.
    os.execve(command[0], command, dashboard_environment(db))

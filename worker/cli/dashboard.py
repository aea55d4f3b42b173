"""`segbench dashboard`: the Streamlit dashboard on 127.0.0.1."""

from __future__ import annotations

import os
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


def dashboard_environment(db: str | None) -> dict[str, str]:
    """This process's environment, with the database URL the dashboard should read."""
    env = dict(os.environ)
    if db:
        env["SEGBENCH_DATABASE_URL"] = db
    return env


@app.command()
def dashboard(
    port: Annotated[int, typer.Option("--port", help="Port to serve on.")] = 8501,
    db: DbOpt = None,
    address: Annotated[
        str, typer.Option("--address", help="Address to bind (default: this machine only).")
    ] = "127.0.0.1",
) -> None:
    """Serve the dashboard (launch, live progress, leaderboard, figures) until Ctrl-C."""
    if not 0 < port < 65536:
        fail(f"port must be between 1 and 65535, got {port}.")
    if not APP.is_file():
        fail(f"the dashboard is missing ({APP} not found).")
    if address not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(
            f"warning: serving on {address}; anyone who can reach it can read the results "
            "(set SEGBENCH_DASHBOARD_PASSWORD to protect launching, cancelling, retrying).",
            err=True,
        )
    typer.echo(f"segbench dashboard on http://{address}:{port}", err=True)
    command = streamlit_command(port, address)
    # Replace this process, so stopping `segbench dashboard` stops Streamlit too.
    os.execve(command[0], command, dashboard_environment(db))

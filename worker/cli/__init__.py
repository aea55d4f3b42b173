"""The `segbench` command: the front door for everything the dashboard can do.

One module per command group; worker.cli.options holds what they share (--db,
--format, the grid filters, the mapping of errors to one sentence and exit 1).
Modules import torch, Celery and the database only inside the commands that need
them, so `segbench grid` and `segbench --help` start in a fraction of a second.
"""

from __future__ import annotations

import typer

from worker.cli import (  # noqa: F401 - each module registers its commands on `app`
    dashboard,
    data,
    db,
    doctor,
    grid,
    inference,
    queue,
    report,
    results,
    train,
    up,
    weights,
    workers,
)
from worker.cli.app import app


def load_commands() -> typer.Typer:
    """The app with every command registered."""
    return app


def main() -> None:
    app()

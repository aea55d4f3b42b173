"""`segbench db upgrade` and `segbench status`: the database side of the command."""

from __future__ import annotations

import json
from enum import StrEnum

import typer
from rich.console import Console
from rich.table import Table

from worker.cli import app

db_app = typer.Typer(help="The database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")

DB_OPTION = typer.Option(
    None, "--db", help="Database URL (default: SEGBENCH_DATABASE_URL, else sqlite:///segbench.db)."
)


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


def _fail(error: Exception) -> typer.Exit:
    typer.echo(str(error), err=True)
    return typer.Exit(1)


def _url(db: str | None) -> str:
    from db.settings import get_settings

    return db or get_settings().database_url


@db_app.command("upgrade")
def upgrade(db: str | None = DB_OPTION) -> None:
    """Create the schema or upgrade it to the code's revision (Alembic upgrade head)."""
    from db import migrate
    from db.errors import DatabaseError
    from db.session import redact

    url = _url(db)
    try:
        migrate.upgrade(url)
    except DatabaseError as error:
        raise _fail(error) from None
    typer.echo(f"Database {redact(url)} is at schema revision {migrate.head_revision()}.", err=True)


def _cell(value: object, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


@app.command("status")
def status(
    sweep: str | None = typer.Option(None, "--sweep", help="Only the runs of this sweep."),
    db: str | None = DB_OPTION,
    output: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table or json."),
) -> None:
    """The runs, their state, epoch progress and test scores."""
    from db.errors import DatabaseError
    from db.queries import queue_counts, status_rows
    from db.session import session_scope

    try:
        with session_scope(_url(db)) as session:
            rows = status_rows(session, sweep=sweep)
            counts = queue_counts(session, sweep=sweep)
    except DatabaseError as error:
        raise _fail(error) from None
    if output is OutputFormat.json:
        typer.echo(json.dumps(rows))
        return
    table = Table(title=f"Runs of sweep {sweep}" if sweep else "Runs")
    for key in ("id", "experiment", "architecture", "encoder", "init", "status", "epoch"):
        table.add_column(key, justify="right" if key in ("id", "epoch") else "left")
    for key in ("dice", "sensitivity", "specificity"):
        table.add_column(key, justify="right")
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["experiment"],
            row["architecture"],
            row["encoder"],
            row["init"],
            row["status"],
            f"{row['epoch']}/{row['epochs']}",
            _cell(row["dice"]),
            _cell(row["sensitivity"]),
            _cell(row["specificity"]),
        )
    console = Console()
    console.print(table)
    console.print("  ".join(f"{state}: {n}" for state, n in counts.items()))

"""`segbench db upgrade` and `segbench status`: the database side of the command."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from db import migrate, queries
from db.session import redact, session_scope
from worker.cli.app import app
from worker.cli.options import (
    DbOpt,
    FormatOpt,
    SweepOpt,
    check_format,
    database_url,
    existing_database_url,
    print_json,
    user_errors,
)

db_app = typer.Typer(help="The database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def upgrade(db: DbOpt = None) -> None:
    """Create the schema or upgrade it to the code's revision (Alembic upgrade head)."""
    url = database_url(db)
    with user_errors():
        migrate.upgrade(url)
    typer.echo(f"Database {redact(url)} is at schema revision {migrate.head_revision()}.", err=True)


def _cell(value: object, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


@app.command("status")
def status(
    sweep: SweepOpt = None,
    db: DbOpt = None,
    format: FormatOpt = "table",
) -> None:
    """The runs, their state, epoch progress and test scores."""
    check_format(format)
    with user_errors(), session_scope(existing_database_url(db)) as session:
        rows = queries.status_rows(session, sweep=sweep)
        counts = queries.queue_counts(session, sweep=sweep)
    if format == "json":
        print_json(rows)
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

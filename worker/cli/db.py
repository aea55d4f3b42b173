"""`segbench db upgrade` and `segbench status`: the database side of the command."""

from __future__ import annotations

from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from db import metrics as registry
from db import migrate, queries
from db.grid import EXPERIMENT_SPECS
from db.metrics import Metric
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
from worker.cli.workers import eta_line, progress_line

db_app = typer.Typer(help="The database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def upgrade(db: DbOpt = None) -> None:
    """Create the schema or upgrade it to the code's revision (Alembic upgrade head)."""
    url = database_url(db)
    with user_errors():
        migrate.upgrade(url)
    typer.echo(f"Database {redact(url)} is at schema revision {migrate.head_revision()}.", err=True)


SHORT_EXPERIMENT = {e.name: e.short for e in EXPERIMENT_SPECS.values()}
WIDE_COLUMNS = (
    "id",
    "experiment",
    "architecture",
    "encoder",
    "init",
    "seed",
    "precision",
    "status",
    "epoch",
)
WideOpt = Annotated[
    bool, typer.Option("--wide", help="Every column with full names (needs ~140 columns).")
]


def _metric_header(metric: Metric) -> str:
    return f"{metric.label} {metric.unit}"


def _short_table(rows: list[dict], title: str) -> Table:
    """Fits 80 columns: short experiment names, Dice only (--wide shows the rest)."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for key in ("id", "exp", "arch", "encoder", "init", "status", "epoch"):
        table.add_column(key, justify="right" if key in ("id", "epoch") else "left")
    dice = registry.get("dice")
    table.add_column(_metric_header(dice), justify="right")
    for row in rows:
        table.add_row(
            str(row["id"]),
            SHORT_EXPERIMENT.get(row["experiment"], row["experiment"]),
            row["architecture"],
            row["encoder"],
            row["init"],
            row["status"],
            f"{row['epoch']}/{row['epochs']}",
            dice.fmt(row["dice"], missing="-"),
        )
    return table


def _wide_table(rows: list[dict], title: str, values: dict[int, dict]) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for key in WIDE_COLUMNS:
        table.add_column(key, justify="right" if key in ("id", "seed", "epoch") else "left")
    metrics = registry.select(kind="test", compact=True)
    for m in metrics:
        table.add_column(_metric_header(m), justify="right")
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["experiment"],
            row["architecture"],
            row["encoder"],
            row["init"],
            str(row["seed"]),
            row["train_precision"],
            row["status"],
            f"{row['epoch']}/{row['epochs']}",
            *(m.cell(values.get(row["id"], {}), missing="-") for m in metrics),
        )
    return table


def protocol_lines(rows: list[dict]) -> list[str]:
    """Per sweep shown: its protocol hash, training precision and seeds."""
    sweeps: dict[str, dict] = {}
    for row in rows:
        seen = sweeps.setdefault(row["sweep"], {"row": row, "seeds": set()})
        seen["seeds"].add(row["seed"])
    return [
        f"{name}: protocol {s['row']['protocol_hash']}, {s['row']['train_precision']} "
        f"training, seed(s) {', '.join(map(str, sorted(s['seeds'])))}"
        for name, s in sweeps.items()
    ]


@app.command("status")
def status(
    sweep: SweepOpt = None,
    db: DbOpt = None,
    format: FormatOpt = "table",
    wide: WideOpt = False,
) -> None:
    """The runs, their state, epoch progress and test scores (in percent), and the time left."""
    check_format(format)
    with user_errors(), session_scope(existing_database_url(db)) as session:
        rows = queries.status_rows(session, sweep=sweep)
        values = queries.summary_metrics(session, run_ids=[r["id"] for r in rows]) if wide else {}
        counts = queries.queue_counts(session, sweep=sweep)
        eta = queries.sweep_eta(session, sweep=sweep)
    if format == "json":
        print_json(rows)
        return
    title = f"Runs of sweep {sweep}" if sweep else "Runs"
    console = Console()
    console.print(_wide_table(rows, title, values) if wide else _short_table(rows, title))
    for line in protocol_lines(rows):
        console.print(line)
    console.print("  ".join(f"{state}: {n}" for state, n in counts.items()))
    if counts.get("queued", 0) or counts.get("running", 0):
        console.print(progress_line(eta))
        console.print(eta_line(eta))

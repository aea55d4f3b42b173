"""`segbench db upgrade` and `segbench status`: the database side of the command."""

from __future__ import annotations

from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from db import metrics as registry
from db import migrate, queries
from db.errors import check_choice
from db.grid import SHORT_EXPERIMENT
from db.metrics import Metric
from db.models import RUN_STATUSES
from db.session import redact, session_scope
from worker.cli.app import app
from worker.cli.options import (
    DbOpt,
    ExperimentOpt,
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


WIDE_COLUMNS = (
    "id",
    "sweep",
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


# two spaces between columns, none at the edges
COMPACT = {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": False, "collapse_padding": True}


def _short_table(rows: list[dict], title: str, width: int = 80) -> Table:
    """Fits 80 columns: short experiment names (those the filters take too), Dice only
    (--wide shows the rest); a sweep column when the runs shown come from more than
    one sweep (its names cut to what `width` leaves, at least 6 characters), else the
    title names their sweep."""
    sweeps = list(dict.fromkeys(row["sweep"] for row in rows))
    with_sweep = len(sweeps) > 1
    if len(sweeps) == 1 and "sweep" not in title:
        title = f"{title} of sweep {sweeps[0]}"
    table = Table(title=title, **COMPACT)
    dice = registry.get("dice")
    keys = (
        "id",
        "sweep",
        "exp",
        "arch",
        "encoder",
        "init",
        "status",
        "epoch",
        _metric_header(dice),
    )
    rows_cells = [_short_cells(row, dice) for row in rows]
    others = sum(
        max([len(key), *(len(c[i]) for c in rows_cells)]) for i, key in enumerate(keys) if i != 1
    )
    sweep_width = max(6, width - others - 2 * (len(keys) - 1))
    for i, key in enumerate(keys):
        if key == "sweep" and not with_sweep:
            continue
        table.add_column(
            key,
            justify="right" if key == "id" or i >= len(keys) - 2 else "left",
            max_width=sweep_width if key == "sweep" else None,
            overflow="ellipsis",
            no_wrap=key == "sweep",
        )
    for cells in rows_cells:
        table.add_row(*(cells if with_sweep else cells[:1] + cells[2:]))
    return table


def _short_cells(row: dict, dice: Metric) -> list[str]:
    return [
        str(row["id"]),
        row["sweep"],
        SHORT_EXPERIMENT.get(row["experiment"], row["experiment"]),
        row["architecture"],
        row["encoder"],
        row["init"],
        row["status"],
        f"{row['epoch']}/{row['epochs']}",
        dice.fmt(row["dice"], missing="-"),
    ]


def _wide_table(rows: list[dict], title: str, values: dict[int, dict]) -> Table:
    table = Table(title=title, **COMPACT)
    for key in WIDE_COLUMNS:
        table.add_column(key, justify="right" if key in ("id", "seed", "epoch") else "left")
    metrics = registry.select(kind="test", compact=True)
    for m in metrics:
        table.add_column(_metric_header(m), justify="right")
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["sweep"],
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


StatusOpt = Annotated[
    list[str] | None,
    typer.Option("--status", "-s", help=f"Only runs in this state: {', '.join(RUN_STATUSES)}."),
]


def check_statuses(values: list[str] | None) -> list[str] | None:
    if values:
        for value in values:
            check_choice("status", value, RUN_STATUSES)
    return values


def title_of(sweep: str | None, experiment: list[str] | None, states: list[str] | None) -> str:
    title = f"Runs of sweep {sweep}" if sweep else "Runs"
    parts = [", ".join(SHORT_EXPERIMENT.get(x, x) for x in experiment)] if experiment else []
    parts += [" or ".join(states)] if states else []
    return f"{title} ({'; '.join(parts)})" if parts else title


@app.command("status")
def status(
    sweep: SweepOpt = None,
    experiment: ExperimentOpt = None,
    state: StatusOpt = None,
    db: DbOpt = None,
    format: FormatOpt = "table",
    wide: WideOpt = False,
) -> None:
    """The runs, their state, epoch progress and test scores (in percent), and the time left.

    Filters combine: --sweep S, --experiment E (full or short name, repeatable),
    --status S (repeatable)."""
    check_format(format)
    with user_errors():
        check_statuses(state)
        with session_scope(existing_database_url(db)) as session:
            rows = [
                r
                for r in queries.status_rows(session, sweep=sweep)
                if (not experiment or r["experiment"] in experiment)
                and (not state or r["status"] in state)
            ]
            ids = [r["id"] for r in rows]
            values = queries.summary_metrics(session, run_ids=ids) if wide else {}
            counts = queries.queue_counts(session, sweep=sweep)
            eta = queries.sweep_eta(session, sweep=sweep)
    if format == "json":
        print_json(rows)
        return
    console = Console()
    title = title_of(sweep, experiment, state)
    if wide:
        console.print(_wide_table(rows, title, values))
    else:
        console.print(_short_table(rows, title, console.width))
    for line in protocol_lines(rows):
        console.print(line)
    line = "  ".join(f"{name}: {n}" for name, n in counts.items())
    if experiment or state:
        line = f"shown: {len(rows)} of {sum(counts.values())} run(s);  {line}"
    console.print(line)
    if counts.get("queued", 0) or counts.get("running", 0):
        console.print(progress_line(eta))
        console.print(eta_line(eta))

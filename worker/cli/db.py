"""`segbench db upgrade` and `segbench status`: the database side of the command."""

from __future__ import annotations

from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from db import migrate, queries
from db.errors import check_choice
from db.grid import SHORT_EXPERIMENT
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
    keys = ("id", "sweep", "exp", "arch", "encoder", "init", "status", "epoch", "dice %")
    rows_cells = [_short_cells(row) for row in rows]
    others = sum(
        max([len(key), *(len(c[i]) for c in rows_cells)]) for i, key in enumerate(keys) if i != 1
    )
    sweep_width = max(6, width - others - 2 * (len(keys) - 1))
    for key in keys if with_sweep else [k for k in keys if k != "sweep"]:
        table.add_column(
            key,
            justify="right" if key in ("id", "epoch", "dice %") else "left",
            max_width=sweep_width if key == "sweep" else None,
            overflow="ellipsis",
            no_wrap=key == "sweep",
        )
    for cells in rows_cells:
        table.add_row(*(cells if with_sweep else cells[:1] + cells[2:]))
    return table


def _short_cells(row: dict) -> list[str]:
    return [
        str(row["id"]),
        row["sweep"],
        SHORT_EXPERIMENT.get(row["experiment"], row["experiment"]),
        row["architecture"],
        row["encoder"],
        row["init"],
        row["status"],
        f"{row['epoch']}/{row['epochs']}",
        _cell(row["dice"]),
    ]


def _wide_table(rows: list[dict], title: str) -> Table:
    table = Table(title=title, **COMPACT)
    for key in WIDE_COLUMNS:
        table.add_column(key, justify="right" if key in ("id", "seed", "epoch") else "left")
    for key in ("dice %", "sens %", "spec %", "NSD %", "HD95 mm"):
        table.add_column(key, justify="right")
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
            _cell(row["dice"]),
            _cell(row["sensitivity"]),
            _cell(row["specificity"]),
            _cell(row["nsd"]),
            _cell(row["hd95"]),
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


def no_worker_line(counts: dict[str, int]) -> str:
    """What waits for a worker when none is alive: queued runs, or running runs whose
    worker died (they go back to the queue when their lease expires)."""
    queued, running = counts.get("queued", 0), counts.get("running", 0)
    waiting = []
    if queued:
        waiting.append(f"{queued} queued run(s) wait for one")
    if running:
        waiting.append(
            f"{running} run(s) marked running go back to the queue when their lease expires"
        )
    return f"No worker is alive: {'; '.join(waiting)}; start one with `segbench worker`."


def eta_line(eta: dict, counts: dict[str, int]) -> str:
    """The sweep's time left, from measured seconds per epoch and the live workers."""
    from worker.cli.workers import duration

    if eta["remaining_epochs"] == 0:
        return "Nothing left to train."
    left = f"{eta['remaining_epochs']:,} epoch(s) left"
    if eta["workers"] == 0:
        return f"{left}. {no_worker_line(counts)}"
    if eta["seconds_per_epoch"] is None:
        return f"{left}; time left: known once an epoch has finished."
    return (
        f"{left} at {eta['seconds_per_epoch']:.1f} s per epoch on {eta['workers']} live "
        f"worker(s) ({eta['slots']} run(s) at once): about {duration(eta['eta_seconds'])} left."
    )


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
            rows = queries.status_rows(session, sweep=sweep)
            counts = queries.queue_counts(session, sweep=sweep)
            eta = queries.sweep_eta(session, sweep=sweep)
    rows = [
        r
        for r in rows
        if (not experiment or r["experiment"] in experiment) and (not state or r["status"] in state)
    ]
    if format == "json":
        print_json(rows)
        return
    console = Console()
    title = title_of(sweep, experiment, state)
    console.print(_wide_table(rows, title) if wide else _short_table(rows, title, console.width))
    for line in protocol_lines(rows):
        console.print(line)
    line = "  ".join(f"{name}: {n}" for name, n in counts.items())
    if experiment or state:
        line = f"shown: {len(rows)} of {sum(counts.values())} run(s);  {line}"
    console.print(line)
    if counts.get("queued", 0) or counts.get("running", 0):
        console.print(eta_line(eta, counts))

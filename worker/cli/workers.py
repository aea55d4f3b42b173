"""`segbench workers`: the workers alive now (their heartbeat is recent)."""

from __future__ import annotations

from datetime import datetime

import typer

from db import queries
from db.session import session_scope
from worker.cli.app import app
from worker.cli.options import DbOpt, FormatOpt, check_format, database_url, print_json, user_errors

NO_WORKER = "No worker is alive; queued runs wait until a worker starts: `segbench worker`."


def since(value: datetime | None, now: datetime) -> str:
    """`value` as an age: 42 s, 5 min, 3 h 10 min, 2 d 4 h."""
    if value is None:
        return "-"
    seconds = max(0, int((now - value).total_seconds()))
    return duration(seconds)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 90:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def eta_line(eta: dict) -> str:
    """The time left (db.queries.sweep_eta): the one the Live page shows too."""
    if eta["remaining_epochs"] == 0:
        return "Nothing left to train."
    left = f"{eta['remaining_epochs']:,} epoch(s) left"
    if eta["workers"] == 0:
        return f"{left}. {no_worker_line(eta['counts'])}"
    if eta["seconds_per_epoch"] is None:
        return f"{left}; time left: known once an epoch has finished."
    per_epoch = eta["seconds_per_epoch"]
    digits = 2 if per_epoch < 10 else 1
    return (
        f"{left} at {per_epoch:.{digits}f} s per epoch on {eta['workers']} live "
        f"worker(s) ({eta['slots']} run(s) at once): about {duration(eta['eta_seconds'])} left."
    )


def no_worker_line(counts: dict[str, int]) -> str:
    """What waits for a worker when none is alive: queued runs, and runs marked running
    whose worker died (they go back to the queue when their lease expires)."""
    queued, running = counts.get("queued", 0), counts.get("running", 0)
    waiting = [f"{queued} queued run(s) wait for one"] if queued else []
    if running:
        waiting.append(
            f"{running} run(s) marked running go back to the queue when their lease expires"
        )
    return f"No worker is alive: {'; '.join(waiting)}; start one with `segbench worker`."


def progress_line(eta: dict) -> str:
    """Runs done (succeeded or failed) of those that will train (cancelled ones do not)."""
    line = f"{eta['done']} of {eta['total']} run(s) done (succeeded or failed)"
    return line + (f"; {eta['cancelled']} cancelled, not counted." if eta["cancelled"] else ".")


def gpu_text(row: dict) -> str:
    if not row.get("gpu_name"):
        return row["device"]
    memory = f", {row['gpu_memory_mb'] / 1024:.0f} GiB" if row.get("gpu_memory_mb") else ""
    return f"{row['device']}: {row['gpu_name']}{memory}"


@app.command("workers")
def workers(db: DbOpt = None, format: FormatOpt = "table") -> None:
    """The live workers: host, pid, device and GPU, concurrency, age, last heartbeat, runs;
    then the time left of every sweep (as the Live page and `segbench status` say it)."""
    from rich.console import Console
    from rich.table import Table

    from db.models import utcnow

    check_format(format)
    with user_errors(), session_scope(database_url(db)) as session:
        rows = queries.live_workers(session)
        eta = queries.sweep_eta(session)
    if format == "json":
        print_json(
            [
                {
                    **r,
                    "started_at": r["started_at"].isoformat() if r["started_at"] else None,
                    "heartbeat_at": r["heartbeat_at"].isoformat() if r["heartbeat_at"] else None,
                }
                for r in rows
            ]
        )
        return
    if not rows:
        typer.echo(NO_WORKER)
        return
    now = utcnow()
    table = Table(title=f"{len(rows)} live worker(s)")
    for column in ("worker", "pid", "device", "slots", "up", "beat", "training"):
        table.add_column(column, justify="right" if column in ("pid", "slots") else "left")
    for r in rows:
        table.add_row(
            r["name"],
            str(r["pid"]),
            gpu_text(r),
            str(r["concurrency"]),
            since(r["started_at"], now),
            f"{since(r['heartbeat_at'], now)} ago",
            ", ".join(f"#{i}" for i in r["current_runs"]) or "idle",
        )
    console = Console()
    console.print(table)
    if eta["remaining_epochs"]:
        console.print(f"All sweeps: {progress_line(eta)} {eta_line(eta)}")

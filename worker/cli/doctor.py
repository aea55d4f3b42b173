"""`segbench doctor`: one table of everything a run needs (worker.queue.doctor checks)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from worker.cli.app import app
from worker.cli.options import BrokerOpt, DbOpt, FormatOpt, check_format, database_url, print_json

STYLE = {"ok": "green", "warning": "yellow", "missing": "bold red"}


def short_form(rows) -> str:
    """One line per row that is not ok, and a summary line."""
    lines = [f"doctor: {r.status}: {r.name}: {r.detail}" + (f" -> {r.fix}" if r.fix else "")
             for r in rows if r.status != "ok"]  # fmt: skip
    counts = {s: sum(r.status == s for r in rows) for s in STYLE}
    stop = any(r.fatal for r in rows)
    lines.append(
        f"doctor: {counts['ok']} ok, {counts['warning']} warning(s), {counts['missing']} "
        f"missing; "
        + ("runs cannot start (see above)" if stop else "runs can start")
        + "; `segbench doctor` shows the table"
    )
    return "\n".join(lines)


@app.command()
def doctor(
    db: DbOpt = None,
    broker: BrokerOpt = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Dataset folder (default: SEGBENCH_DATA_DIR).")
    ] = None,
    dashboard_address: Annotated[
        str | None,
        typer.Option(help="Where the dashboard listens (default: SEGBENCH_DASHBOARD_ADDRESS)."),
    ] = None,
    short: Annotated[
        bool, typer.Option("--short", help="Only what is not ok, one line each.")
    ] = False,
    format: FormatOpt = "table",
) -> None:
    """Check everything a run needs: ok / warning / missing, each with its fix.

    Exits 1 only for what stops every run: the database unreachable or behind the
    schema head, the broker unreachable, the dataset folder missing or failing its
    verification. Everything else is a warning (exit 0).
    """
    from worker.queue import doctor as checks  # torch, Celery: only here

    check_format(format)
    rows = checks.run_checks(
        db_url=database_url(db), broker_url=broker, data_dir=data,
        dashboard_address=dashboard_address,
    )  # fmt: skip
    code = checks.exit_code(rows)
    if format == "json":
        print_json({"checks": [r.to_dict() for r in rows], "exit_code": code})
    elif short:
        typer.echo(short_form(rows), err=True)
    else:
        show_table(rows)
    raise typer.Exit(code)


def show_table(rows) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="segbench doctor", show_lines=True)
    for column in ("check", "status", "found", "fix"):
        table.add_column(column, overflow="fold")
    for r in rows:
        status = f"[{STYLE[r.status]}]{r.status}[/]" + (" (stops runs)" if r.fatal else "")
        table.add_row(r.name, status, r.detail, r.fix)
    console = Console()
    console.print(table)
    stop = [r.name for r in rows if r.fatal]
    console.print(
        f"Runs cannot start: fix {', '.join(stop)} first." if stop
        else "Runs can start; warnings above, if any, are worth a look."
    )  # fmt: skip

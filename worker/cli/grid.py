"""`segbench grid`: the paper's 600 runs, filtered; `--all`: every run smp 0.6 can be
asked for by name. Each row says whether it is one of the paper's (`paper`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from worker.cli.app import app
from worker.cli.options import (
    FormatOpt,
    check_format,
    print_json,
    selection,
    with_grid_filters,
)

GRID_KEYS = ("experiment", "architecture", "encoder", "family", "init")


@app.command()
@with_grid_filters
def grid(
    all_: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Every architecture x encoder smp 0.6 can be asked for (tu-<timm name> "
            "encoders are accepted too but not listed); image sizes are checked at submit.",
        ),
    ] = False,
    format: FormatOpt = "table",
    grid: dict | None = None,
) -> None:
    """List (and filter) the 600 runs of the paper's grid (--all: beyond it)."""
    specs = selection(grid or {}, beyond_the_paper=all_)
    rows = [{**{k: s.to_dict()[k] for k in GRID_KEYS}, "paper": s.paper} for s in specs]
    check_format(format)
    if format == "json":
        print_json(rows)
        return
    table = Table(title=f"{len(rows)} runs")
    for col in GRID_KEYS:
        table.add_column(col)
    table.add_column("paper")
    for r in rows:
        table.add_row(*(str(v) if isinstance(v, bool) else v for v in r.values()))
    Console().print(table)

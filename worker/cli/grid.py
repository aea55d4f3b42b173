"""`segbench grid`: the paper's 600 runs, filtered."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from worker.cli.app import app
from worker.cli.options import (
    ArchitectureOpt,
    EncoderOpt,
    ExperimentOpt,
    FamilyOpt,
    FormatOpt,
    InitOpt,
    check_format,
    print_json,
    selection,
)

GRID_KEYS = ("experiment", "architecture", "encoder", "family", "init")


@app.command()
def grid(
    experiment: ExperimentOpt = None,
    architecture: ArchitectureOpt = None,
    encoder: EncoderOpt = None,
    family: FamilyOpt = None,
    init: InitOpt = None,
    format: FormatOpt = "table",
) -> None:
    """List (and filter) the 600 runs of the paper's grid."""
    specs = selection(experiment, architecture, encoder, family, init)
    rows = [{k: s.to_dict()[k] for k in GRID_KEYS} for s in specs]
    check_format(format)
    if format == "json":
        print_json(rows)
        return
    table = Table(title=f"{len(rows)} runs")
    for col in GRID_KEYS:
        table.add_column(col)
    for r in rows:
        table.add_row(*r.values())
    Console().print(table)

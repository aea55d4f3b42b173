"""`segbench report`: a sweep's results with confidence intervals, ranking stability,
pairwise comparisons and critical-difference analyses (worker.results.report)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from db.metrics import BOOTSTRAP_RESAMPLES, INTERVAL_METHOD
from db.session import session_scope
from worker.cli.app import app
from worker.cli.options import DbOpt, check_format, existing_database_url, print_json, user_errors
from worker.cli.results import IntervalOpt


@app.command()
def report(
    sweep: Annotated[str, typer.Option("--sweep", help="The sweep to report.")],
    format: Annotated[str, typer.Option("--format", help="json, markdown or latex.")] = "markdown",
    metric_mode: Annotated[
        str | None,
        typer.Option(help="standard or authors-2020 (default: the sweep's own)."),
    ] = None,
    top: Annotated[
        int, typer.Option(help="Pairwise comparisons among the TOP best runs of each experiment.")
    ] = 10,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples.")] = BOOTSTRAP_RESAMPLES,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    interval: IntervalOpt = INTERVAL_METHOD,
    output: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
    db: DbOpt = None,
) -> None:
    """The whole report of one sweep: per run Dice with an approximate 95% CI (--interval:
    cluster-robust t over test volumes, or the hierarchical bootstrap), every metric of
    the registry, NSD, HD95 and per-volume metrics; each run's median
    rank and its interval; paired differences of the best runs with Holm-adjusted
    p-values; Kendall's tau; Friedman + Nemenyi critical differences."""
    from worker.results.report import build_report
    from worker.results.report_text import FORMATS, render

    check_format(format, FORMATS)
    with user_errors():
        with session_scope(existing_database_url(db)) as session:
            result = build_report(
                session, sweep, metric_mode=metric_mode, top=top, n_resamples=resamples,
                seed=seed, interval=interval,
            )  # fmt: skip
        if format == "json":
            if output is None:
                print_json(result)
                return
            import json

            from worker.cli.options import json_safe

            output.write_text(json.dumps(json_safe(result)) + "\n")
        else:
            text = render(result, format)
            if output is None:
                sys.stdout.write(text)
                return
            output.write_text(text)
    typer.echo(f"wrote {output} ({len(result['runs'])} runs)", err=True)

"""`segbench export models|table|figures` and `segbench compare`: results out of the
database (worker.results does the work; torch and pandas load inside the commands)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from db import queries
from db.errors import check_choice
from db.grid import EXPERIMENTS, check_name
from db.metrics import BOOTSTRAP_RESAMPLES, INTERVAL_METHOD, INTERVAL_METHODS, resolution_note
from db.presets import protocol_line
from db.protocol import METRIC_MODES
from db.session import session_scope
from worker.cli.app import app
from worker.cli.options import (
    DbOpt,
    ExperimentOpt,
    FormatOpt,
    SweepOpt,
    check_format,
    existing_database_url,
    fail,
    one_experiment,
    print_json,
    user_errors,
    with_grid_filters,
)
from worker.cli.views import show_pair, show_sweep

IntervalOpt = Annotated[
    str,
    typer.Option(
        "--interval",
        help="Intervals of mean Dice: cluster-t (cluster-robust t over test volumes, the "
        "default) or percentile (hierarchical bootstrap).",
    ),
]

export_app = typer.Typer(
    help="Models, Table 2, figures and 3-D meshes out of the results.", no_args_is_help=True
)
app.add_typer(export_app, name="export")


@export_app.command("models")
@with_grid_filters
def export_models(
    dir: Annotated[Path, typer.Option("--dir", help="Folder to write the models into.")],
    sweep: SweepOpt = None,
    db: DbOpt = None,
    format: FormatOpt = "table",
    grid: dict | None = None,
) -> None:
    """Copy best models (safetensors + config.json + segbench.json) with a model card."""
    from worker.results.model_export import export_models as run_export

    check_format(format)
    with user_errors(), session_scope(existing_database_url(db)) as session:
        done = run_export(
            session,
            dir,
            sweep=sweep,
            **(grid or {}),
        )
    if format == "json":
        print_json(done)
        return
    for d in done:
        typer.echo(f"run {d['id']}: {d['path']}")
    typer.echo(f"{len(done)} model(s) exported to {dir}", err=True)


@export_app.command("table")
@with_grid_filters
def export_table(
    format: Annotated[str, typer.Option("--format", help="csv, markdown or latex.")] = "markdown",
    sweep: SweepOpt = None,
    metric_mode: Annotated[
        str, typer.Option(help="standard or authors-2020 (recomputed from slice counts).")
    ] = "standard",
    ddof: Annotated[
        int | None,
        typer.Option(help="Std rows: 0 (the paper's) or 1 (default: 0 in authors-2020, else 1)."),
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
    db: DbOpt = None,
    grid: dict | None = None,
) -> None:
    """The paper's Table 2 from the database: best per column in bold.

    One table holds runs of one protocol on one dataset: a selection that spans sweeps
    with different protocols or data is refused (choose one with --sweep)."""
    from worker.results import environments
    from worker.results.baselines import MARKER_NOTE, marked
    from worker.results.frames import ExportError, results_frame
    from worker.results.tables import (
        DEFAULT_DDOF,
        FORMATS,
        check_one_protocol,
        render,
        std_note,
        table2,
    )

    check_format(format, FORMATS)
    with user_errors():
        check_choice("metric mode", metric_mode, METRIC_MODES)
        ddof = DEFAULT_DDOF[metric_mode] if ddof is None else ddof
        with session_scope(existing_database_url(db)) as session:
            df = results_frame(
                session,
                metric_mode=metric_mode,
                sweep=sweep,
                **(grid or {}),
            )
            sweeps = {n: queries.sweep_row(session, sweep=n) for n in set(df["sweep"])}
            keys = list(df["environment_key"]) if "environment_key" in df else []
            mixed = environments.note(keys, queries.environments(session, keys))
        if df.empty:
            raise ExportError("No succeeded run matches the selection; the table would be empty.")
        check_one_protocol(df, sweeps)
        df = marked(df)
        text = render(table2(df, ddof=ddof), format)
    notes = [
        f"protocol {h}: {protocol_line(p)}"
        for h, p in dict(zip(df["protocol_hash"], df["protocol"], strict=True)).items()
    ]
    notes.append(f"{metric_mode} metrics; {std_note(ddof)}")
    sizes = sorted({(p or {}).get("image_size") for p in df["protocol"]} - {None})
    notes.append(resolution_note(sizes[0] if len(sizes) == 1 else None))
    if (df["grid"] != "paper").any():
        notes.append(MARKER_NOTE)
    if mixed:
        notes.append(mixed)
    if df["synthetic"].any():
        notes.insert(0, "SYNTHETIC data: these numbers are not results on real CT")
    prefix = {"csv": "# ", "latex": "% "}.get(format, "> ")
    head = "".join(f"{prefix}{n}\n" for n in notes)
    text = head + ("\n" if format == "markdown" else "") + text
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        typer.echo(f"wrote {output} ({len(df)} runs)", err=True)


@export_app.command("figures")
def export_figures(
    dir: Annotated[Path, typer.Option("--dir", help="Folder for the PNG/SVG files.")],
    sweep: SweepOpt = None,
    experiment: ExperimentOpt = None,
    formats: Annotated[
        str, typer.Option("--formats", help="Comma-separated: png,svg.")
    ] = "png,svg",
    db: DbOpt = None,
) -> None:
    """The paper's figures as PNG/SVG, drawn like the dashboard draws them."""
    import pandas as pd

    from worker.results.figures import write_figures
    from worker.results.frames import results_frame

    with user_errors():
        with session_scope(existing_database_url(db)) as session:
            df = results_frame(session, sweep=sweep, experiment=experiment)
            bands = {
                x: pd.DataFrame(
                    queries.loss_bands(
                        session,
                        by="architecture",
                        max_points=200,
                        experiment=x,
                        sweep=sweep,
                        status="succeeded",
                    )
                )
                for x in df["experiment"].unique()
            }
        fmts = tuple(f.strip() for f in formats.split(",") if f.strip())
        written = write_figures(df, bands, dir, fmts)
    for path in written:
        typer.echo(str(path))


@app.command()
def compare(
    runs: Annotated[list[int] | None, typer.Argument(help="Two run ids: RUN_A RUN_B.")] = None,
    sweep: Annotated[str | None, typer.Option(help="Compare all pairs of a sweep.")] = None,
    experiment: Annotated[
        str | None, typer.Option(help="Experiment (with --sweep).", callback=one_experiment)
    ] = None,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples.")] = BOOTSTRAP_RESAMPLES,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    run: Annotated[
        int | None, typer.Option("--run", help="One run against the baselines of --against.")
    ] = None,
    against: Annotated[
        str | None, typer.Option("--against", help="The sweep whose runs are the baselines.")
    ] = None,
    all_baselines: Annotated[
        bool, typer.Option("--all-baselines", help="Not only the paper's grid cells.")
    ] = False,
    interval: IntervalOpt = INTERVAL_METHOD,
    db: DbOpt = None,
    format: FormatOpt = "table",
) -> None:
    """Compare two runs, or every pair of a sweep's runs, on their shared test slices;
    or (--run ID --against SWEEP) one run's rank among a sweep's baselines.

    Two runs (of the same experiment, image size, protocol and test data): mean Dice
    with a 95% CI (--interval: cluster-t over test volumes, or the percentile
    bootstrap), paired Wilcoxon signed-rank p-value, per-volume (3-D) Dice, both
    metric modes. A sweep: all pairs of one experiment, p-values Holm-corrected."""
    check_format(format)
    check_choice("interval method", interval, INTERVAL_METHODS)
    if run is not None or against is not None:
        return _against(run, against, not all_baselines, resamples, seed, db, format, interval)
    if bool(runs) == bool(sweep):
        fail("Give two run ids (segbench compare RUN_A RUN_B) or --sweep NAME --experiment E.")
    if runs and len(runs) != 2:
        fail(f"Give exactly two run ids to compare, got {len(runs)}.")
    if sweep and not experiment:
        fail("--sweep needs --experiment: runs of different experiments are not comparable.")
    from worker.results.compare import compare_runs, compare_sweep

    with user_errors(), session_scope(existing_database_url(db)) as session:
        draws = {"n_resamples": resamples, "seed": seed, "method": interval}
        if runs:
            result = compare_runs(session, runs[0], runs[1], **draws)
        else:
            check_name("experiment", experiment, EXPERIMENTS)
            result = compare_sweep(session, sweep, experiment, **draws)
    if format == "json":
        print_json(result)
        return
    (show_pair if runs else show_sweep)(result)


def _against(run, against, paper_only, resamples, seed, db, format, interval) -> None:
    if run is None or against is None:
        fail("Give both --run ID and --against SWEEP.")
    from worker.results.baselines import compare_to_baselines, describe

    with user_errors(), session_scope(existing_database_url(db)) as session:
        result = compare_to_baselines(
            session, run, against, paper_only=paper_only, n_resamples=resamples, seed=seed,
            method=interval,
        )  # fmt: skip
    if format == "json":
        print_json(result)
    else:
        typer.echo(describe(result))

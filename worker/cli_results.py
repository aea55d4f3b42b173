"""`segbench predict`, `segbench export models|table|figures|mesh`, `segbench compare`."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated

import typer

from worker.cli import app
from worker.cli_core import (
    ArchitectureOpt,
    EncoderOpt,
    ExperimentOpt,
    FamilyOpt,
    InitOpt,
    fail,
    user_errors,
)

export_app = typer.Typer(
    help="Models, Table 2, figures and 3-D meshes out of the results.", no_args_is_help=True
)
app.add_typer(export_app, name="export")

DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db", help="Database URL (default: SEGBENCH_DATABASE_URL, else sqlite:///segbench.db)."
    ),
]
SweepOpt = Annotated[str | None, typer.Option("--sweep", help="Only the runs of this sweep.")]
ModelOpt = Annotated[Path, typer.Option("--model", help="Model folder (safetensors + json).")]
InputOpt = Annotated[Path, typer.Option("--input", help="CT volume in HU (.nii/.nii.gz).")]
LungOpt = Annotated[
    Path | None,
    typer.Option("--lung-model", help="Lung model folder (for lesion-segmentation-b models)."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu or cuda.")]


def _url(db: str | None) -> str:
    from db.settings import get_settings

    return db or get_settings().database_url


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _print_json(value) -> None:
    sys.stdout.write(json.dumps(_json_safe(value)) + "\n")


def _check_format(fmt: str, valid: tuple[str, ...]) -> None:
    if fmt not in valid:
        fail(f"Unknown format '{fmt}'; expected {' or '.join(valid)}.")


@app.command()
def predict(
    model: ModelOpt,
    input: InputOpt,
    output: Annotated[Path, typer.Option("--output", help="Mask to write (.nii.gz).")],
    lung_model: LungOpt = None,
    device: DeviceOpt = "cpu",
    batch_size: Annotated[int, typer.Option(help="Slices per forward pass.")] = 8,
    reference: Annotated[
        Path | None, typer.Option(help="Ground-truth mask: also report Dice, NSD and HD95.")
    ] = None,
    tolerance_mm: Annotated[float, typer.Option(help="NSD tolerance in mm.")] = 2.0,
    format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """Segment every axial slice of a CT volume with a saved model (CPU by default)."""
    _check_format(format, ("table", "json"))
    with user_errors():
        from worker.predict import predict_file

        summary = predict_file(
            model, input, output, lung_model_dir=lung_model, device=device, batch_size=batch_size
        )
        if reference is not None:
            summary["reference"] = _against_reference(output, reference, tolerance_mm)
    if format == "json":
        _print_json(summary)
        return
    if summary["synthetic_training_data"]:
        typer.echo(
            "note: this model was trained on SYNTHETIC stand-in data; its masks mean "
            "nothing on real CT.",
            err=True,
        )
    typer.echo(
        f"{summary['output']}: {summary['voxels']} voxels ({summary['volume_ml']:.1f} ml) in "
        f"{summary['slices_with_foreground']} of {summary['shape'][2]} slices, "
        f"{summary['model']}, {summary['seconds']:.1f} s"
    )
    if reference is not None:
        r = summary["reference"]
        typer.echo(
            f"against {reference}: Dice {100 * r['dice']:.2f}%, NSD@{tolerance_mm:g}mm "
            f"{100 * r['nsd']:.2f}%, HD95 {r['hd95']:.2f} mm"
        )


def _against_reference(output: Path, reference: Path, tolerance_mm: float) -> dict:
    import nibabel as nib
    import numpy as np

    from worker.boundary import boundary_metrics
    from worker.predict import PredictError

    if not reference.is_file():
        raise PredictError(f"Reference mask {reference} does not exist.")
    pred_img = nib.load(str(output))
    try:
        truth = np.asarray(nib.load(str(reference)).dataobj) > 0
    except Exception as exc:
        raise PredictError(f"{reference} is not a readable NIfTI mask ({exc}).") from exc
    pred = np.asarray(pred_img.dataobj) > 0
    if truth.shape != pred.shape:
        raise PredictError(
            f"Reference mask {reference} has shape {truth.shape}; expected the input's "
            f"{pred.shape}."
        )
    spacing = [float(z) for z in pred_img.header.get_zooms()[:3]]
    return boundary_metrics(truth, pred, spacing, tolerance_mm)


@export_app.command("models")
def export_models(
    dir: Annotated[Path, typer.Option("--dir", help="Folder to write the models into.")],
    experiment: ExperimentOpt = None,
    architecture: ArchitectureOpt = None,
    encoder: EncoderOpt = None,
    family: FamilyOpt = None,
    init: InitOpt = None,
    sweep: SweepOpt = None,
    db: DbOpt = None,
    format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """Copy best models (safetensors + config.json + segbench.json) with a model card."""
    _check_format(format, ("table", "json"))
    with user_errors():
        from db.session import session_scope
        from worker.export import export_models as run_export

        with session_scope(_url(db)) as session:
            done = run_export(
                session,
                dir,
                sweep=sweep,
                experiment=experiment,
                architecture=architecture,
                encoder=encoder,
                family=family,
                init=init,
            )
    if format == "json":
        _print_json(done)
        return
    for d in done:
        typer.echo(f"run {d['id']}: {d['path']}")
    typer.echo(f"{len(done)} model(s) exported to {dir}", err=True)


@export_app.command("table")
def export_table(
    format: Annotated[str, typer.Option("--format", help="csv, markdown or latex.")] = "markdown",
    experiment: ExperimentOpt = None,
    architecture: ArchitectureOpt = None,
    encoder: EncoderOpt = None,
    family: FamilyOpt = None,
    init: InitOpt = None,
    sweep: SweepOpt = None,
    metric_mode: Annotated[
        str, typer.Option(help="standard or authors-2020 (recomputed from slice counts).")
    ] = "standard",
    output: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
    db: DbOpt = None,
) -> None:
    """The paper's Table 2 from the database: best per column in bold."""
    from worker.export_table import FORMATS

    _check_format(format, FORMATS)
    with user_errors():
        from db.session import session_scope
        from worker.export import results_frame
        from worker.export_table import render, table2
        from worker.metrics import METRIC_MODES

        if metric_mode not in METRIC_MODES:
            raise ValueError(
                f"Unknown metric mode '{metric_mode}'; expected one of {', '.join(METRIC_MODES)}."
            )
        with session_scope(_url(db)) as session:
            df = results_frame(
                session,
                metric_mode=metric_mode,
                sweep=sweep,
                experiment=experiment,
                architecture=architecture,
                encoder=encoder,
                family=family,
                init=init,
            )
        if df.empty:
            raise ValueError("No succeeded run matches the selection; the table would be empty.")
        text = render(table2(df), format)
    if df["synthetic"].any():
        note = "SYNTHETIC data: these numbers are not results on real CT"
        text = {"csv": f"# {note}\n", "latex": f"% {note}\n"}.get(format, f"> {note}\n\n") + text
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
    with user_errors():
        import pandas as pd

        from db.queries import loss_bands
        from db.session import session_scope
        from worker.export import results_frame
        from worker.export_figures import write_figures

        with session_scope(_url(db)) as session:
            df = results_frame(session, sweep=sweep, experiment=experiment)
            bands = {
                x: pd.DataFrame(
                    loss_bands(
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


@export_app.command("mesh")
def export_mesh(
    output: Annotated[Path, typer.Option("--output", help="lesion.stl or lesion.obj.")],
    model: Annotated[Path | None, typer.Option("--model", help="Model folder.")] = None,
    input: Annotated[Path | None, typer.Option("--input", help="CT volume (HU).")] = None,
    lung_model: LungOpt = None,
    mask: Annotated[
        Path | None, typer.Option("--mask", help="Mesh this mask instead of predicting one.")
    ] = None,
    device: DeviceOpt = "cpu",
) -> None:
    """3-D surface (marching cubes, mm) of a predicted or given mask (paper Fig. 7)."""
    with user_errors():
        import nibabel as nib
        import numpy as np

        from worker.export_mesh import mask_surface, mesh_volume, write_mesh
        from worker.predict import PredictError, load_saved_model, read_ct, segment

        if (mask is None) == (model is None or input is None):
            raise PredictError("Give either --model and --input, or --mask.")
        if mask is not None:
            if not mask.is_file():
                raise PredictError(f"Mask file {mask} does not exist.")
            img = nib.load(str(mask))
            volume = np.asarray(img.dataobj) > 0
        else:
            saved = load_saved_model(model, device)
            lungs = load_saved_model(lung_model, device) if lung_model else None
            img, hu = read_ct(input)
            volume = segment(saved, hu, lung_model=lungs, device=device).mask
        spacing = [float(z) for z in img.header.get_zooms()[:3]]
        verts, faces = mask_surface(volume, spacing)
        write_mesh(output, verts, faces)
    typer.echo(
        f"{output}: {len(faces)} triangles, {mesh_volume(verts, faces) / 1000:.1f} ml enclosed"
    )


@app.command()
def compare(
    runs: Annotated[list[int] | None, typer.Argument(help="Two run ids: RUN_A RUN_B.")] = None,
    sweep: Annotated[str | None, typer.Option(help="Compare all pairs of a sweep.")] = None,
    experiment: Annotated[str | None, typer.Option(help="Experiment (with --sweep).")] = None,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 2000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    db: DbOpt = None,
    format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """Compare two runs, or every pair of a sweep's runs, on their shared test slices.

    Two runs: mean Dice with bootstrap 95% CI, paired Wilcoxon signed-rank p-value,
    per-volume (3-D) Dice, both metric modes. A sweep: all pairs of one experiment,
    p-values Holm-corrected."""
    _check_format(format, ("table", "json"))
    if bool(runs) == bool(sweep):
        fail("Give two run ids (segbench compare RUN_A RUN_B) or --sweep NAME --experiment E.")
    if runs and len(runs) != 2:
        fail(f"Give exactly two run ids to compare, got {len(runs)}.")
    if sweep and not experiment:
        fail("--sweep needs --experiment: runs of different experiments are not comparable.")
    with user_errors():
        from db.session import session_scope
        from worker.export_compare import compare_runs, compare_sweep
        from worker.grid import EXPERIMENTS, check_name

        with session_scope(_url(db)) as session:
            if runs:
                result = compare_runs(session, runs[0], runs[1], n_resamples=resamples, seed=seed)
            else:
                check_name("experiment", experiment, EXPERIMENTS)
                result = compare_sweep(session, sweep, experiment, n_resamples=resamples, seed=seed)
    if format == "json":
        _print_json(result)
        return
    from worker.export_view import show_pair, show_sweep

    (show_pair if runs else show_sweep)(result)

"""`segbench train`: one run in this process."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from db.grid import RunSpec, custom_specs
from db.presets import protocol_line
from worker.cli.app import app
from worker.cli.options import (
    EXPERIMENT_HELP,
    DbOpt,
    FormatOpt,
    PresetOpt,
    check_format,
    fail,
    one_experiment,
    print_json,
    protocol_from_options,
    user_errors,
    with_protocol_options,
)

DeviceOpt = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="auto (CUDA when this process sees a GPU, else CPU), cpu, cuda or cuda:N "
        "(default: SEGBENCH_DEVICE, else auto).",
        show_default=False,
    ),
]


def chosen_device(name: str | None) -> tuple[str, str]:
    """The device --device names (None: the settings' device, `auto` unless
    SEGBENCH_DEVICE says otherwise; auto: CUDA if this process sees one, else CPU) and
    how to say it ("cpu (--device auto: no CUDA here)"); an unknown or unavailable
    device is one sentence."""
    from db.settings import get_settings
    from worker.training.device import resolve_device

    name = name or get_settings().device
    with user_errors():
        device = resolve_device(name)
    how = ""
    if name == "auto":
        how = " (--device auto)" if device.type == "cuda" else " (--device auto: no CUDA here)"
    return str(device), f"{device}{how}"


def one_run(
    experiment: str, architecture: str | None, encoder: str | None, init: str | None, model
) -> RunSpec:
    """The grid cell of --architecture/--encoder/--init, or the user's --model."""
    if model is not None:
        if architecture or encoder or init:
            fail("--model trains your model; give it without --architecture, --encoder or --init.")
        (run,) = custom_specs(model, [experiment])
        return run
    if not architecture or not encoder:
        fail("Give --architecture and --encoder (a grid cell), or --model (your own model).")
    return RunSpec(experiment, architecture, encoder, init or "random")


@app.command()
@with_protocol_options
def train(
    data: Annotated[Path, typer.Option("--data", help="Dataset folder (medseg or nifti-folder).")],
    experiment: Annotated[
        str, typer.Option("--experiment", "-x", help=EXPERIMENT_HELP, callback=one_experiment)
    ],
    architecture: Annotated[str | None, typer.Option("--architecture", "-a")] = None,
    encoder: Annotated[str | None, typer.Option("--encoder", "-e")] = None,
    init: Annotated[
        str | None, typer.Option("--init", "-i", help="random (default) or imagenet.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Your own model instead of --architecture/--encoder: module:function or a "
            "segbench.models entry point name (docs/models.md).",
        ),
    ] = None,
    preset: PresetOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of this run.")] = 0,
    device: DeviceOpt = None,
    artifacts: Annotated[
        Path | None, typer.Option(help="Output folder (default: <artifacts dir>/<run id>).")
    ] = None,
    sweep: Annotated[
        str | None,
        typer.Option(help="Sweep to record the run in (default: train-<protocol hash>)."),
    ] = None,
    db: DbOpt = None,
    format: FormatOpt = "table",
    protocol_options: dict | None = None,
) -> None:
    """Train and evaluate one run in this process, recorded in the database.

    The run is submitted and claimed like a queued run, so it shows up in
    `segbench status` and the dashboard; epochs.csv, summary.json and the best
    checkpoint are also written under --artifacts.
    """
    # torch and the data stack load only for a command that trains
    from worker.data.dataset import load_dataset
    from worker.queue.service import train_in_process
    from worker.training import weights
    from worker.training.recorder import FileRecorder, ProgressRecorder

    check_format(format)
    with user_errors():
        run = one_run(experiment, architecture, encoder, init, model)
        protocol = protocol_from_options(preset, {**(protocol_options or {}), "seed": seed})
        device, device_text = chosen_device(device)  # refuse before any row is written
        # Missing ImageNet weights are downloaded now (with a progress bar), or, when
        # downloads are forbidden, refused before any row is written.
        if run.init == "imagenet":
            weights.fetch(run.encoder, progress=True)
        # Check (and preprocess) the data before any row is written; fit() then finds
        # it in this process's cache instead of reading and checking it again.
        load_dataset(data, run.experiment, protocol.image_size, test_resize=protocol.test_resize)
        # The run's failure reason is stored and printed as one sentence below;
        # the runner's own log of it (with traceback) is for worker logs.
        logging.getLogger("worker.queue.runner").setLevel(logging.CRITICAL)
        result = train_in_process(
            run,
            protocol,
            data_dir=data,
            device=device,
            artifacts_dir=artifacts,
            sweep=sweep,
            url=db,
            recorders=lambda out: [
                FileRecorder(out),
                ProgressRecorder(protocol.epochs, run.name, device=device_text),
            ],
        )
    summary = json.loads((result.artifacts_dir / "summary.json").read_text())
    summary["run_id"] = result.run_id
    summary["sweep"] = result.sweep
    summary["protocol"] = protocol.to_dict()
    summary["protocol_hash"] = protocol.hash()
    if format == "json":
        print_json(summary)
        return
    label = " [SYNTHETIC data]" if summary["synthetic"] else ""
    typer.echo(
        f"run {result.run_id} {run.name}{label}: Dice {summary['dice']:.2f}% "
        f"(pooled {summary['pooled_dice']:.2f}%; all-background would score "
        f"{summary['all_background_dice']:.2f}%), sensitivity {summary['sensitivity']:.2f}%, "
        f"specificity {summary['specificity']:.2f}% on {summary['test_slices']} test slices; "
        f"best epoch {summary['best_epoch']}; {summary['parameters_m']:.2f} M parameters; "
        f"results in {result.artifacts_dir}\nprotocol {protocol.hash()} (seed {protocol.seed}): "
        f"{protocol_line(protocol)}"
    )
    if summary.get("nsd") is not None:
        hd = "-" if summary["hd95"] is None else f"{summary['hd95']:.2f} mm"
        typer.echo(
            f"mean over {len(summary['volumes'])} test volume(s): NSD@"
            f"{summary['nsd_tolerance_mm']:g}mm {summary['nsd']:.2f}%, HD95 {hd} "
            f"({summary['boundary_mode']} surfaces)"
        )

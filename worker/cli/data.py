"""`segbench data ...`: get, generate and check the CT data (worker.data does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from worker.cli.app import app
from worker.cli.options import DirOpt, user_errors

data_app = typer.Typer(
    help="Get the paper's public CT data, generate stand-in data, check a dataset folder.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


def _ok_line(root: Path) -> str:
    from worker.data.dataset import dataset_info

    info = dataset_info(root)
    label = " (synthetic)" if info["synthetic"] else ""
    return (
        f"OK: {info['name']}{label} in {root} ({info['kind']}, manifest "
        f"{info['manifest_hash'][:12]})"
    )


def _verify_or_fail(root: Path) -> None:
    from worker.data.nifti import verify

    problems = verify(root)
    if problems:
        for problem in problems:
            typer.echo(problem, err=True)
        raise typer.Exit(1)
    typer.echo(_ok_line(root))


@data_app.command("fetch")
def fetch_command(
    directory: DirOpt,
    mirror: Annotated[
        str | None,
        typer.Option(
            "--mirror",
            help="Base URL that serves the six files (URL/tr_im.nii.gz, ...) instead of "
            "Google Drive.",
        ),
    ] = None,
) -> None:
    """Download the six public MedSeg files (resumable, checksummed), then verify them."""
    from worker.data.fetch import fetch

    with user_errors():
        root = fetch(directory, mirror=mirror)
        _verify_or_fail(root)


@data_app.command("synth")
def synth_command(
    directory: DirOpt,
    image_size: Annotated[int, typer.Option(help="Training slice size in pixels.")] = 512,
    train_slices: Annotated[int, typer.Option(help="Slices in tr_im.nii.gz.")] = 100,
    test_volumes: Annotated[int, typer.Option(help="Test volumes in rp_im/.")] = 9,
    slices_per_volume: Annotated[
        int | None, typer.Option(help="Slices per test volume (default 92).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 0,
) -> None:
    """Write GENERATED stand-in CT data in the MedSeg layout (labelled synthetic)."""
    from rich.console import Console

    from worker.data.synth import synth

    with user_errors():
        with Console(stderr=True).status(f"Generating synthetic data in {directory} ..."):
            root = synth(
                directory,
                image_size=image_size,
                train_slices=train_slices,
                test_volumes=test_volumes,
                slices_per_volume=slices_per_volume,
                seed=seed,
            )
        typer.echo(_ok_line(root))


@data_app.command("verify")
def verify_command(directory: DirOpt) -> None:
    """Check files, checksums, shapes, labels and values; exit 0 only if usable."""
    with user_errors():
        _verify_or_fail(directory)

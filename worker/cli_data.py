"""`segbench data ...`: get, generate and check the CT data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from worker.cli import app

data_app = typer.Typer(
    help="Get the paper's public CT data, generate stand-in data, check a dataset folder.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")

DirOption = Annotated[Path, typer.Option("--dir", help="Dataset folder.")]


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _os_error(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}."


def _ok_line(root: Path) -> str:
    from worker import data

    info = data.dataset_info(root)
    label = " (synthetic)" if info["synthetic"] else ""
    return (
        f"OK: {info['name']}{label} in {root} ({info['kind']}, manifest "
        f"{info['manifest_hash'][:12]})"
    )


def _verify_or_fail(root: Path) -> None:
    from worker import data

    problems = data.verify(root)
    if problems:
        for problem in problems:
            typer.echo(problem, err=True)
        raise typer.Exit(1)
    typer.echo(_ok_line(root))


@data_app.command("fetch")
def fetch_command(directory: DirOption) -> None:
    """Download the six public MedSeg files (resumable, checksummed), then verify them."""
    from worker import data

    try:
        root = data.fetch(directory)
    except data.DataError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(_os_error(exc))
    _verify_or_fail(root)


@data_app.command("synth")
def synth_command(
    directory: DirOption,
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

    from worker import data

    try:
        with Console(stderr=True).status(f"Generating synthetic data in {directory} ..."):
            root = data.synth(
                directory,
                image_size=image_size,
                train_slices=train_slices,
                test_volumes=test_volumes,
                slices_per_volume=slices_per_volume,
                seed=seed,
            )
    except data.DataError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(_os_error(exc))
    typer.echo(_ok_line(root))


@data_app.command("verify")
def verify_command(directory: DirOption) -> None:
    """Check files, checksums, shapes, labels and values; exit 0 only if usable."""
    try:
        _verify_or_fail(directory)
    except OSError as exc:
        _fail(_os_error(exc))

"""The Typer app of the `segbench` command; each module of worker.cli adds its commands."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="segbench: the 600-model lung and COVID-19 lesion segmentation benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

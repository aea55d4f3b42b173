"""The `segbench` command: the front door for everything the dashboard can do."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    help="segbench: the 600-model lung and COVID-19 lesion segmentation benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module registers its commands on `app` when imported.
COMMAND_MODULES = ("cli_core", "cli_data", "cli_db", "cli_queue", "cli_results", "cli_dashboard")


def load_commands() -> typer.Typer:
    # Import through the package, not __main__, so `python -m worker.cli` and the
    # console script register every command on the same Typer app.
    cli = importlib.import_module("worker.cli")
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(f"worker.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"worker.{name}":
                raise
    return cli.app


def main() -> None:
    load_commands()()


if __name__ == "__main__":
    main()

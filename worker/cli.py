"""The `segbench` command: the front door for everything the dashboard can do."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="segbench: the 600-model lung and COVID-19 lesion segmentation benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def main() -> None:
    from worker import cli_core  # noqa: F401  (registers grid/train/weights)
    from worker import cli_data  # noqa: F401  (registers `data`)

    for optional in ("cli_db", "cli_queue", "cli_results"):
        try:
            __import__(f"worker.{optional}")
        except ModuleNotFoundError as exc:
            if exc.name != f"worker.{optional}":
                raise
    app()


if __name__ == "__main__":
    main()

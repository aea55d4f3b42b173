"""What the commands of `segbench` share: the options every group takes, the output
formats, and the mapping of errors a user can cause to one sentence and exit 1."""

from __future__ import annotations

import functools
import inspect
import json
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from sqlalchemy import make_url

from db.engine import is_sqlite, normalize_url
from db.errors import SegbenchError
from db.grid import (
    EXPERIMENTS,
    SHORT_EXPERIMENT,
    RunSpec,
    custom_specs,
    expand,
    expand_all,
    experiment_names,
)
from db.presets import PRESET_DESCRIPTIONS, resolve
from db.protocol import PROTOCOL_FIELDS
from db.settings import get_settings


def experiment_option(values: list[str] | None) -> list[str] | None:
    """--experiment's callback: short names (lung, lesion-a, lesion-b; db.grid's
    EXPERIMENT_ALIASES) become full ones; an unknown name is one sentence."""
    if values is None:
        return None
    with user_errors():
        return experiment_names(values)


def one_experiment(value: str | None) -> str | None:
    """The callback of an option that takes one experiment."""
    return None if value is None else experiment_option([value])[0]


EXPERIMENT_HELP = "Experiment(s): " + ", ".join(f"{x} ({SHORT_EXPERIMENT[x]})" for x in EXPERIMENTS)
ExperimentOpt = Annotated[
    list[str] | None,
    typer.Option("--experiment", "-x", help=EXPERIMENT_HELP, callback=experiment_option),
]
ArchitectureOpt = Annotated[
    list[str] | None, typer.Option("--architecture", "-a", help="Architecture(s).")
]
EncoderOpt = Annotated[list[str] | None, typer.Option("--encoder", "-e", help="Encoder(s).")]
FamilyOpt = Annotated[list[str] | None, typer.Option("--family", "-f", help="Encoder family(ies).")]
InitOpt = Annotated[list[str] | None, typer.Option("--init", "-i", help="random and/or imagenet.")]
SlotsOpt = Annotated[
    str,
    typer.Option(
        "--slots",
        "--concurrency",
        "-c",
        help="Runs a worker trains at once (pool processes): a number, or auto (one on the "
        "CPU; on a GPU as many as its memory holds by the measured cell table named by "
        "SEGBENCH_CELL_TABLE, else one).",
    ),
]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db", help="Database URL (default: SEGBENCH_DATABASE_URL, else sqlite:///segbench.db)."
    ),
]
BrokerOpt = Annotated[
    str | None,
    typer.Option(
        "--broker",
        help="Broker URL (default: SEGBENCH_BROKER_URL, else a SQLite file beside the database).",
    ),
]
FormatOpt = Annotated[str, typer.Option("--format", help="table or json.")]
SweepOpt = Annotated[str | None, typer.Option("--sweep", help="Only the runs of this sweep.")]
RunIdsArg = Annotated[list[int] | None, typer.Argument(help="Run ids.", show_default=False)]
DirOpt = Annotated[Path, typer.Option("--dir", help="Dataset folder.")]

# Protocol options: None = the preset's value (no preset: the paper's text).
PROTOCOL_PANEL = "Protocol (stored with the sweep, part of each run's identity)"
PresetOpt = Annotated[
    str | None,
    typer.Option(
        "--preset",
        help="; ".join(f"{name}: {text}" for name, text in PRESET_DESCRIPTIONS.items())
        + ". Options given beside it override it.",
        rich_help_panel=PROTOCOL_PANEL,
    ),
]


def protocol_parameters() -> list[inspect.Parameter]:
    """One keyword option per shared protocol field, made from its declaration
    (db.protocol.PROTOCOL_FIELDS): the option is ``--`` + the field's name with dashes,
    its help the field's; None means "the preset's value"."""
    out = []
    for f in PROTOCOL_FIELDS:
        if f.per_run:
            continue
        help_text = f.help
        if f.type is bool:
            option = typer.Option(
                f"{f.option}/--no-{f.option[2:]}", help=help_text, rich_help_panel=PROTOCOL_PANEL
            )
        else:
            option = typer.Option(
                f.option, *f.option_aliases, help=help_text, rich_help_panel=PROTOCOL_PANEL
            )
        out.append(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[f.type | None, option],
            )
        )
    return out


def _with_options(
    command: Callable[..., Any], receiver: str, added: list[inspect.Parameter]
) -> Callable[..., Any]:
    """`command` with the options `added` after its own parameters; it receives their
    values as one dict in its parameter `receiver` (name -> value, None where not given)."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != receiver]
    names = [p.name for p in added]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        options = {name: kwargs.pop(name, None) for name in names}
        return command(*args, **{receiver: options}, **kwargs)

    del wrapper.__wrapped__  # typer must read the signature below, not the command's
    wrapper.__signature__ = signature.replace(parameters=[*own, *added])
    wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *added]}
    return wrapper


def with_protocol_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command one option per shared protocol field (see protocol_parameters);
    the command receives the values given as ``protocol_options``, to pass to
    protocol_from_options."""
    return _with_options(command, "protocol_options", protocol_parameters())


GRID_FILTERS = {
    "experiment": ExperimentOpt,
    "architecture": ArchitectureOpt,
    "encoder": EncoderOpt,
    "family": FamilyOpt,
    "init": InitOpt,
}


def with_grid_filters(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the five grid filters (-x, -a, -e, -f, -i, each repeatable);
    the command receives them as ``grid`` (name -> list or None), in expand()'s order."""
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=kind)
        for name, kind in GRID_FILTERS.items()
    ]
    return _with_options(command, "grid", added)


def protocol_from_options(preset: str | None, options: dict[str, Any]):
    """The protocol of a preset with the options given put over it (None: not given)."""
    return resolve(preset, **options)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one clear sentence to stderr and exit non-zero."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def os_error(exc: OSError) -> str:
    """An OSError as one sentence naming the file."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}."


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn errors a user can cause into one sentence and exit code 1: every
    SegbenchError, and a file the user named that cannot be read or written."""
    try:
        yield
    except SegbenchError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(os_error(exc))


def selection(grid: dict[str, Any], *, beyond_the_paper: bool = False) -> list[RunSpec]:
    """The grid runs the filter options select (with beyond_the_paper: what smp 0.6
    can be asked for by name, db.grid.expand_all)."""
    with user_errors():
        return (expand_all if beyond_the_paper else expand)(*grid.values())


def model_selection(model: str | None, grid: dict[str, Any]) -> list[RunSpec]:
    """The runs of a user's model (`--model`, one per experiment), else the grid's."""
    if model is None:
        return selection(grid)
    if any(grid[k] for k in ("architecture", "encoder", "family", "init")):
        fail("--model trains your model; it takes --experiment, not grid filters.")
    with user_errors():
        return custom_specs(model, grid["experiment"])


def database_url(db: str | None) -> str:
    """--db, else the settings' database URL."""
    return db or get_settings().database_url


def existing_database_url(db: str | None) -> str:
    """The database URL of a command that only reads: a SQLite file that does not exist
    is a mistyped path, not a new database to create."""
    url = database_url(db)
    if is_sqlite(url):
        path = make_url(normalize_url(url)).database
        if path and path != ":memory:" and not Path(path).is_file():
            fail(
                f"No database at {Path(path).resolve()}; expected an existing segbench "
                "SQLite file (check --db or SEGBENCH_DATABASE_URL)."
            )
    return url


def check_format(fmt: str, valid: Sequence[str] = ("table", "json")) -> None:
    if fmt not in valid:
        fail(f"Unknown format '{fmt}'; expected {' or '.join(valid)}.")


def json_safe(value: Any) -> Any:
    """NaN and infinities as null, keys as strings: what json.dumps can write."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def print_json(value: Any) -> None:
    """One JSON document on stdout, and nothing else."""
    sys.stdout.write(json.dumps(json_safe(value)) + "\n")


def emit(fmt: str, document: Any, text: str) -> None:
    """`document` as JSON for --format json, else `text`."""
    check_format(fmt)
    if fmt == "json":
        print_json(document)
    else:
        typer.echo(text)

"""`segbench grid`, `segbench train`, `segbench weights fetch`."""

from __future__ import annotations

import csv
import json
import logging
import sys
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from worker.cli import app
from worker.grid import ENCODERS, GridError, RunSpec, expand
from worker.protocol import EpochRecord, Recorder, RunOutcome

log = logging.getLogger(__name__)

ExperimentOpt = Annotated[
    list[str] | None, typer.Option("--experiment", "-x", help="Experiment(s).")
]
ArchitectureOpt = Annotated[
    list[str] | None, typer.Option("--architecture", "-a", help="Architecture(s).")
]
EncoderOpt = Annotated[list[str] | None, typer.Option("--encoder", "-e", help="Encoder(s).")]
FamilyOpt = Annotated[list[str] | None, typer.Option("--family", "-f", help="Encoder family(ies).")]
InitOpt = Annotated[list[str] | None, typer.Option("--init", "-i", help="random and/or imagenet.")]


def fail(message: str, code: int = 1) -> None:
    """Print one clear sentence to stderr and exit non-zero."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


USER_ERRORS = {
    "worker.data": "DataError",
    "worker.models": "WeightsError",
    "db.errors": "DatabaseError",
    "worker.tasks": "BrokerError",
    "worker.runs": "RunFailed",
    "worker.protocol": "Cancelled",
}


def _user_error_types() -> tuple[type[BaseException], ...]:
    # Only modules already imported can have raised their errors; looking them up
    # lazily keeps `segbench grid` free of torch and database imports.
    types: list[type[BaseException]] = [GridError, ValueError, FileNotFoundError]
    for module, name in USER_ERRORS.items():
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None:
            types.append(cls)
    return tuple(types)


@contextmanager
def user_errors():
    """Turn errors a user can cause into one sentence and exit code 1."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, _user_error_types()):
            fail(str(exc))
        raise


def selection(experiment, architecture, encoder, family, init) -> list[RunSpec]:
    with user_errors():
        return expand(experiment, architecture, encoder, family, init)


@app.command()
def grid(
    experiment: ExperimentOpt = None,
    architecture: ArchitectureOpt = None,
    encoder: EncoderOpt = None,
    family: FamilyOpt = None,
    init: InitOpt = None,
    format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """List (and filter) the 600 runs of the paper's grid."""
    specs = selection(experiment, architecture, encoder, family, init)
    rows = [
        {k: s.to_dict()[k] for k in ("experiment", "architecture", "encoder", "family", "init")}
        for s in specs
    ]
    if format == "json":
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    if format != "table":
        fail(f"Unknown format '{format}'; expected table or json.")
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} runs")
    for col in ("experiment", "architecture", "encoder", "family", "init"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r.values())
    Console().print(table)


def all_background_dice(test) -> float:
    """Mean Dice an empty prediction would score on the same slices (for context)."""
    from worker.metrics import summarize

    counts = [[0, 0, s.tp + s.fn, s.tn + s.fp] for s in test.slices]
    return summarize(counts, test.metric_mode)["dice"] if counts else float("nan")


class FileRecorder(Recorder):
    """Writes epochs.csv and summary.json into a run's artifact folder."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.config: dict = {}

    def start(self, config: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config = config
        (self.directory / "config.json").write_text(json.dumps(config, indent=2, default=str))

    def epoch(self, record: EpochRecord) -> None:
        path = self.directory / "epochs.csv"
        rows = []
        if path.exists():
            with open(path) as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < record.epoch]
        rows.append({k: v for k, v in asdict(record).items()})
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(asdict(record)))
            w.writeheader()
            w.writerows(rows)
        tmp.replace(path)

    def finish(self, outcome: RunOutcome) -> None:
        t = outcome.test
        summary = {
            "run": self.config.get("run"),
            "dataset": self.config.get("dataset"),
            "synthetic": bool(self.config.get("dataset", {}).get("synthetic")),
            "metric_mode": t.metric_mode,
            "dice": t.dice,
            "dice_std": t.dice_std,
            "sensitivity": t.sensitivity,
            "specificity": t.specificity,
            "pooled_dice": t.pooled_dice,
            "all_background_dice": all_background_dice(t),
            "test_slices": len(t.slices),
            "best_epoch": outcome.best_epoch,
            "best_val_loss": outcome.best_val_loss,
            "parameters_m": outcome.parameters_m,
            "train_seconds_per_epoch": outcome.train_seconds_per_epoch,
            "val_seconds_per_epoch": outcome.val_seconds_per_epoch,
            "checkpoint": outcome.checkpoint_dir,
            "checkpoint_sha256": outcome.checkpoint_sha256,
        }
        (self.directory / "summary.json").write_text(json.dumps(summary, indent=2))


class ProgressRecorder(Recorder):
    """A tqdm bar over epochs with the latest losses."""

    def __init__(self, total: int, name: str):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=name, unit="epoch", file=sys.stderr)

    def start(self, config: dict) -> None:
        done = config.get("resumed_from", 0)
        if done:
            self.bar.update(done - self.bar.n)
        if config.get("dataset", {}).get("synthetic"):
            self.bar.write(
                "note: training on SYNTHETIC stand-in data (not the paper's CT scans)",
                file=sys.stderr,
            )

    def epoch(self, record: EpochRecord) -> None:
        self.bar.set_postfix(train=f"{record.train_loss:.4f}", val=f"{record.val_loss:.4f}")
        self.bar.update(1)

    def finish(self, outcome: RunOutcome) -> None:
        self.bar.close()


DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db", help="Database URL (default: SEGBENCH_DATABASE_URL or sqlite:///segbench.db)."
    ),
]


@app.command()
def train(
    data: Annotated[Path, typer.Option("--data", help="Dataset folder (medseg or nifti-folder).")],
    experiment: Annotated[str, typer.Option("--experiment", "-x")],
    architecture: Annotated[str, typer.Option("--architecture", "-a")],
    encoder: Annotated[str, typer.Option("--encoder", "-e")],
    init: Annotated[str, typer.Option("--init", "-i")] = "random",
    epochs: Annotated[int, typer.Option(help="Epochs (paper: 200).")] = 200,
    image_size: Annotated[int, typer.Option(help="Slice size in pixels (paper: 512).")] = 512,
    batch_size: Annotated[int, typer.Option(help="Batch size (paper: 2).")] = 2,
    seed: Annotated[int, typer.Option()] = 0,
    loss: Annotated[str, typer.Option(help="soft-dice (paper) or authors-dice.")] = "soft-dice",
    metric_mode: Annotated[str, typer.Option(help="standard or authors-2020.")] = "standard",
    augment_mode: Annotated[str, typer.Option(help="paper or authors-code.")] = "paper",
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    artifacts: Annotated[
        Path | None, typer.Option(help="Output folder (default: <artifacts dir>/<run id>).")
    ] = None,
    sweep: Annotated[
        str | None,
        typer.Option(help="Sweep to record the run in (default: train-<protocol hash>)."),
    ] = None,
    db: DbOpt = None,
    format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """Train and evaluate one run in this process, recorded in the database.

    The run is submitted and claimed like a queued run, so it shows up in
    `segbench status` and the dashboard; epochs.csv, summary.json and the best
    checkpoint are also written under --artifacts.
    """
    from worker import data as data_mod
    from worker.protocol import Protocol
    from worker.runs import train_in_process

    if format not in ("table", "json"):
        fail(f"Unknown format '{format}'; expected table or json.")
    with user_errors():
        run = RunSpec(experiment=experiment, architecture=architecture, encoder=encoder, init=init)
        protocol = Protocol(
            epochs=epochs,
            image_size=image_size,
            batch_size=batch_size,
            seed=seed,
            loss=loss,
            metric_mode=metric_mode,
            augment_mode=augment_mode,
        )
        if run.init == "imagenet":  # refuse before any row is written
            from worker.models import imagenet_weights_path

            imagenet_weights_path(run.encoder)
        # Check (and preprocess) the data before any row is written; fit() then finds
        # it in this process's cache instead of reading and checking it again.
        data_mod.load_dataset(data, run.experiment, protocol.image_size)
        # The run's failure reason is stored and printed as one sentence below;
        # the runner's own log of it (with traceback) is for worker logs.
        logging.getLogger("worker.runner").setLevel(logging.CRITICAL)
        result = train_in_process(
            run,
            protocol,
            data_dir=data,
            device=device,
            artifacts_dir=artifacts,
            sweep=sweep,
            url=db,
            recorders=lambda out: [FileRecorder(out), ProgressRecorder(epochs, run.name)],
        )
    summary = json.loads((result.artifacts_dir / "summary.json").read_text())
    summary["run_id"] = result.run_id
    summary["sweep"] = result.sweep
    if format == "json":
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    label = " [SYNTHETIC data]" if summary["synthetic"] else ""
    typer.echo(
        f"run {result.run_id} {run.name}{label}: Dice {summary['dice']:.2f}% "
        f"(pooled {summary['pooled_dice']:.2f}%; all-background would score "
        f"{summary['all_background_dice']:.2f}%), sensitivity {summary['sensitivity']:.2f}%, "
        f"specificity {summary['specificity']:.2f}% on {summary['test_slices']} test slices; "
        f"best epoch {summary['best_epoch']}; {summary['parameters_m']:.2f} M parameters; "
        f"results in {result.artifacts_dir}"
    )


weights_app = typer.Typer(help="ImageNet encoder weights in the local Hugging Face cache.")
app.add_typer(weights_app, name="weights")


@weights_app.command("fetch")
def weights_fetch(encoder: EncoderOpt = None) -> None:
    """Download ImageNet weights into the Hugging Face cache (needs internet)."""
    from worker.models import imagenet_weights_path

    names = encoder or list(ENCODERS)
    with user_errors():
        for name in names:
            path = imagenet_weights_path(name, download=True)
            typer.echo(f"{name}: {path}")

"""`segbench submit`, `worker`, `cancel`, `retry` and `up`: the job queue's front door."""

from __future__ import annotations

import json
import logging
import os
import subprocess
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
    selection,
    user_errors,
)

log = logging.getLogger(__name__)

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
RunIdsArg = Annotated[list[int] | None, typer.Argument(help="Run ids.", show_default=False)]
SweepOpt = Annotated[str | None, typer.Option("--sweep", help="Every run of this sweep.")]


def _url(db: str | None) -> str:
    from worker.tasks import queue_settings

    return db or queue_settings().database_url


def _emit(format: str, document: object, text: str) -> None:
    if format == "json":
        sys.stdout.write(json.dumps(document) + "\n")
    elif format == "table":
        typer.echo(text)
    else:
        fail(f"Unknown format '{format}'; expected table or json.")


def _broker(db_url: str, broker: str | None) -> str:
    from worker import tasks

    try:
        url = tasks.configure(db_url, broker)
        tasks.check_broker()
    except tasks.BrokerError as error:
        fail(str(error))
    return url


def _publish(ids: list[int]) -> None:
    from worker import tasks

    try:
        tasks.publish(ids)
    except Exception as error:
        raise tasks.BrokerError(
            f"The runs are queued in the database, but sending their ids to the broker "
            f"failed ({error}); a worker's reaper will send them once the broker answers."
        ) from error


def submit_runs(specs, protocol, *, data: Path, sweep: str | None, db_url: str) -> dict:
    """Queue `specs` (idempotent) and publish the ids of the runs still queued."""
    from sqlalchemy import select

    from db import jobs
    from db.models import Run
    from db.session import session_scope
    from worker.data import dataset_info

    data = data.resolve()
    dataset = dataset_info(data)
    sweep = sweep or f"{dataset['name']}-{protocol.hash()[:8]}"
    with session_scope(db_url) as session:
        ids = jobs.submit(
            session,
            specs=specs,
            protocol=protocol,
            sweep=sweep,
            data_dir=str(data),
            dataset=dataset,
        )
        queued = list(
            session.scalars(select(Run.id).where(Run.id.in_(ids), Run.status == "queued"))
        )
    _publish(sorted(queued))
    return {"sweep": sweep, "runs": ids, "published": sorted(queued)}


@app.command()
def submit(
    experiment: ExperimentOpt = None,
    architecture: ArchitectureOpt = None,
    encoder: EncoderOpt = None,
    family: FamilyOpt = None,
    init: InitOpt = None,
    epochs: Annotated[int, typer.Option(help="Epochs (paper: 200).")] = 200,
    image_size: Annotated[int, typer.Option(help="Slice size in pixels (paper: 512).")] = 512,
    batch_size: Annotated[int, typer.Option(help="Batch size (paper: 2).")] = 2,
    loss: Annotated[str, typer.Option(help="soft-dice (paper) or authors-dice.")] = "soft-dice",
    metric_mode: Annotated[str, typer.Option(help="standard or authors-2020.")] = "standard",
    augment_mode: Annotated[str, typer.Option(help="paper or authors-code.")] = "paper",
    seed: Annotated[int, typer.Option()] = 0,
    data: Annotated[
        Path | None, typer.Option("--data", help="Dataset folder (default: SEGBENCH_DATA_DIR).")
    ] = None,
    sweep: Annotated[
        str | None, typer.Option("--sweep", help="Sweep name (default: dataset + protocol hash).")
    ] = None,
    db: DbOpt = None,
    broker: BrokerOpt = None,
    format: FormatOpt = "table",
) -> None:
    """Queue runs of the grid for the workers; submitting the same sweep again adds nothing."""
    from worker.protocol import Protocol
    from worker.tasks import queue_settings

    specs = selection(experiment, architecture, encoder, family, init)
    with user_errors():
        protocol = Protocol(
            epochs=epochs,
            image_size=image_size,
            batch_size=batch_size,
            loss=loss,
            metric_mode=metric_mode,
            augment_mode=augment_mode,
            seed=seed,
        )
        db_url = _url(db)
        _broker(db_url, broker)
        result = submit_runs(
            specs,
            protocol,
            data=Path(data or queue_settings().data_dir),
            sweep=sweep,
            db_url=db_url,
        )
    _emit(
        format,
        {"sweep": result["sweep"], "runs": result["runs"]},
        f"sweep {result['sweep']}: {len(result['runs'])} runs, "
        f"{len(result['published'])} queued and sent to the workers",
    )


@app.command("worker")
def worker_command(
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", help="Runs at once (pool processes).")
    ] = 1,
    gpu: Annotated[str, typer.Option(help="auto, none (CPU) or a GPU index.")] = "auto",
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
    db: DbOpt = None,
    broker: BrokerOpt = None,
) -> None:
    """A Celery worker: trains queued runs, one pool process per concurrent run."""
    if concurrency < 1:
        fail(f"--concurrency must be at least 1, got {concurrency}.")
    # Must precede billiard's import: SIGTERM then means "soft shutdown, requeue".
    os.environ.setdefault("REMAP_SIGTERM", "SIGQUIT")
    # N training processes share the CPU cores: N x all-cores threads oversubscribe
    # (measured ~10x slower on 2 cores). Pool processes read this (worker.tasks).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // concurrency)))
    from db.session import dispose_engine, ensure_schema
    from worker import tasks
    from worker.runner import pin_gpu

    db_url = _url(db)
    with user_errors():
        device = pin_gpu(gpu, Path(tasks.queue_settings().gpu_lock_dir))
    broker_url = _broker(db_url, broker)
    with user_errors():
        ensure_schema(db_url)
    # No database connection may be open while the pool forks its processes.
    dispose_engine(db_url)
    from db.session import redact

    typer.echo(
        f"segbench worker: database {redact(db_url)}, broker {broker_url.split('@')[-1]}, "
        f"{concurrency} process(es) on {device}",
        err=True,
    )
    tasks.app.worker_main(
        [
            "worker",
            "--pool=prefork",
            f"--concurrency={concurrency}",
            f"--loglevel={loglevel}",
            f"--hostname=segbench-{os.getpid()}@%h",
            f"--queues={tasks.QUEUE}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


@app.command()
def cancel(
    run_ids: RunIdsArg = None,
    sweep: SweepOpt = None,
    db: DbOpt = None,
    format: FormatOpt = "table",
) -> None:
    """Cancel runs: queued ones at once, running ones at the end of their epoch."""
    from db import jobs
    from db.session import session_scope

    with user_errors(), session_scope(_url(db)) as session:
        result = jobs.cancel(session, run_ids=run_ids, sweep=sweep)
    _emit(
        format,
        result,
        f"cancelled {len(result['cancelled'])} queued run(s); asked "
        f"{len(result['requested'])} running run(s) to stop after their epoch",
    )


@app.command()
def retry(
    run_ids: RunIdsArg = None,
    sweep: SweepOpt = None,
    db: DbOpt = None,
    broker: BrokerOpt = None,
    format: FormatOpt = "table",
) -> None:
    """Queue failed or cancelled runs again (they resume from their last checkpoint)."""
    from db import jobs
    from db.session import session_scope

    db_url = _url(db)
    with user_errors():
        _broker(db_url, broker)
        with session_scope(db_url) as session:
            ids = jobs.retry(session, run_ids=run_ids, sweep=sweep)
    _publish(ids)
    _emit(format, {"runs": ids}, f"queued {len(ids)} run(s) again: {ids}")


DEMO_SWEEP = "demo"
DEMO_GRID = {
    "experiments": ["lung-segmentation"],
    "architectures": ["unet", "linknet", "fpn", "pspnet"],
    "encoders": ["resnet18", "mobilenet_v2"],
    "inits": ["random"],
}
DEMO_DATA = {"image_size": 64, "train_slices": 40, "test_volumes": 2, "slices_per_volume": 16}


def _demo(home: Path, db_url: str) -> None:
    """Generated stand-in data and a small sweep: live training within a minute."""
    from worker.data import synth
    from worker.grid import expand
    from worker.protocol import Protocol

    data = home / "demo-data"
    if not (data / "manifest.json").exists():
        typer.echo(f"generating SYNTHETIC stand-in CT data in {data} ...", err=True)
        synth(data, **DEMO_DATA)
    protocol = Protocol(epochs=10, image_size=DEMO_DATA["image_size"])
    result = submit_runs(expand(**DEMO_GRID), protocol, data=data, sweep=DEMO_SWEEP, db_url=db_url)
    typer.echo(
        f"demo sweep '{DEMO_SWEEP}': {len(result['runs'])} runs on synthetic data "
        f"({len(result['published'])} queued)",
        err=True,
    )


def _dashboard_available() -> bool:
    from worker.cli import load_commands

    commands = load_commands().registered_commands
    return any((c.name or getattr(c.callback, "__name__", "")) == "dashboard" for c in commands)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    os.setsid()
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@app.command()
def up(
    demo: Annotated[
        bool, typer.Option("--demo", help="Generate stand-in data and queue a small sweep.")
    ] = False,
    home: Annotated[
        Path, typer.Option("--dir", help="Folder for the database, broker, artifacts, logs.")
    ] = Path("."),
    port: Annotated[int, typer.Option("--port", help="Dashboard port on 127.0.0.1.")] = 8501,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c")] = 1,
) -> None:
    """The embedded stack on this machine: SQLite + serverless broker + one worker +
    the dashboard on 127.0.0.1, until Ctrl-C (which stops all of it)."""
    import signal
    import time

    from db.session import dispose_engine, ensure_schema
    from worker import tasks

    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    (home / "logs").mkdir(exist_ok=True)
    db_url = f"sqlite:///{home / 'segbench.db'}"
    broker_url = tasks.embedded_broker_url(db_url)
    env = {
        **os.environ,
        "SEGBENCH_DATABASE_URL": db_url,
        "SEGBENCH_BROKER_URL": broker_url,
        "SEGBENCH_ARTIFACTS_DIR": str(home / "artifacts"),
        "SEGBENCH_DATA_DIR": str(home / ("demo-data" if demo else "data")),
    }
    os.environ.update(env)
    tasks.queue_settings.cache_clear()
    with user_errors():
        ensure_schema(db_url)
        _broker(db_url, broker_url)
        if demo:
            _demo(home, db_url)
    dispose_engine(db_url)

    cli = [sys.executable, "-m", "worker.cli"]
    commands = {
        "worker": [
            *cli,
            "worker",
            "--db",
            db_url,
            "--broker",
            broker_url,
            "--concurrency",
            str(concurrency),
        ],
    }
    if _dashboard_available():
        commands["dashboard"] = [*cli, "dashboard", "--port", str(port), "--db", db_url]
    children: dict[str, subprocess.Popen] = {}
    for name, argv in commands.items():
        log_file = open(home / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - child's
        children[name] = subprocess.Popen(
            argv,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    if "dashboard" in children:
        typer.echo(f"dashboard: http://127.0.0.1:{port}", err=True)
    else:
        typer.echo("dashboard unavailable (no `segbench dashboard` command here)", err=True)
    typer.echo(f"worker logs: {home / 'logs'}; Ctrl-C stops everything", err=True)

    stop: list[int] = []

    def on_signal(signum, _frame) -> None:
        stop.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    crashed = None
    try:
        while not stop and crashed is None:
            crashed = next((n for n, p in children.items() if p.poll() is not None), None)
            time.sleep(0.3)
    finally:
        typer.echo("stopping: running runs finish their epoch and go back to the queue", err=True)
        _stop_children(children, grace=tasks.queue_settings().soft_shutdown_timeout + 15)
        for s, handler in previous.items():
            signal.signal(s, handler)
    if crashed is not None:
        fail(f"the {crashed} stopped unexpectedly; see {home / 'logs' / (crashed + '.log')}.")
    typer.echo("stopped", err=True)


def _stop_children(children: dict[str, subprocess.Popen], grace: float) -> None:
    import time

    for process in children.values():
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + grace
    for process in children.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

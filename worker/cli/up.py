"""`segbench up [--demo]`: the embedded stack on one machine (SQLite, a serverless
broker, one worker, the dashboard on 127.0.0.1), started and stopped by one command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from db.grid import expand
from db.protocol import Protocol
from db.session import dispose_engine, ensure_schema
from db.settings import get_settings
from worker.cli.app import app
from worker.cli.options import SlotsOpt, fail, user_errors

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
    from worker.data.synth import synth
    from worker.queue import service

    data = home / "demo-data"
    if not (data / "manifest.json").exists():
        typer.echo(f"generating SYNTHETIC stand-in CT data in {data} ...", err=True)
        synth(data, **DEMO_DATA)
    protocol = Protocol(epochs=10, image_size=DEMO_DATA["image_size"])
    result = service.submit_runs(
        expand(**DEMO_GRID), protocol, data=data, sweep=DEMO_SWEEP, db_url=db_url
    )
    typer.echo(
        f"demo sweep '{DEMO_SWEEP}': {len(result.runs)} runs on synthetic data "
        f"({len(result.published)} queued)",
        err=True,
    )


def _doctor_short_form(db_url: str, broker_url: str) -> None:
    """What `segbench doctor` finds, in its short form, before anything starts (the
    worker this command starts is not counted: it is not running yet)."""
    from worker.cli.doctor import short_form
    from worker.queue import doctor

    rows = doctor.run_checks(db_url=db_url, broker_url=broker_url, skip=("workers",))
    typer.echo(short_form(rows), err=True)


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
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            help="Dashboard port on 127.0.0.1 (default 8501, or the next free one).",
            show_default=False,
        ),
    ] = None,
    slots: SlotsOpt = "auto",
) -> None:
    """The embedded stack on this machine: SQLite + serverless broker + one worker +
    the dashboard on 127.0.0.1, until Ctrl-C (which stops all of it)."""
    from worker.cli.dashboard import choose_port
    from worker.queue import broker, service  # Celery and the data stack: only here

    port, note = choose_port(port)
    if note:
        typer.echo(note, err=True)
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    (home / "logs").mkdir(exist_ok=True)
    db_url = f"sqlite:///{home / 'segbench.db'}"
    broker_url = broker.embedded_broker_url(db_url)
    env = {
        **os.environ,
        "SEGBENCH_DATABASE_URL": db_url,
        "SEGBENCH_BROKER_URL": broker_url,
        "SEGBENCH_ARTIFACTS_DIR": str(home / "artifacts"),
        "SEGBENCH_DATA_DIR": str(home / ("demo-data" if demo else "data")),
    }
    os.environ.update(env)
    get_settings.cache_clear()
    with user_errors():
        ensure_schema(db_url)
        service.connect_broker(db_url, broker_url)
        if demo:
            _demo(home, db_url)
    _doctor_short_form(db_url, broker_url)
    dispose_engine(db_url)

    cli = [sys.executable, "-m", "worker.cli"]
    commands = {
        "dashboard": [*cli, "dashboard", "--port", str(port), "--db", db_url],
        "worker": [
            *cli,
            "worker",
            "--db",
            db_url,
            "--broker",
            broker_url,
            "--slots",
            slots,
        ],
    }
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
    typer.echo(f"dashboard: http://127.0.0.1:{port}", err=True)
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
        _stop_children(children, grace=get_settings().soft_shutdown_timeout + 15)
        for s, handler in previous.items():
            signal.signal(s, handler)
    if crashed is not None:
        fail(f"the {crashed} stopped unexpectedly; see {home / 'logs' / (crashed + '.log')}.")
    typer.echo("stopped", err=True)


def _stop_children(children: dict[str, subprocess.Popen], grace: float) -> None:
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

"""`segbench submit`, `worker`, `cancel` and `retry`: the job queue's front door.

Each command calls worker.queue.service, the functions the dashboard calls too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from db.presets import check_seeds, protocol_line
from db.session import dispose_engine, ensure_schema, redact
from db.settings import get_settings, worker_host
from worker.cli.app import app
from worker.cli.options import (
    BrokerOpt,
    DbOpt,
    FormatOpt,
    PresetOpt,
    RunIdsArg,
    SlotsOpt,
    database_url,
    emit,
    model_selection,
    protocol_from_options,
    user_errors,
    with_grid_filters,
    with_protocol_options,
)

EverySweepOpt = Annotated[str | None, typer.Option("--sweep", help="Every run of this sweep.")]


@app.command()
@with_protocol_options
@with_grid_filters
def submit(
    preset: PresetOpt = None,
    seed: Annotated[
        list[int] | None,
        typer.Option("--seed", help="Seed(s); repeat for several runs per grid cell (default 0)."),
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Dataset folder (default: SEGBENCH_DATA_DIR).")
    ] = None,
    sweep: Annotated[
        str | None, typer.Option("--sweep", help="Sweep name (default: dataset + protocol hash).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Your own model instead of grid cells: module:function or a segbench.models "
            "entry point name (docs/models.md); one run per selected experiment.",
        ),
    ] = None,
    allow_missing_weights: Annotated[
        bool,
        typer.Option(
            "--allow-missing-weights",
            help="Queue ImageNet runs even when downloads are forbidden and their weights "
            "are not in this machine's cache (the workers have a cache of their own).",
        ),
    ] = False,
    db: DbOpt = None,
    broker: BrokerOpt = None,
    format: FormatOpt = "table",
    protocol_options: dict | None = None,
    grid: dict | None = None,
) -> None:
    """Queue runs of the grid for the workers; submitting the same sweep again adds nothing.

    Says which ImageNet encoders are in the weights cache; with downloads forbidden
    (HF_HUB_OFFLINE=1) runs whose weights are missing are refused.
    """
    from worker.queue import service  # Celery and the data stack: only when submitting

    specs = model_selection(model, grid or {})
    with user_errors():
        protocol = protocol_from_options(preset, protocol_options or {})
        seeds = check_seeds(seed)
        db_url = database_url(db)
        result = service.submit_runs(
            specs,
            protocol,
            data=Path(data or get_settings().data_dir),
            sweep=sweep,
            db_url=db_url,
            allow_missing_weights=allow_missing_weights,
            seeds=seeds,
            broker_url=broker,
        )
    note = result.weights.sentence()
    if note:
        typer.echo(note, err=True)
    emit(
        format,
        {"sweep": result.sweep, "runs": result.runs, "protocol": result.protocol},
        f"sweep {result.sweep}: {len(result.runs)} runs "
        f"(seeds {', '.join(map(str, result.seeds))}), "
        f"{len(result.published)} queued and sent to the workers\n"
        f"protocol {protocol.hash()}: {protocol_line(result.protocol)}",
    )


@app.command("worker")
def worker_command(
    slots: SlotsOpt = "auto",
    gpu: Annotated[str, typer.Option(help="auto, none (CPU) or a GPU index.")] = "auto",
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
    until_done: Annotated[
        bool,
        typer.Option(
            "--until-done",
            help="Stop once the database holds no queued or running run (scripts, the "
            "README's tour); without it the worker waits for new runs until Ctrl-C.",
        ),
    ] = False,
    db: DbOpt = None,
    broker: BrokerOpt = None,
) -> None:
    """A Celery worker: trains queued runs, one pool process per slot (run at once).

    Logs one line per epoch of each run (epoch/epochs, losses, seconds) and the test
    pass; Ctrl-C or SIGTERM hands running runs back to the queue after their epoch."""
    # Must precede billiard's import: SIGTERM then means "soft shutdown, requeue".
    os.environ.setdefault("REMAP_SIGTERM", "SIGQUIT")
    # No GPU may be touched before pin_gpu has chosen one (nvidia-smi, not torch).
    from worker.queue.gpu import pin_gpu
    from worker.queue.presence import gpu_details
    from worker.queue.slots import choose_slots

    db_url = database_url(db)
    settings = get_settings()
    with user_errors():
        device = pin_gpu(gpu, Path(settings.gpu_lock_dir))
        concurrency, why = choose_slots(
            slots, device=device, gpu_memory_mib=gpu_details(device)[1],
            table=settings.cell_table,
        )  # fmt: skip
    # N training processes share the CPU cores: N x all-cores threads oversubscribe
    # (measured ~10x slower on 2 cores). Pool processes read this (worker.queue.tasks).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // concurrency)))
    # Imported only now: billiard must see REMAP_SIGTERM. Importing tasks registers the
    # task and the worker's signals.
    from worker.queue import broker as queue_broker
    from worker.queue import presence, service, tasks  # noqa: F401

    with user_errors():
        broker_url = service.connect_broker(db_url, broker)
        ensure_schema(db_url)
    presence.configure(device=device, concurrency=concurrency)
    # No database connection may be open while the pool forks its processes.
    dispose_engine(db_url)
    typer.echo(
        f"segbench worker: database {redact(db_url)}, broker {broker_url.split('@')[-1]}, "
        f"{concurrency} slot(s) on {device} ({why})"
        + ("; stops when no run is queued or running" if until_done else ""),
        err=True,
    )
    if until_done:
        stop_when_done(db_url)
    queue_broker.app.worker_main(
        [
            "worker",
            "--pool=prefork",
            f"--concurrency={concurrency}",
            f"--loglevel={loglevel}",
            f"--hostname=segbench-{os.getpid()}@{worker_host()}",
            f"--queues={queue_broker.QUEUE}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


def stop_when_done(db_url: str, interval: float = 2.0) -> None:
    """--until-done: once the worker is ready, look every `interval` seconds; when no
    run is queued or running on two looks in a row, stop the worker as `docker stop`
    does (SIGTERM: nothing runs, so it exits at once). The thread starts after the
    pool has forked and uses an engine without a pool (as the reaper does), so no
    child inherits a connection."""
    import signal
    import threading
    import time

    from celery import signals
    from sqlalchemy.orm import Session

    from db import queries
    from db.engine import create_fresh_engine

    def watch() -> None:
        engine = create_fresh_engine(db_url, pooled=False)
        idle = 0
        while True:
            time.sleep(interval)
            try:
                with Session(engine) as session:
                    counts = queries.queue_counts(session)
            except Exception:  # the database blinked: look again
                continue
            idle = idle + 1 if counts["queued"] == 0 and counts["running"] == 0 else 0
            if idle >= 2:
                typer.echo(
                    "segbench worker: no run is queued or running; stopping (--until-done)",
                    err=True,
                )
                os.kill(os.getpid(), signal.SIGTERM)
                return

    def start(**_kwargs) -> None:
        threading.Thread(target=watch, name="segbench-until-done", daemon=True).start()

    signals.worker_ready.connect(start, weak=False)


@app.command()
def cancel(
    run_ids: RunIdsArg = None,
    sweep: EverySweepOpt = None,
    db: DbOpt = None,
    format: FormatOpt = "table",
) -> None:
    """Cancel runs: queued ones at once, running ones at the end of their epoch."""
    from worker.queue import service

    with user_errors():
        result = service.cancel(database_url(db), run_ids=run_ids, sweep=sweep)
    emit(
        format,
        result.to_dict(),
        f"cancelled {len(result.cancelled)} queued run(s); asked "
        f"{len(result.requested)} running run(s) to stop after their epoch",
    )


@app.command()
def retry(
    run_ids: RunIdsArg = None,
    sweep: EverySweepOpt = None,
    db: DbOpt = None,
    broker: BrokerOpt = None,
    format: FormatOpt = "table",
) -> None:
    """Queue failed or cancelled runs again (they resume from their last checkpoint)."""
    from worker.queue import service

    with user_errors():
        done = service.retry(database_url(db), run_ids=run_ids, sweep=sweep, broker_url=broker)
    emit(format, done.to_dict(), f"queued {len(done.runs)} run(s) again: {done.runs}")

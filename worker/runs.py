"""Run one grid cell in this process, through the same database lifecycle as a
queued run: submit (idempotent) -> claim -> fit with a DbRecorder -> finish /
fail / cancelled. Used by `segbench train`."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from db import jobs
from db.errors import DatabaseError
from db.models import Run
from db.recorder import DbRecorder
from db.session import session_scope
from db.settings import get_settings
from worker import data
from worker.grid import RunSpec
from worker.protocol import Cancelled, Protocol, Recorder, RunOutcome
from worker.train import TeeRecorder, TrainSpec, fit


class RunNotClaimable(DatabaseError):
    """The run exists but is running elsewhere, finished or out of attempts."""


@dataclass
class InProcessResult:
    run_id: int
    sweep: str
    artifacts_dir: Path
    outcome: RunOutcome


def default_sweep_name(protocol: Protocol) -> str:
    return f"train-{protocol.hash()[:8]}"


def train_in_process(
    run: RunSpec,
    protocol: Protocol,
    *,
    data_dir: Path,
    device: str = "cpu",
    artifacts_dir: Path | None = None,
    sweep: str | None = None,
    url: str | None = None,
    recorders: Callable[[Path], list[Recorder]] | None = None,
) -> InProcessResult:
    settings = get_settings()
    url = url or settings.database_url
    sweep = sweep or default_sweep_name(protocol)
    info = data.dataset_info(data_dir)
    with session_scope(url) as session:
        run_id = jobs.submit(
            session,
            specs=[run],
            protocol=protocol,
            sweep=sweep,
            data_dir=str(Path(data_dir).resolve()),
            dataset=info,
        )[0]
    worker = f"cli@{platform.node()}:{os.getpid()}"
    with session_scope(url) as session:
        claimed = jobs.claim(session, run_id=run_id, worker=worker)
        status = None if claimed else session.get(Run, run_id).status
    if claimed is None:
        raise RunNotClaimable(
            f"Run {run_id} ({run.name}) of sweep '{sweep}' is already {status}; "
            f"see `segbench status --sweep {sweep}`, or `segbench retry {run_id}` "
            "to train it again."
        )
    out = Path(artifacts_dir) if artifacts_dir else Path(settings.artifacts_dir) / str(run_id)
    spec = TrainSpec(
        run=run, protocol=protocol, data_dir=Path(data_dir), device=device, artifacts_dir=out
    )
    recorder = TeeRecorder(DbRecorder(url, run_id), *(recorders(out) if recorders else []))
    try:
        outcome = fit(spec, recorder)
    except Cancelled:
        with session_scope(url) as session:
            jobs.mark_cancelled(session, run_id=run_id)
        raise
    except BaseException as exc:
        reason = str(exc) or type(exc).__name__
        with session_scope(url) as session:
            jobs.fail(session, run_id=run_id, reason=reason)
        raise
    return InProcessResult(run_id=run_id, sweep=sweep, artifacts_dir=out, outcome=outcome)

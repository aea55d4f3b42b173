"""Run one grid cell in this process, through the same database lifecycle as a
queued run (submit, then worker.runner.execute: claim, lease + heartbeat, fit,
finish / fail / cancelled). Used by `segbench train`."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from db import jobs
from db.errors import DatabaseError
from db.models import Run
from db.session import session_scope
from db.settings import get_settings
from worker import data, runner
from worker.grid import RunSpec
from worker.protocol import Cancelled, Protocol, Recorder


class RunNotClaimable(DatabaseError):
    """The run exists but is running elsewhere, finished or out of attempts."""


class RunFailed(RuntimeError):
    """The run ended failed; the message is the reason stored with it."""


@dataclass
class InProcessResult:
    run_id: int
    sweep: str
    artifacts_dir: Path


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
    out = Path(artifacts_dir) if artifacts_dir else Path(settings.artifacts_dir) / str(run_id)
    ended = runner.execute(
        run_id,
        worker=f"cli@{platform.node()}/{os.getpid()}",
        database_url=url,
        artifacts_dir=out,
        device=device,
        recorders=recorders(out) if recorders else (),
    )
    if ended == runner.SUCCEEDED:
        return InProcessResult(run_id=run_id, sweep=sweep, artifacts_dir=out)
    with session_scope(url) as session:
        row = session.get(Run, run_id)
        status, error = row.status, row.error
    if ended == runner.SKIPPED:
        raise RunNotClaimable(
            f"Run {run_id} ({run.name}) of sweep '{sweep}' is already {status}; "
            f"see `segbench status --sweep {sweep}`, or `segbench retry {run_id}` "
            "to train it again."
        )
    if ended == runner.CANCELLED:
        raise Cancelled(f"Run {run_id} ({run.name}) was cancelled.")
    raise RunFailed(f"Run {run_id} ({run.name}) {status}: {error or ended}.")

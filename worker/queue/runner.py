"""Execute one run id: claim it, train it with a lease, record how it ended.

A run ends succeeded, failed(reason) or cancelled. The lease and the owner-only
writes are worker.queue.lease's. A worker that shuts down asks its runs to stop
after their epoch (the checkpoint is written by then) and hands them back: status
queued again, the interrupted attempt not counted (db.jobs.release).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from db import jobs
from db.errors import UnknownRun
from db.session import session_scope
from db.settings import get_settings
from worker.data.errors import DataError
from worker.queue import weights
from worker.queue.lease import Heartbeat, LeasedRecorder, LeaseLost
from worker.training.recorder import Cancelled, Recorder, TeeRecorder
from worker.training.trainer import TrainSpec, fit

log = logging.getLogger(__name__)

SKIPPED, SUCCEEDED, FAILED, CANCELLED, RELEASED, LOST = (
    "skipped",
    "succeeded",
    "failed",
    "cancelled",
    "released",
    "lost",
)


def failure_reason(error: BaseException) -> str:
    if isinstance(error, DataError):
        return f"data check failed: {error}"
    if isinstance(error, weights.WeightsError):
        return str(error)
    where = traceback.extract_tb(error.__traceback__)
    place = f" (at {Path(where[-1].filename).name}:{where[-1].lineno})" if where else ""
    return f"{type(error).__name__}: {error}{place}"


def execute(
    run_id: int,
    *,
    worker: str,
    database_url: str | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    artifacts_dir: Path | None = None,
    device: str | None = None,
    recorders: Sequence[Recorder] = (),
) -> str:
    """Run `run_id` to its end on this process; returns what happened (SUCCEEDED,
    FAILED, CANCELLED, RELEASED, SKIPPED: not claimable, LOST: taken over).

    `artifacts_dir` (default: <artifacts dir>/<run id>), `device` (default: the
    settings') and extra `recorders` (files, a progress bar) serve `segbench train`.
    """
    settings = get_settings()
    node = worker.rpartition("/")[0]
    try:
        with session_scope(database_url) as session:
            claimed = jobs.claim(session, run_id=run_id, worker=worker)
            if claimed is None and jobs.expire_lease_of_dead_process(
                session, run_id=run_id, node=node
            ):
                claimed = jobs.claim(session, run_id=run_id, worker=worker)
    except UnknownRun:
        log.warning("run %d is not in the database; message dropped", run_id)
        return SKIPPED
    if claimed is None:
        log.info("run %d: nothing to claim (running elsewhere or finished)", run_id)
        return SKIPPED
    log.info(
        "run %d (%s) claimed by %s, attempt %d", run_id, claimed.spec.name, worker, claimed.attempts
    )
    recorder = LeasedRecorder(
        database_url, run_id, worker, settings.lease_seconds, should_stop=should_stop
    )
    try:
        with Heartbeat(recorder, interval=max(settings.lease_seconds / 3, 0.5)):
            weights.prepare(database_url, run_id, worker, claimed.spec)
            _train(claimed, recorder, settings, artifacts_dir, device, recorders)
    except LeaseLost as error:
        log.warning("%s; leaving it to its new holder", error)
        return LOST
    except Cancelled:
        if recorder.stopping:
            _end(database_url, run_id, worker, functools.partial(jobs.release, worker=worker))
            log.warning("run %d handed back to the queue (worker shutting down)", run_id)
            return RELEASED
        _end(database_url, run_id, worker, jobs.mark_cancelled)
        return CANCELLED
    except (SystemExit, KeyboardInterrupt):
        # The pool terminates this process (cold shutdown): hand the run back.
        with contextlib.suppress(Exception):
            _end(database_url, run_id, worker, functools.partial(jobs.release, worker=worker))
        raise
    except Exception as error:
        reason = failure_reason(error)
        log.exception("run %d failed: %s", run_id, reason)
        _end(
            database_url, run_id, worker, lambda s, **kw: jobs.fail(s, run_id=run_id, reason=reason)
        )
        return FAILED
    return SUCCEEDED


def _train(claimed, recorder: LeasedRecorder, settings, artifacts_dir, device, recorders) -> None:
    spec = TrainSpec(
        run=claimed.spec,
        protocol=claimed.protocol,
        data_dir=Path(claimed.data_dir),
        device=device or settings.device,
        artifacts_dir=Path(artifacts_dir or Path(settings.artifacts_dir) / str(claimed.run_id)),
    )
    fit(spec, TeeRecorder(recorder, *recorders) if recorders else recorder)


def _end(database_url, run_id: int, worker: str, action) -> None:
    """Apply `action` only while this worker still holds the run."""
    with session_scope(database_url) as session:
        if jobs.heartbeat(session, run_id=run_id, worker=worker):
            action(session, run_id=run_id)

"""Execute one run id: claim it, train it with a lease, record how it ended.

A run ends succeeded, failed(reason) or cancelled. Only the worker that holds the
lease may write: every epoch, and the final results, first extend the lease of
this worker in the same transaction, so a worker that lost its run (it stalled
past its lease and another worker took over) stops before it writes anything. A
heartbeat thread extends the lease every lease/3 seconds while a long epoch runs.

A worker that shuts down asks its runs to stop after their epoch (the checkpoint is
written by then) and hands them back: status queued again, the interrupted attempt
not counted.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import subprocess
import threading
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update

from db import jobs
from db.errors import UnknownRun
from db.models import Run, utcnow
from db.recorder import DbRecorder
from db.session import session_scope
from worker.protocol import Cancelled, EpochRecord, Recorder, RunOutcome

log = logging.getLogger(__name__)

SKIPPED, SUCCEEDED, FAILED, CANCELLED, RELEASED, LOST = (
    "skipped",
    "succeeded",
    "failed",
    "cancelled",
    "released",
    "lost",
)


class LeaseLost(Exception):
    """This worker no longer holds the run's lease (another worker took it over)."""


def release(session, *, run_id: int, worker: str) -> bool:
    """Give a running run back to the queue without counting the interrupted attempt."""
    result = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == "running", Run.worker == worker)
        .values(
            status="queued",
            worker=None,
            lease_expires_at=None,
            attempts=Run.attempts - 1,
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def expire_lease_of_dead_process(session, *, run_id: int, node: str) -> bool:
    """Expire the lease of run `run_id` if its holder was a process of this same
    Celery node that no longer exists (killed by the OOM killer, say), so that the
    redelivered message can claim it at once instead of waiting for the lease."""
    holder = session.scalar(select(Run.worker).where(Run.id == run_id, Run.status == "running"))
    if not holder or "/" not in holder:
        return False
    holder_node, _, pid = holder.rpartition("/")
    if holder_node != node or not pid.isdigit() or _alive(int(pid)):
        return False
    result = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == "running", Run.worker == holder)
        .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LeasedRecorder(DbRecorder):
    """DbRecorder that writes only while this worker holds the lease, and that asks
    fit() to stop when the run is cancelled or the worker shuts down."""

    def __init__(
        self,
        url: str | None,
        run_id: int,
        worker: str,
        lease_seconds: int | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__(url, run_id, lease_seconds)
        self.worker = worker
        self.should_stop = should_stop
        self.lost = threading.Event()
        self.stopping = False

    def _hold(self, session) -> None:
        if self.lost.is_set() or not jobs.heartbeat(
            session, run_id=self.run_id, worker=self.worker, lease_seconds=self.lease_seconds
        ):
            self.lost.set()
            raise LeaseLost(f"run {self.run_id} is no longer held by {self.worker}")

    def start(self, config: dict) -> None:
        with session_scope(self.url) as session:
            self._hold(session)
            jobs.record_start(session, run_id=self.run_id, config=config)

    def epoch(self, record: EpochRecord) -> None:
        with session_scope(self.url) as session:
            self._hold(session)
            self._cancel_seen = jobs.record_epoch(
                session, run_id=self.run_id, record=record, lease_seconds=self.lease_seconds
            )

    def cancelled(self) -> bool:
        if self.should_stop():
            self.stopping = True
            return True
        return super().cancelled()

    def finish(self, outcome: RunOutcome) -> None:
        with session_scope(self.url) as session:
            self._hold(session)
            jobs.finish(session, run_id=self.run_id, outcome=outcome)


class Heartbeat(threading.Thread):
    """Extends the lease every `interval` seconds while an epoch runs."""

    def __init__(self, recorder: LeasedRecorder, interval: float) -> None:
        super().__init__(name=f"heartbeat-{recorder.run_id}", daemon=True)
        self.recorder = recorder
        self.interval = interval
        self._done = threading.Event()

    def run(self) -> None:
        r = self.recorder
        while not self._done.wait(self.interval):
            try:
                with session_scope(r.url) as session:
                    held = jobs.heartbeat(
                        session, run_id=r.run_id, worker=r.worker, lease_seconds=r.lease_seconds
                    )
            except Exception as error:  # the database blinked: try again next beat
                log.warning("heartbeat of run %d: %s", r.run_id, error)
                continue
            if not held:
                log.warning("run %d is no longer held by %s", r.run_id, r.worker)
                r.lost.set()
                return

    def __enter__(self) -> Heartbeat:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self.join(timeout=5)


def pin_gpu(gpu: str, lock_dir: Path) -> str:
    """Choose this worker's GPU before anything touches CUDA; returns the choice.

    ``auto``: keep CUDA_VISIBLE_DEVICES if it is set, else take the first GPU that
    no other worker on this machine holds (a lock file per GPU in `lock_dir`,
    released when the process ends), else CPU. ``none``: CPU. ``N``: GPU N.
    """
    if gpu == "none":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return "cpu"
    if gpu.isdigit():
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        return f"gpu {gpu}"
    if gpu != "auto":
        raise ValueError(f"Unknown --gpu '{gpu}'; expected auto, none or a GPU index.")
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}"
    gpus = _gpu_indices()
    if not gpus:
        return "cpu"
    import fcntl

    lock_dir.mkdir(parents=True, exist_ok=True)
    for index in gpus:
        handle = open(lock_dir / f"gpu-{index}.lock", "w")  # noqa: SIM115 - held for life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _held_locks.append(handle)
        os.environ["CUDA_VISIBLE_DEVICES"] = index
        return f"gpu {index}"
    raise ValueError(
        f"Every GPU of this machine ({', '.join(gpus)}) already has a worker; use "
        "--concurrency N for several runs per GPU, or --gpu N to share one."
    )


_held_locks: list = []


def _gpu_indices() -> list[str]:
    # nvidia-smi (or the device files), not torch: the worker's parent must not
    # initialise CUDA before its pool forks.
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
        return [line.strip() for line in out.splitlines() if line.strip().isdigit()]
    except (OSError, subprocess.SubprocessError):
        devices = [p for p in Path("/dev").glob("nvidia[0-9]*") if p.name[6:].isdigit()]
        return [str(i) for i in range(len(devices))]


def resolve_device(setting: str) -> str:
    if setting != "auto":
        return setting
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        log.warning(
            "CUDA_VISIBLE_DEVICES=%s but CUDA is not available: training on CPU",
            os.environ["CUDA_VISIBLE_DEVICES"],
        )
    return "cpu"


def failure_reason(error: BaseException) -> str:
    from worker.data import DataError

    if isinstance(error, DataError):
        return f"data check failed: {error}"
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
    from worker.tasks import queue_settings

    settings = queue_settings()
    node = worker.rpartition("/")[0]
    try:
        with session_scope(database_url) as session:
            claimed = jobs.claim(session, run_id=run_id, worker=worker)
            if claimed is None and expire_lease_of_dead_process(session, run_id=run_id, node=node):
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
            _train(claimed, recorder, settings, artifacts_dir, device, recorders)
    except LeaseLost as error:
        log.warning("%s; leaving it to its new holder", error)
        return LOST
    except Cancelled:
        if recorder.stopping:
            _end(database_url, run_id, worker, functools.partial(release, worker=worker))
            log.warning("run %d handed back to the queue (worker shutting down)", run_id)
            return RELEASED
        _end(database_url, run_id, worker, jobs.mark_cancelled)
        return CANCELLED
    except (SystemExit, KeyboardInterrupt):
        # The pool terminates this process (cold shutdown): hand the run back.
        with contextlib.suppress(Exception):
            _end(database_url, run_id, worker, functools.partial(release, worker=worker))
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
    from worker.train import TeeRecorder, TrainSpec, fit

    spec = TrainSpec(
        run=claimed.spec,
        protocol=claimed.protocol,
        data_dir=Path(claimed.data_dir),
        device=resolve_device(device or settings.device),
        artifacts_dir=Path(artifacts_dir or Path(settings.artifacts_dir) / str(claimed.run_id)),
    )
    fit(spec, TeeRecorder(recorder, *recorders) if recorders else recorder)


def _end(database_url, run_id: int, worker: str, action) -> None:
    """Apply `action` only while this worker still holds the run."""
    with session_scope(database_url) as session:
        if jobs.heartbeat(session, run_id=run_id, worker=worker):
            action(session, run_id=run_id)

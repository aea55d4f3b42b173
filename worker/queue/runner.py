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

import torch

from db import jobs, queries
from db.errors import SegbenchError, UnknownRun
from db.session import session_scope
from db.settings import get_settings, worker_host
from worker.data.errors import DataError
from worker.queue import run_log, slots, weights
from worker.queue.lease import Heartbeat, LeasedRecorder, LeaseLost, with_retries
from worker.training import custom
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


def failure_reason(error: BaseException, claimed=None) -> str:
    """The one sentence stored with a failed run."""
    if isinstance(error, DataError):
        return f"data check failed: {error}"
    if isinstance(error, torch.OutOfMemoryError):
        what = "the model"
        if claimed is not None:
            spec, size = claimed.spec, claimed.protocol.batch_size
            what = f"{spec.architecture}-{spec.encoder} at batch size {size}"
        return (
            f"out of GPU memory training {what} on {device_name_of(error)}; it is not "
            "retried on the same device: use a GPU with more memory, a smaller batch "
            "or image size, or fewer runs per GPU (--concurrency)."
        )
    if isinstance(error, SegbenchError):
        return str(error)
    where = traceback.extract_tb(error.__traceback__)
    place = f" (at {Path(where[-1].filename).name}:{where[-1].lineno})" if where else ""
    return f"{type(error).__name__}: {error}{place}"


def device_name_of(error: BaseException) -> str:
    return "GPU" if "CUDA" in str(error) or torch.cuda.is_available() else "this device"


def execute(
    run_id: int,
    *,
    worker: str,
    database_url: str | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    artifacts_dir: Path | None = None,
    device: str | None = None,
    recorders: Sequence[Recorder] = (),
    from_queue: bool = False,
    requeue: Callable[[int], object] | None = None,
) -> str:
    """Run `run_id` to its end on this process; returns what happened (SUCCEEDED,
    FAILED, CANCELLED, RELEASED, SKIPPED: not claimable, LOST: taken over).

    `from_queue` (a worker's message): `run_id` is the message's hint, and the run
    trained is the one db.jobs.claim_from_queue picks (the next queued run of the
    cell this process trained last, else the hint, else the next queued run);
    `requeue` sends the id of a run handed back at shutdown. `artifacts_dir`
    (default: <artifacts dir>/<run id>), `device` (default: the settings') and extra
    `recorders` (files, a progress bar) serve `segbench train`.
    """
    global _last_cell
    settings = get_settings()
    node = worker.rpartition("/")[0]
    try:
        with session_scope(database_url) as session:
            claimed = _claim(session, run_id, worker, node, from_queue)
    except UnknownRun:
        log.warning("run %d is not in the database; message dropped", run_id)
        return SKIPPED
    if claimed is None:
        log.info("run %d: nothing to claim (running elsewhere or finished)", run_id)
        return SKIPPED
    cell = (claimed.spec.architecture, claimed.spec.encoder)
    if claimed.run_id != run_id:
        why = (
            "the next of this process's cell"
            if cell == _last_cell
            else "its own is taken, cancelled or finished: the next of the sweep's order"
        )
        log.info("run %d: claimed run %d (%s) in its place, %s", run_id, claimed.run_id,
                 claimed.spec.name, why)  # fmt: skip
    run_id = claimed.run_id
    if from_queue:
        _last_cell = cell
    recorder = LeasedRecorder(
        database_url, run_id, worker, settings.lease_seconds, should_stop=should_stop
    )
    tail = run_log.attach()  # kept with the run if it fails
    log.info(
        "run %d (%s) claimed by %s, attempt %d", run_id, claimed.spec.name, worker, claimed.attempts
    )
    try:
        with Heartbeat(recorder, interval=heartbeat_interval(settings)):
            weights.prepare(database_url, run_id, worker, claimed.spec)
            check_model(database_url, run_id, claimed.spec)
            _train(claimed, recorder, settings, artifacts_dir, device, recorders)
    except LeaseLost as error:
        log.warning("%s; leaving it to its new holder", error)
        return LOST
    except Cancelled:
        if recorder.stopping:
            _end(database_url, run_id, worker, functools.partial(jobs.release, worker=worker))
            log.warning("run %d handed back to the queue (worker shutting down)", run_id)
            if requeue is not None:
                requeue(run_id)
            return RELEASED
        _end(database_url, run_id, worker, jobs.mark_cancelled)
        return CANCELLED
    except (SystemExit, KeyboardInterrupt):
        # The pool terminates this process (cold shutdown): hand the run back.
        with contextlib.suppress(Exception):
            _end(database_url, run_id, worker, functools.partial(jobs.release, worker=worker))
        raise
    except Exception as error:
        reason = failure_reason(error, claimed)
        why = {"traceback": run_log.traceback_text(error), "log_tail": tail.text()}
        log.exception("run %d failed: %s", run_id, reason)

        def failed(session, **_) -> None:
            jobs.record_failure(session, run_id=run_id, **why)
            jobs.fail(session, run_id=run_id, reason=reason)

        _end(database_url, run_id, worker, failed)
        return FAILED
    finally:
        run_log.detach(tail)
    return SUCCEEDED


# The cell (architecture, encoder) of the last run this process took from the queue.
_last_cell: tuple[str, str] | None = None


def _claim(session, run_id: int, worker: str, node: str, from_queue: bool):
    """The run this process trains: a message's (with cell affinity), else `run_id`;
    a run held by a process of this host that died is taken at once."""
    if from_queue:
        return jobs.claim_from_queue(
            session, run_id=run_id, worker=worker, cell=_last_cell,
            table_seconds=_table_seconds, node=node,
        )  # fmt: skip
    claimed = jobs.claim(session, run_id=run_id, worker=worker)
    if claimed is None and jobs.expire_lease_of_dead_process(session, run_id=run_id, node=node):
        claimed = jobs.claim(session, run_id=run_id, worker=worker)
    return claimed


def _table_seconds() -> dict[tuple[str, str], float]:
    """The cell table's seconds per step (the order of a sweep without measured
    epochs, as submit used it); none when there is no table or it cannot be read
    (submit said so already: the claim must not fail for it)."""
    table = get_settings().cell_table
    if not table:
        return {}
    try:
        return slots.step_seconds(table)
    except slots.SlotsError:
        return {}


def check_model(database_url, run_id: int, spec) -> None:
    """A user's model must import on this worker and be the code that was submitted
    (same sha256 of its module); ModelImportError with one sentence otherwise."""
    if not spec.custom:
        return
    provenance = custom.resolve(spec.encoder)[1]
    with session_scope(database_url) as session:
        submitted = (queries.run_detail(session, run_id=run_id)["config"] or {}).get("model")
    want = (submitted or {}).get("sha256")
    if want and provenance["sha256"] and provenance["sha256"] != want:
        raise custom.ModelImportError(
            f"Module '{provenance['module']}' on host {worker_host()} is not the code submitted "
            f"for run {run_id} (sha256 {provenance['sha256'][:12]}, submitted {want[:12]}); "
            "install the submitted version there, or submit the new one to another sweep."
        )


def heartbeat_interval(settings) -> float:
    """The settings' heartbeat, never more than a third of the lease."""
    return max(min(settings.heartbeat_seconds, settings.lease_seconds / 3), 0.5)


def artifact_folder(run_id: int, uid: str, artifacts_dir: str | Path | None = None) -> Path:
    """Where a run keeps its files: ``<artifacts dir>/<run id>-<uid>``. The uid makes
    it unique across databases that share one artifacts folder."""
    return Path(artifacts_dir or get_settings().artifacts_dir) / f"{run_id}-{uid}"


def run_identity(claimed) -> dict:
    """What every checkpoint of the run carries, and a resume must find again."""
    return {
        "run_uid": claimed.uid,
        "run": claimed.spec.name,
        "protocol_hash": claimed.protocol_hash,
    }


def _train(claimed, recorder: LeasedRecorder, settings, artifacts_dir, device, recorders) -> None:
    spec = TrainSpec(
        run=claimed.spec,
        protocol=claimed.protocol,
        data_dir=Path(claimed.data_dir),
        device=device or settings.device,
        artifacts_dir=Path(artifacts_dir or artifact_folder(claimed.run_id, claimed.uid)),
        identity=run_identity(claimed),
    )
    fit(
        spec, TeeRecorder(recorder, run_log.EpochLog(claimed.run_id, claimed.spec.name), *recorders)
    )


def _end(database_url, run_id: int, worker: str, action) -> None:
    """Apply `action` only while this worker still holds the run (a database blip is
    waited out)."""

    def once() -> None:
        with session_scope(database_url) as session:
            if jobs.heartbeat(session, run_id=run_id, worker=worker):
                action(session, run_id=run_id)

    with_retries(once, what=f"run {run_id}: end")

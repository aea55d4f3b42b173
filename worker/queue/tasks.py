"""The one thin Celery task, and the worker's life cycle around it (soft shutdown,
the reaper thread, what each pool process sets up). The logic of a run lives in
worker.queue.runner; the app and the broker in worker.queue.broker."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys

from celery import signals
from celery.exceptions import Reject

from db.settings import get_settings
from worker.queue import presence, runner
from worker.queue.broker import TASK, app, database_url, publish
from worker.queue.reaper import Reaper

# Shared with the pool's processes (created before they fork): set when the worker
# shuts down, so runs stop at the end of their epoch and are requeued. A lock-free
# byte: it is set from a signal handler, and a pool process may die at any moment.
_stopping = multiprocessing.RawValue("b", 0)


def stopping() -> bool:
    return bool(_stopping.value)


def stop_runs() -> None:
    _stopping.value = 1


@app.task(name=TASK, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run(self, run_id: int) -> str:
    """Claim a run (`run_id`, or the next run of the cell this process trained last:
    db.jobs.affinity), train it and record how it ended (see worker.queue.runner)."""
    if stopping():  # taken while this worker shuts down: leave it to another one
        raise Reject("worker shutting down", requeue=True)

    return runner.execute(
        int(run_id),
        worker=f"{self.request.hostname}/{os.getpid()}",
        database_url=database_url(),
        should_stop=stopping,
        from_queue=True,  # cell affinity: see db.jobs.affinity
        requeue=lambda handed_back: publish([handed_back]),
    )


def begin_shutdown(consumer) -> None:
    """Stop taking messages (a run handed back must go to another worker) and ask the
    running runs to stop after their epoch."""
    stop_runs()
    task_consumer = getattr(consumer, "task_consumer", None)
    if task_consumer is not None:
        with contextlib.suppress(Exception):
            task_consumer.cancel()


@signals.worker_shutting_down.connect
def _warm_shutdown_stops_runs_too(sender=None, **_kwargs) -> None:
    # Ctrl-C (warm shutdown) would wait for every run to end, hours on a GPU: the
    # runs rather stop after their epoch and go back to the queue.
    begin_shutdown(_consumer)


@signals.worker_process_init.connect
def _share_cpu_threads(**_kwargs) -> None:
    # torch may have been imported before the pool forked; apply the thread budget
    # `segbench worker` chose for each of its pool processes.
    threads = os.environ.get("OMP_NUM_THREADS", "")
    torch = sys.modules.get("torch")
    if torch is not None and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))


@signals.worker_process_init.connect
def _forget_inherited_connections(**_kwargs) -> None:
    # The SQLAlchemy broker transport caches its engine per process; a pool process
    # must not share the parent's SQLite connections.
    transport = sys.modules.get("kombu.transport.sqlalchemy")
    if transport is not None:
        for engine, _ in list(transport.Channel._engines.values()):
            engine.dispose(close=False)
        transport.Channel._engines.clear()


_reaper = None
_consumer = None


@signals.worker_ready.connect
def _start_reaper(sender=None, **_kwargs) -> None:
    global _reaper, _consumer
    _consumer = sender
    _reaper = Reaper(database_url(), interval=get_settings().reaper_interval)
    _reaper.start()
    presence.start(database_url(), name=getattr(sender, "hostname", None) or presence.node())


@signals.worker_shutdown.connect
def _stop_reaper(sender=None, **_kwargs) -> None:
    if _reaper is not None:
        _reaper.stop()
    presence.stop()

"""The database's recorders: what fit() reports goes into rows, written only while
this worker holds the run's lease; and the heartbeat thread that keeps the lease.

Only the worker that holds the lease may write: every epoch, and the final results,
first extend the lease of this worker in the same transaction, so a worker that lost
its run (it stalled past its lease and another worker took over) stops before it
writes anything. A heartbeat thread extends the lease every lease/3 seconds while a
long epoch runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import exc as sa_exc

from db import jobs
from db.errors import DatabaseUnreachable
from db.protocol import EpochRecord, RunOutcome
from db.session import session_scope
from db.settings import get_settings
from worker.training.recorder import Recorder

log = logging.getLogger(__name__)
T = TypeVar("T")


class LeaseLost(Exception):
    """This worker no longer holds the run's lease (another worker took it over)."""


# Errors of a database that blinked (restarting, locked by another writer, out of
# connections): the write is tried again rather than ending the run's attempt.
TRANSIENT = (sa_exc.OperationalError, sa_exc.InterfaceError, DatabaseUnreachable)


def with_retries(write: Callable[[], T], *, what: str, patience: float | None = None) -> T:
    """Run `write` (one transaction), trying again with growing pauses while the
    database does not answer, for at most `patience` seconds (the settings'
    db_retry_seconds): a blip of the database costs a pause, not a run."""
    patience = get_settings().db_retry_seconds if patience is None else patience
    deadline = time.monotonic() + patience
    pause = 0.5
    while True:
        try:
            return write()
        except TRANSIENT as error:
            if time.monotonic() + pause > deadline:
                raise
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            log.warning("%s: the database did not answer (%s); again in %.1f s", what, first, pause)
            time.sleep(pause)
            pause = min(pause * 2, 8.0)


class DbRecorder(Recorder):
    """Records a run's progress in the database; each call is its own short transaction.

    `epoch` also extends the run's lease (the heartbeat); `cancelled` reads the flag
    that `segbench cancel` sets.
    """

    def __init__(self, url: str | None, run_id: int, lease_seconds: int | None = None) -> None:
        self.url = url
        self.run_id = run_id
        self.lease_seconds = lease_seconds
        # the cancel flag as read by the last epoch's write, used once by cancelled()
        self._cancel_seen: bool | None = None

    def start(self, config: dict) -> None:
        with session_scope(self.url) as session:
            jobs.record_start(session, run_id=self.run_id, config=config)

    def epoch(self, record: EpochRecord) -> None:
        with session_scope(self.url) as session:
            self._cancel_seen = jobs.record_epoch(
                session, run_id=self.run_id, record=record, lease_seconds=self.lease_seconds
            )

    def cancelled(self) -> bool:
        # fit() asks right after epoch(): answer from that write, without a query
        if self._cancel_seen is not None:
            seen, self._cancel_seen = self._cancel_seen, None
            return seen
        with session_scope(self.url) as session:
            return jobs.is_cancel_requested(session, run_id=self.run_id)

    def finish(self, outcome: RunOutcome) -> None:
        with session_scope(self.url) as session:
            jobs.finish(session, run_id=self.run_id, outcome=outcome)


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
        self.epochs = 0  # of the protocol, for the log lines
        self._test_started: float | None = None

    def _hold(self, session) -> None:
        if self.lost.is_set() or not jobs.heartbeat(
            session, run_id=self.run_id, worker=self.worker, lease_seconds=self.lease_seconds
        ):
            self.lost.set()
            raise LeaseLost(f"run {self.run_id} is no longer held by {self.worker}")

    def _write(self, what: str, action: Callable) -> Any:
        def once():
            with session_scope(self.url) as session:
                self._hold(session)
                return action(session)

        return with_retries(once, what=f"run {self.run_id}: {what}")

    def start(self, config: dict) -> None:
        self._write("start", lambda s: jobs.record_start(s, run_id=self.run_id, config=config))
        self.epochs = int((config.get("protocol") or {}).get("epochs") or 0)

    def epoch(self, record: EpochRecord) -> None:
        self._cancel_seen = self._write(
            f"epoch {record.epoch}",
            lambda s: jobs.record_epoch(
                s, run_id=self.run_id, record=record, lease_seconds=self.lease_seconds
            ),
        )
        log.info(
            "run %d: epoch %d/%d, train loss %.4f, validation loss %.4f%s, %.1f s",
            self.run_id,
            record.epoch,
            self.epochs,
            record.train_loss,
            record.val_loss,
            " (best so far)" if record.is_best else "",
            record.train_seconds + record.val_seconds,
        )

    def testing(self, done: int, total: int) -> None:
        if self._test_started is None:
            self._test_started = time.monotonic()
            log.info("run %d: testing the best model on %d test slices", self.run_id, total)
        elif done == total:
            log.info(
                "run %d: tested %d slices in %.1f s",
                self.run_id,
                total,
                time.monotonic() - self._test_started,
            )

    def cancelled(self) -> bool:
        if self.should_stop():
            self.stopping = True
            return True
        return super().cancelled()

    def finish(self, outcome: RunOutcome) -> None:
        self._write("results", lambda s: jobs.finish(s, run_id=self.run_id, outcome=outcome))
        log.info(
            "run %d: results recorded: test Dice %.2f%% on %d slices, best epoch %d",
            self.run_id,
            outcome.test.dice,
            len(outcome.test.slices),
            outcome.best_epoch,
        )


class Heartbeat(threading.Thread):
    """Extends the lease every `interval` seconds while an epoch runs; after a failed
    beat (the database blinked) it tries again within a second."""

    def __init__(self, recorder: LeasedRecorder, interval: float) -> None:
        super().__init__(name=f"heartbeat-{recorder.run_id}", daemon=True)
        self.recorder = recorder
        self.interval = interval
        self._done = threading.Event()

    def run(self) -> None:
        r = self.recorder
        wait = self.interval
        while not self._done.wait(wait):
            wait = self.interval
            try:
                with session_scope(r.url) as session:
                    held = jobs.heartbeat(
                        session, run_id=r.run_id, worker=r.worker, lease_seconds=r.lease_seconds
                    )
            except Exception as error:  # the database blinked: try again soon
                log.warning("heartbeat of run %d: %s", r.run_id, error)
                wait = min(self.interval, 1.0)
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

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
from collections.abc import Callable

from db import jobs
from db.protocol import EpochRecord, RunOutcome
from db.session import session_scope
from worker.training.recorder import Recorder

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """This worker no longer holds the run's lease (another worker took it over)."""


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

"""The database side of worker.protocol.Recorder: what fit() reports goes into rows."""

from __future__ import annotations

from db import jobs
from db.session import session_scope
from worker.protocol import EpochRecord, Recorder, RunOutcome


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

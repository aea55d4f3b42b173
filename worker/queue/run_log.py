"""What a failed run keeps beside its one-sentence reason: the traceback and the last
lines its worker logged while it ran (db.jobs.record_failure), so the dashboard's run
page shows them without the worker's log file.

A worker trains one run per pool process and thread; the lines are the log records of
the thread that runs it, from the claim to its end, one line per epoch among them.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from db.jobs.records import LOG_TAIL_LINES
from db.protocol import EpochRecord
from worker.training.recorder import Recorder

log = logging.getLogger(__name__)
LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogTail(logging.Handler):
    """Keeps the last `lines` records logged by one thread, formatted, in memory."""

    def __init__(self, lines: int = LOG_TAIL_LINES, thread: int | None = None) -> None:
        super().__init__(level=logging.INFO)
        self.lines: deque[str] = deque(maxlen=lines)
        self.thread = threading.get_ident() if thread is None else thread
        self.setFormatter(logging.Formatter(LINE_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        try:
            self.lines.extend(self.format(record).splitlines())
        except Exception:  # a record that does not format must not fail the run
            self.handleError(record)

    def text(self) -> str:
        return "\n".join(self.lines)


def attach(lines: int = LOG_TAIL_LINES) -> LogTail:
    """Start keeping this thread's log lines (INFO and above); detach() stops."""
    handler = LogTail(lines)
    logging.getLogger().addHandler(handler)
    return handler


def detach(handler: LogTail) -> None:
    logging.getLogger().removeHandler(handler)


@contextmanager
def log_tail(lines: int = LOG_TAIL_LINES) -> Iterator[LogTail]:
    """Keep this thread's log lines (INFO and above) while the block runs."""
    handler = attach(lines)
    try:
        yield handler
    finally:
        detach(handler)


def traceback_text(error: BaseException) -> str:
    """The exception's traceback as Python prints it."""
    return "".join(traceback.format_exception(error)).rstrip()


class EpochLog(Recorder):
    """One log line per finished epoch, so a failed run's log tail shows how far it got."""

    def __init__(self, run_id: int, name: str) -> None:
        self.run_id, self.name = run_id, name

    def epoch(self, record: EpochRecord) -> None:
        log.info(
            "run %d (%s) epoch %d: train loss %.4f, validation loss %.4f (%.1f s + %.1f s)",
            self.run_id, self.name, record.epoch, record.train_loss, record.val_loss,
            record.train_seconds, record.val_seconds,
        )  # fmt: skip

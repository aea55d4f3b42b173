"""The reaper: a thread in every `segbench worker` that keeps the queue honest.

Each tick (at start, then every ``reaper_interval`` seconds, with jitter) it
1. requeues runs whose lease expired (their worker died) with db.jobs.requeue_expired,
   and, at once, runs held by a process of this host that no longer exists,
   or fails them after their last attempt, and publishes the requeued ids, so they
   resume from their checkpoint on any worker;
2. when the broker's queue was empty on two ticks in a row while the database held
   the same queued runs (a broker restarted without persistence, a publish that
   failed, rows queued without a message), publishes those ids again. A duplicate
   message is harmless: the claim lets only one delivery run.

Why a thread in each worker rather than Celery beat: beat must run exactly once in
the whole deployment (a second beat doubles every schedule), is one more service to
keep alive, and is not there in the embedded deployment. Every reaper step is a
conditional UPDATE, so N reapers are as safe as one; and with no worker alive there
is nothing to hand runs to anyway.

The thread runs in the worker's main process, which forks the pool's processes: it
uses its own engine without a connection pool, so no database connection is open
while the pool forks and no child inherits one.
"""

from __future__ import annotations

import logging
import random
import threading
import time

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from db import jobs, queries
from db.engine import create_fresh_engine
from db.settings import worker_host
from worker.queue.broker import compact_embedded_broker, publish, queue_depth

log = logging.getLogger(__name__)


def _engine(url: str) -> Engine:
    return create_fresh_engine(url, pooled=False)


class Reaper(threading.Thread):
    """Requeues runs of dead workers and republishes lost messages, every `interval`."""

    def __init__(self, database_url: str, *, interval: float = 30.0) -> None:
        super().__init__(name="segbench-reaper", daemon=True)
        self.database_url = database_url
        self.interval = float(interval)
        self._stopped = threading.Event()
        self._engine: Engine | None = None
        self._orphans: set[int] = set()

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        wait = 0.0  # the first tick at once: a worker that starts picks up dead runs
        while not self._stopped.wait(wait):
            wait = self.interval * random.uniform(0.8, 1.2)
            try:
                self.tick()
            except Exception as error:  # a database or broker blip: try again next tick
                log.warning("reaper: %s: %s", type(error).__name__, error)

    def tick(self) -> dict[str, list[int]]:
        """One pass; returns {"requeued", "failed", "republished"} run ids."""
        if self._engine is None:
            self._engine = _engine(self.database_url)
        with Session(self._engine) as session, session.begin():
            dead = jobs.expire_leases_of_dead_processes(session, host=worker_host())
            requeued, failed = jobs.requeue_expired(session)
        expired = sorted(set(requeued) - set(dead))
        if dead:
            log.warning("reaper: requeued runs %s, held by processes of this host that died", dead)
        if expired:
            log.warning("reaper: leases expired, requeued runs %s", expired)
        if requeued:
            publish(requeued)
        if failed:
            log.warning("reaper: runs %s failed after their last attempt", failed)
        # A run is republished only when it was queued with an empty queue on two
        # ticks in a row: a message a worker has just taken is not a lost one.
        orphans: set[int] = set()
        if queue_depth() == 0:
            with Session(self._engine) as session:
                orphans = set(queries.queued_run_ids(session)) - set(requeued)
        republished = sorted(orphans & self._orphans)
        compact_embedded_broker()
        self._orphans = orphans - set(republished)
        if republished:
            log.warning("reaper: queue empty, republishing queued runs %s", republished)
            publish(republished)
        return {"requeued": requeued, "failed": failed, "republished": republished}


def wait_until_released(database_url: str, *, node: str, timeout: float) -> None:
    """Wait until no run is running on worker `node` (they finish their epoch and are
    requeued), for at most `timeout` seconds. Called from the shutdown signal handler."""
    deadline = time.monotonic() + timeout
    engine = _engine(database_url)
    try:
        while time.monotonic() < deadline:
            with Session(engine) as session:
                running = queries.running_on_node(session, node=node)
            if not running:
                return
            log.warning("soft shutdown: waiting for %d run(s) to finish their epoch", running)
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    except Exception as error:
        log.warning("soft shutdown: cannot read the database (%s); waiting it out", error)
        time.sleep(max(0.0, deadline - time.monotonic()))
    finally:
        engine.dispose()

"""Leases of runs whose holder died: a process of this host that no longer exists
gives its run up at once, without waiting for the lease to expire."""

from __future__ import annotations

import os
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.jobs._shared import NO_SYNC
from db.models import Run, utcnow


def holder_host(worker: str) -> str:
    """The host of a lease holder named ``<node>@<host>/<pid>`` (or ``<host>/<pid>``)."""
    return worker.rpartition("/")[0].rpartition("@")[2]


def _dead_here(holder: str | None, host: str) -> bool:
    if not holder or "/" not in holder:
        return False
    pid = holder.rpartition("/")[2]
    return holder_host(holder) == host and pid.isdigit() and not process_alive(int(pid))


def expire_lease_of_dead_process(session: Session, *, run_id: int, node: str) -> bool:
    """Expire the lease of run `run_id` if its holder was a process of this same host
    (`node`: ``<name>@<host>``) that no longer exists (killed by the OOM killer,
    say), so that the redelivered message can claim it at once instead of waiting
    for the lease."""
    holder = session.scalar(select(Run.worker).where(Run.id == run_id, Run.status == "running"))
    if not _dead_here(holder, node.rpartition("@")[2]):
        return False
    return bool(_expire(session, [run_id], [holder]))


def expire_leases_of_dead_processes(session: Session, *, host: str) -> list[int]:
    """Expire the leases of every running run held by a process of `host` that no
    longer exists; returns their ids (the reaper then requeues them at once)."""
    rows = session.execute(
        select(Run.id, Run.worker).where(Run.status == "running", Run.worker.is_not(None))
    ).all()
    dead = [(r.id, r.worker) for r in rows if _dead_here(r.worker, host)]
    return _expire(session, [i for i, _ in dead], [w for _, w in dead])


def _expire(session: Session, run_ids: list[int], holders: list[str]) -> list[int]:
    expired = []
    for run_id, holder in zip(run_ids, holders, strict=True):
        result = session.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == "running", Run.worker == holder)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
            .execution_options(**NO_SYNC)
        )
        if result.rowcount == 1:
            expired.append(run_id)
    return expired


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""What a `segbench worker` writes about itself: its row in `workers` (registered at
start, a heartbeat every few seconds with the runs it trains, removed when it stops),
and the short note a run shows while its worker prepares it (downloading weights)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from db.jobs._shared import NO_SYNC, upsert_insert
from db.models import Run, Worker, utcnow


def register(
    session: Session,
    *,
    name: str,
    host: str,
    pid: int,
    device: str,
    concurrency: int,
    gpu_name: str | None = None,
    gpu_memory_mb: int | None = None,
) -> None:
    """Record worker `name` as alive now (a restarted worker of the same name starts over)."""
    now = utcnow()
    values = {
        "name": name,
        "host": host,
        "pid": pid,
        "device": device,
        "gpu_name": gpu_name,
        "gpu_memory_mb": gpu_memory_mb,
        "concurrency": concurrency,
        "started_at": now,
        "heartbeat_at": now,
        "current_runs": [],
    }
    insert = upsert_insert(session, Worker).values(**values)
    session.execute(
        insert.on_conflict_do_update(
            index_elements=[Worker.name],
            set_={k: insert.excluded[k] for k in values if k != "name"},
        )
    )


def worker_heartbeat(session: Session, *, name: str) -> list[int] | None:
    """Worker `name` is alive: stamp it and store the runs it trains now (the running
    runs whose worker is one of its processes, `name/pid`). Returns them, or None
    when the worker has no row (it was pruned as stale: register again)."""
    current = list(
        session.scalars(
            select(Run.id)
            .where(Run.status == "running", Run.worker.like(f"{name}/%"))
            .order_by(Run.id)
        )
    )
    result = session.execute(
        update(Worker)
        .where(Worker.name == name)
        .values(heartbeat_at=utcnow(), current_runs=current)
        .execution_options(**NO_SYNC)
    )
    return current if result.rowcount == 1 else None


def deregister(session: Session, *, name: str) -> None:
    """Worker `name` stopped."""
    session.execute(delete(Worker).where(Worker.name == name).execution_options(**NO_SYNC))


def prune_workers(session: Session, *, older_than_s: float) -> int:
    """Remove workers silent for more than `older_than_s` seconds (killed, machine
    gone); returns how many."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    result = session.execute(
        delete(Worker).where(Worker.heartbeat_at < cutoff).execution_options(**NO_SYNC)
    )
    return result.rowcount or 0


def set_note(session: Session, *, run_id: int, note: str | None, worker: str | None = None) -> bool:
    """Set what run `run_id` shows while it is prepared (of `worker`, if given, and
    only while it runs there); False if it does not."""
    conditions = [Run.id == run_id]
    if worker is not None:
        conditions += [Run.worker == worker, Run.status == "running"]
    result = session.execute(
        update(Run).where(*conditions).values(note=note).execution_options(**NO_SYNC)
    )
    return result.rowcount == 1

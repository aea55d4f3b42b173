"""Reads of the live workers and a sweep's estimated time left."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Epoch, Run, Worker, utcnow
from db.queries._shared import rows_of, sweep_id
from db.settings import get_settings

WORKER_COLUMNS = (
    "name",
    "host",
    "pid",
    "device",
    "gpu_name",
    "gpu_memory_mb",
    "concurrency",
    "started_at",
    "heartbeat_at",
    "current_runs",
)


def _stale_after(stale_after_s: float | None) -> float:
    return get_settings().worker_stale_after if stale_after_s is None else stale_after_s


def live_workers(session: Session, *, stale_after_s: float | None = None) -> list[dict[str, Any]]:
    """Workers whose last heartbeat is at most `stale_after_s` seconds old (default:
    the setting worker_stale_after), by host and start; each with `heartbeat_age_s`."""
    now = utcnow()
    cutoff = now - timedelta(seconds=_stale_after(stale_after_s))
    stmt = (
        select(*(getattr(Worker, c) for c in WORKER_COLUMNS))
        .where(Worker.heartbeat_at >= cutoff)
        .order_by(Worker.host, Worker.started_at, Worker.name)
    )
    rows = rows_of(session, stmt)
    for row in rows:
        row["current_runs"] = list(row["current_runs"] or [])
        beat = row["heartbeat_at"]
        if beat is not None and beat.tzinfo is None:  # SQLite through Core: naive UTC
            beat = beat.replace(tzinfo=now.tzinfo)
            row["heartbeat_at"] = beat
        started = row["started_at"]
        if started is not None and started.tzinfo is None:
            row["started_at"] = started.replace(tzinfo=now.tzinfo)
        row["heartbeat_age_s"] = max(0.0, (now - beat).total_seconds()) if beat else None
    return rows


def sweep_eta(
    session: Session, *, sweep: str | None = None, stale_after_s: float | None = None
) -> dict[str, Any]:
    """How long the sweep's (or every) unfinished run still needs.

    From the mean measured seconds per epoch of its finished epochs, the epochs its
    queued and running runs still have, and the live workers' run slots (their
    concurrency added up). `eta_seconds` is None when no epoch has been measured yet
    or no worker is alive. Returns {"remaining_epochs", "seconds_per_epoch",
    "slots", "workers", "eta_seconds"}. A run trains on one slot, so fewer runs left
    than slots use only as many slots as there are runs."""
    sid = sweep_id(session, sweep) if sweep is not None else None
    unfinished = select(
        func.coalesce(func.sum(Run.epochs - Run.epoch), 0), func.count(Run.id)
    ).where(Run.status.in_(("queued", "running")))
    measured = select(func.avg(Epoch.train_seconds + Epoch.val_seconds)).join(
        Run, Run.id == Epoch.run_id
    )
    if sid is not None:
        unfinished = unfinished.where(Run.sweep_id == sid)
        measured = measured.where(Run.sweep_id == sid)
    remaining, runs_left = session.execute(unfinished).one()
    remaining = int(remaining or 0)
    per_epoch = session.scalar(measured)
    workers = live_workers(session, stale_after_s=stale_after_s)
    slots = sum(int(w["concurrency"] or 1) for w in workers)
    eta = None
    if per_epoch is not None and slots:
        # runs train whole on one slot: never more parallel than there are runs left
        eta = remaining * float(per_epoch) / max(1, min(slots, runs_left))
    return {
        "remaining_epochs": remaining,
        "seconds_per_epoch": None if per_epoch is None else float(per_epoch),
        "slots": slots,
        "workers": len(workers),
        "eta_seconds": 0.0 if remaining == 0 else eta,
    }

"""Reads of the live workers and a sweep's estimated time left."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import RUN_STATUSES, Epoch, Run, Sweep, Worker, utcnow
from db.protocol import Protocol
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
    """How far the sweep (or every sweep) has come and how long it still needs: the
    one progress and time-left figure that the Live page, `segbench status` and
    `segbench workers` show.

    Progress: `done` runs (succeeded or failed) of `total` (every run but the
    cancelled ones, which will not train); `counts` per status.
    Time left: the epochs the queued and running runs still have, times the mean
    measured seconds per epoch of the sweep's finished epochs, divided by the live
    workers' run slots (their concurrency added up; a run trains on one slot, so
    never more slots than runs left). `eta_seconds` is None while no epoch has been
    measured or no worker is alive, 0 when nothing is left.
    Returns {"counts", "done", "total", "cancelled", "remaining_epochs",
    "seconds_per_epoch", "slots", "workers", "eta_seconds"}."""
    sid = sweep_id(session, sweep) if sweep is not None else None
    by_status = select(Run.status, func.count(), func.coalesce(func.sum(Run.epochs - Run.epoch), 0))
    measured = select(func.avg(Epoch.train_seconds + Epoch.val_seconds)).join(
        Run, Run.id == Epoch.run_id
    )
    if sid is not None:
        by_status = by_status.where(Run.sweep_id == sid)
        measured = measured.where(Run.sweep_id == sid)
    counts = dict.fromkeys(RUN_STATUSES, 0)
    remaining = runs_left = 0
    for status, n, epochs_left in session.execute(by_status.group_by(Run.status)):
        counts[status] = int(n)
        if status in ("queued", "running"):
            remaining += max(int(epochs_left or 0), 0)
            runs_left += int(n)
    per_epoch = session.scalar(measured)
    workers = live_workers(session, stale_after_s=stale_after_s)
    slots = sum(int(w["concurrency"] or 1) for w in workers)
    eta = None
    if remaining == 0:
        eta = 0.0
    elif per_epoch is not None and slots:
        eta = remaining * float(per_epoch) / max(1, min(slots, runs_left))
    return {
        "counts": counts,
        "done": counts["succeeded"] + counts["failed"],
        "total": sum(counts.values()) - counts["cancelled"],
        "cancelled": counts["cancelled"],
        "remaining_epochs": remaining,
        "seconds_per_epoch": None if per_epoch is None else float(per_epoch),
        "slots": slots,
        "workers": len(workers),
        "eta_seconds": eta,
    }


MEASURED_KEYS = ("architecture", "encoder", "image_size", "batch_size", "device")


def measured_epoch_seconds(session: Session) -> list[dict[str, Any]]:
    """The measured seconds per epoch (training + validation) of every grid cell, by
    the image size and batch size it trained at and the device it trained on:
    [{"architecture", "encoder", "image_size", "batch_size", "device", "runs",
    "epochs", "seconds_per_epoch"}]."""
    stmt = (
        select(
            Run.architecture,
            Run.encoder,
            Run.sweep_id,
            Run.device,
            func.count(func.distinct(Run.id)),
            func.count(),
            func.avg(Epoch.train_seconds + Epoch.val_seconds),
        )
        .join(Run, Run.id == Epoch.run_id)
        .group_by(Run.architecture, Run.encoder, Run.sweep_id, Run.device)
    )
    groups = session.execute(stmt).all()
    protocols = dict(session.execute(select(Sweep.id, Sweep.protocol)).all()) if groups else {}
    merged: dict[tuple, dict[str, Any]] = {}
    for architecture, encoder, sid, device, runs, epochs, seconds in groups:
        protocol = Protocol.from_dict(protocols.get(sid) or {})
        key = (architecture, encoder, protocol.image_size, protocol.batch_size, device)
        row = merged.setdefault(
            key,
            dict(zip(MEASURED_KEYS, key, strict=True)) | {"runs": 0, "epochs": 0, "total": 0.0},
        )
        row["runs"] += int(runs)
        row["epochs"] += int(epochs)
        row["total"] += float(seconds) * int(epochs)
    for row in merged.values():
        row["seconds_per_epoch"] = row.pop("total") / row["epochs"]
    return list(merged.values())


def time_estimate(
    measured: list[dict[str, Any]],
    cells: list[tuple[str, str]],
    *,
    image_size: int,
    batch_size: int,
    epochs: int,
    slots: int,
) -> dict[str, Any]:
    """How long runs of these (architecture, encoder) cells (one entry per run) would
    train, from `measured` (measured_epoch_seconds) at the same image and batch size.

    A cell measured itself uses its own mean seconds per epoch; any other the mean of
    every measured cell at that size. The runs share `slots` run slots (at least one).
    Returns {"seconds": wall-clock estimate or None when nothing was measured at that
    size, "run_seconds": the runs' summed training time, "own": runs whose cell was
    measured, "borrowed": runs that took the mean, "measured_runs", "measured_epochs",
    "devices", "slots"}."""
    same = [m for m in measured if (m["image_size"], m["batch_size"]) == (image_size, batch_size)]
    seconds_of: dict[tuple[str, str], float] = {}  # cell -> summed seconds of its epochs
    epochs_of: dict[tuple[str, str], int] = {}
    for m in same:
        cell = (m["architecture"], m["encoder"])
        seconds_of[cell] = seconds_of.get(cell, 0.0) + m["seconds_per_epoch"] * m["epochs"]
        epochs_of[cell] = epochs_of.get(cell, 0) + m["epochs"]
    n_epochs = sum(m["epochs"] for m in same)
    out: dict[str, Any] = {
        "seconds": None,
        "run_seconds": None,
        "own": 0,
        "borrowed": 0,
        "measured_runs": sum(m["runs"] for m in same),
        "measured_epochs": n_epochs,
        "devices": sorted({str(m["device"] or "unknown device") for m in same}),
        "slots": max(1, int(slots)),
    }
    if not same or not cells:
        return out
    overall = sum(seconds_of.values()) / n_epochs
    total = 0.0
    for cell in cells:
        own = cell in seconds_of
        total += epochs * (seconds_of[cell] / epochs_of[cell] if own else overall)
        out["own" if own else "borrowed"] += 1
    out["run_seconds"] = total
    out["seconds"] = total / max(1, min(out["slots"], len(cells)))
    return out


def cell_seconds(session: Session, *, image_size: int, batch_size: int) -> dict[tuple, float]:
    """Measured seconds per epoch of each (architecture, encoder) cell at this image and
    batch size, over every device that trained it (the weighted mean of its epochs)."""
    total: dict[tuple, list[float]] = {}
    for row in measured_epoch_seconds(session):
        if (row["image_size"], row["batch_size"]) == (image_size, batch_size):
            sums = total.setdefault((row["architecture"], row["encoder"]), [0.0, 0])
            sums[0] += row["seconds_per_epoch"] * row["epochs"]
            sums[1] += row["epochs"]
    return {cell: s / n for cell, (s, n) in total.items() if n}


def longest_cells_first(
    session: Session, run_ids: Sequence[int], seconds: Mapping[tuple, float]
) -> list[int]:
    """`run_ids` in the order a sweep should train: the runs of one (architecture,
    encoder) cell adjacent, cells without a figure in `seconds` first (in the order
    given: they may be long), then the measured cells from the longest to the
    shortest, so that the last hour of a sweep is not one big model alone on a GPU."""
    rows = session.execute(
        select(Run.id, Run.architecture, Run.encoder).where(Run.id.in_(list(run_ids)))
    ).all()
    cells = {run_id: (architecture, encoder) for run_id, architecture, encoder in rows}
    groups: dict[tuple, list[int]] = {}
    for run_id in run_ids:
        groups.setdefault(cells[run_id], []).append(run_id)
    order = sorted(groups, key=lambda c: (c in seconds, -seconds.get(c, 0.0)))
    return [run_id for cell in order for run_id in groups[cell]]


def sweep_order(
    session: Session,
    run_ids: Sequence[int],
    *,
    image_size: int,
    batch_size: int,
    table_seconds: Callable[[], Mapping[tuple, float]] | None = None,
) -> list[int]:
    """`run_ids` (of one sweep) in the order its workers should train them: longest
    cells first, each cell's runs together (longest_cells_first), by the seconds per
    epoch measured in this database at that image and batch size, else by
    `table_seconds()` (a GPU session's cell table), else as given. Submit publishes a
    sweep in this order, and a message whose run is gone claims by it (db.jobs.affinity)."""
    seconds: Mapping[tuple, float] = cell_seconds(
        session, image_size=image_size, batch_size=batch_size
    )
    if not seconds and table_seconds is not None:
        seconds = table_seconds()
    return longest_cells_first(session, run_ids, seconds)

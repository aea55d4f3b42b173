"""Reads of runs and the queue: status, progress, failures, sweeps, one run."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from db.errors import UnknownRun
from db.grid import RunSpec
from db.models import RUN_STATUSES, Epoch, Run, Sweep, TestSummary, utcnow
from db.protocol import Protocol
from db.queries._shared import PROGRESS_COLUMNS, RUN_KEY_COLUMNS, filtered, rows_of, sweep_id

STATUS_KEYS = (
    "id",
    "experiment",
    "architecture",
    "encoder",
    "init",
    "seed",
    "status",
    "epoch",
    "epochs",
    "dice",
    "sensitivity",
    "specificity",
    "sweep",
    "protocol_hash",
    "train_precision",
    "nsd",
    "hd95",
)


def queue_counts(session: Session, *, sweep: str | None = None) -> dict[str, int]:
    """Number of runs per status (every status present, 0 if none)."""
    stmt = select(Run.status, func.count()).group_by(Run.status)
    if sweep is not None:
        stmt = stmt.where(Run.sweep_id == sweep_id(session, sweep))
    counts = dict.fromkeys(RUN_STATUSES, 0)
    counts.update({status: count for status, count in session.execute(stmt)})
    return counts


# what the Live page shows of a running or failed run
RUN_PROGRESS_COLUMNS = (
    *RUN_KEY_COLUMNS,
    Run.worker,
    Run.attempts,
    Run.epoch,
    Run.epochs,
)


def running_runs(session: Session, *, sweep: str | None = None) -> list[dict[str, Any]]:
    """Running runs with progress, worker, heartbeat and their mean seconds per epoch
    so far (the time left is the sweep's, db.queries.sweep_eta)."""
    # correlated: averages only the epochs of the few running runs, by primary key
    per_epoch = (
        select(func.avg(Epoch.train_seconds + Epoch.val_seconds))
        .where(Epoch.run_id == Run.id)
        .correlate(Run)
        .scalar_subquery()
    )
    stmt = (
        select(
            *RUN_PROGRESS_COLUMNS,
            Run.cancel_requested,
            Run.note,
            Run.started_at,
            Run.heartbeat_at,
            Run.lease_expires_at,
            per_epoch.label("seconds_per_epoch"),
        )
        .join(Sweep, Sweep.id == Run.sweep_id)
        .where(Run.status == "running")
        .order_by(Run.started_at, Run.id)
    )
    rows = rows_of(session, filtered(stmt, sweep=sweep))
    now = utcnow()
    for row in rows:
        lease = row["lease_expires_at"]
        row["lease_expired"] = lease is not None and lease < now
        beat = row["heartbeat_at"]
        row["heartbeat_age_seconds"] = None if beat is None else (now - beat).total_seconds()
    return rows


def failed_runs(
    session: Session, *, sweep: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Failed runs with their reasons, most recent first."""
    stmt = (
        select(
            *RUN_PROGRESS_COLUMNS,
            Run.error,
            Run.finished_at,
        )
        .join(Sweep, Sweep.id == Run.sweep_id)
        .where(Run.status == "failed")
        .order_by(Run.finished_at.desc().nulls_last(), Run.id)
        .limit(limit)
    )
    return rows_of(session, filtered(stmt, sweep=sweep))


RUN_LIST_KEYS = (
    "id", "sweep", "experiment", "architecture", "encoder", "init", "seed", "status",
    "epoch", "epochs", "dice", "started_at", "finished_at", "error",
)  # fmt: skip


def run_list(
    session: Session,
    *,
    sweep: str | None = None,
    status: str | list[str] | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Runs of a sweep (or every sweep), the most recently active first: running ones,
    then by when they finished or started; exactly RUN_LIST_KEYS."""
    active = func.coalesce(Run.finished_at, Run.started_at, Run.created_at)
    stmt = (
        select(
            *RUN_KEY_COLUMNS,
            *PROGRESS_COLUMNS,
            Run.started_at,
            Run.finished_at,
            Run.error,
        )
        .join(Sweep, Sweep.id == Run.sweep_id)
        .outerjoin(TestSummary, TestSummary.run_id == Run.id)
        .order_by(case((Run.status == "running", 0), else_=1), active.desc(), Run.id.desc())
        .limit(limit)
    )
    return rows_of(session, filtered(stmt, sweep=sweep, status=status))


def sweeps(session: Session) -> list[dict[str, Any]]:
    """Every sweep with its protocol, dataset and number of runs per status."""
    counts = [
        func.coalesce(func.sum(case((Run.status == status, 1), else_=0)), 0).label(status)
        for status in RUN_STATUSES
    ]
    stmt = (
        select(
            Sweep.id,
            Sweep.name,
            Sweep.protocol,
            Sweep.protocol_hash,
            Sweep.data_dir,
            Sweep.dataset_name,
            Sweep.dataset_kind,
            Sweep.synthetic,
            Sweep.created_at,
            func.count(Run.id).label("runs"),
            *counts,
        )
        .outerjoin(Run, Run.sweep_id == Sweep.id)
        .group_by(Sweep.id)
        .order_by(Sweep.created_at, Sweep.id)
    )
    return rows_of(session, stmt)


def run_detail(session: Session, *, run_id: int) -> dict[str, Any]:
    """Everything about one run: its row, its sweep's name, protocol and dataset folder,
    and its test summary."""
    stmt = (
        select(Run, Sweep.name, Sweep.protocol, Sweep.data_dir, TestSummary)
        .join(Sweep, Sweep.id == Run.sweep_id)
        .outerjoin(TestSummary, TestSummary.run_id == Run.id)
        .where(Run.id == run_id)
    )
    row = session.execute(stmt).one_or_none()
    if row is None:
        raise UnknownRun(
            f"No run with id {run_id} in the database; `segbench status` lists the runs."
        )
    run, sweep, protocol, data_dir, summary = row
    detail = {c.key: getattr(run, c.key) for c in Run.__table__.columns}
    detail.update(sweep=sweep, protocol=protocol or {}, data_dir=data_dir)
    summary_columns = [c.key for c in TestSummary.__table__.columns if c.key != "run_id"]
    detail["test"] = None if summary is None else {k: getattr(summary, k) for k in summary_columns}
    return detail


def status_rows(session: Session, sweep: str | None = None) -> list[dict[str, Any]]:
    """The rows of `segbench status --format json`: exactly STATUS_KEYS, by run id."""
    stmt = (
        select(
            *RUN_KEY_COLUMNS,
            *PROGRESS_COLUMNS,
            TestSummary.sensitivity,
            TestSummary.specificity,
            Run.protocol_hash,
            Sweep.protocol,
            TestSummary.nsd,
            TestSummary.hd95,
        )
        .join(Sweep, Sweep.id == Run.sweep_id)
        .outerjoin(TestSummary, TestSummary.run_id == Run.id)
        .order_by(Run.id)
    )
    if sweep is not None:
        stmt = stmt.where(Run.sweep_id == sweep_id(session, sweep))
    rows = rows_of(session, stmt)
    for row in rows:
        row["train_precision"] = Protocol.from_dict(row.pop("protocol") or {}).train_precision
    return [{key: row[key] for key in STATUS_KEYS} for row in rows]


def run_cells(session: Session, run_ids: list[int]) -> list[dict[str, Any]]:
    """The grid cells of `run_ids` grouped by sweep, as db.jobs.submit takes them:
    [{"specs", "protocol", "sweep", "data_dir", "dataset"}] (UnknownRun for an id
    that is not there)."""
    wanted = sorted({int(i) for i in run_ids})
    stmt = (
        select(Run.id, Run.experiment, Run.architecture, Run.encoder, Run.init, Sweep)
        .join(Sweep, Sweep.id == Run.sweep_id)
        .where(Run.id.in_(wanted))
        .order_by(Run.id)
    )
    found = session.execute(stmt).all()
    missing = sorted(set(wanted) - {r.id for r in found})
    if missing:
        raise UnknownRun(
            f"No run with id {missing[0]} in the database; `segbench status` lists the runs."
        )
    groups: dict[int, dict[str, Any]] = {}
    for r in found:
        sw = r.Sweep
        group = groups.setdefault(
            sw.id,
            {
                "specs": [],
                "protocol": Protocol.from_dict(sw.protocol),
                "sweep": sw.name,
                "data_dir": sw.data_dir,
                "dataset": {
                    "name": sw.dataset_name,
                    "kind": sw.dataset_kind,
                    "synthetic": sw.synthetic,
                    "manifest_hash": sw.manifest_hash,
                },
            },
        )
        spec = RunSpec(r.experiment, r.architecture, r.encoder, r.init)
        if spec not in group["specs"]:
            group["specs"].append(spec)
    return list(groups.values())


def queued_run_ids(session: Session, run_ids: list[int] | None = None) -> list[int]:
    """Ids of queued runs not asked to cancel (of `run_ids`, if given), ascending."""
    stmt = select(Run.id).where(Run.status == "queued", Run.cancel_requested.is_(False))
    if run_ids is not None:
        stmt = stmt.where(Run.id.in_(run_ids))
    return list(session.scalars(stmt.order_by(Run.id)))


def running_on_node(session: Session, *, node: str) -> int:
    """How many runs are running on worker node `node` (its processes: node/pid)."""
    return session.scalar(
        select(func.count())
        .select_from(Run)
        .where(Run.status == "running", Run.worker.like(f"{node}/%"))
    )


def environments(session: Session, keys) -> dict[str, dict[str, Any]]:
    """key -> the environment a run of that key recorded (runs.config["environment"])."""
    wanted = sorted({k for k in keys if k})
    if not wanted:
        return {}
    stmt = (
        select(Run.environment_key, Run.config)
        .where(Run.environment_key.in_(wanted))
        .order_by(Run.environment_key, Run.id)
    )
    out: dict[str, dict[str, Any]] = {}
    for key, config in session.execute(stmt):
        if key not in out and (config or {}).get("environment"):
            out[key] = config["environment"]
    return out

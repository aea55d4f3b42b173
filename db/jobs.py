"""Every state change of a run: the run state machine of DESIGN.md.

queued -> running -> succeeded | failed | cancelled; running -> queued when the lease
expires (the worker died); failed after `max_attempts` claims.

Attempts count claims: every successful claim adds one, so `attempts` is the number
of times a worker started the run. A lease that expires does not add another one
(the claim that started the dead attempt already counted it); a run is claimable
only while attempts < max_attempts, and requeue_expired fails a run whose expired
attempt was its last. retry() resets attempts to 0.

Each function takes the caller's session and does not commit: the caller's
session_scope makes the whole call one transaction. Every check-then-act is a
single conditional UPDATE, so two processes cannot both win.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, and_, case, cast, delete, insert, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from db.errors import DatabaseError, SweepConflict, UnknownRun, UnknownSweep
from db.models import ARTIFACT_KINDS, Artifact, Epoch, Run, SliceResult, Sweep, TestSummary, utcnow
from db.settings import get_settings
from worker.grid import RunSpec
from worker.protocol import EpochRecord, Protocol, RunOutcome

NO_SYNC = {"synchronize_session": False}
RUN_IDENTITY = ("sweep_id", "experiment", "architecture", "encoder", "init", "seed")


@dataclass(frozen=True)
class ClaimedRun:
    """What a worker needs to train a run it has just claimed."""

    run_id: int
    spec: RunSpec
    protocol: Protocol
    sweep: str
    data_dir: str
    dataset_name: str
    synthetic: bool
    attempts: int  # including this claim
    epoch: int  # last epoch recorded before this claim (0: fresh start)
    worker: str
    lease_expires_at: datetime


def _upsert_insert(session: Session, table: Any):
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return pg_insert(table)
    if dialect == "sqlite":
        return sqlite_insert(table)
    raise DatabaseError(
        f"Unsupported database '{dialect}'; segbench supports SQLite and PostgreSQL."
    )


def _unknown_run(run_id: int) -> UnknownRun:
    return UnknownRun(f"No run with id {run_id} in the database; `segbench status` lists the runs.")


def _require_run(session: Session, run_id: int) -> None:
    if session.scalar(select(Run.id).where(Run.id == run_id)) is None:
        raise _unknown_run(run_id)


def _lease(lease_seconds: int | None, now: datetime) -> datetime:
    seconds = get_settings().lease_seconds if lease_seconds is None else lease_seconds
    return now + timedelta(seconds=seconds)


def _selected_ids(session: Session, run_ids: Iterable[int] | None, sweep: str | None) -> list[int]:
    ids: set[int] = set()
    if run_ids:
        wanted = {int(i) for i in run_ids}
        found = set(session.scalars(select(Run.id).where(Run.id.in_(wanted))))
        for missing in sorted(wanted - found):
            raise _unknown_run(missing)
        ids |= found
    if sweep is not None:
        sweep_id = session.scalar(select(Sweep.id).where(Sweep.name == sweep))
        if sweep_id is None:
            known = ", ".join(session.scalars(select(Sweep.name).order_by(Sweep.name))) or "none"
            raise UnknownSweep(f"No sweep named '{sweep}'; known sweeps: {known}.")
        ids |= set(session.scalars(select(Run.id).where(Run.sweep_id == sweep_id)))
    if not run_ids and sweep is None:
        raise ValueError("Name the runs (run ids) or a sweep.")
    return sorted(ids)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def submit(
    session: Session,
    *,
    specs: Sequence[RunSpec],
    protocol: Protocol,
    sweep: str,
    data_dir: str,
    dataset: dict[str, Any],
) -> list[int]:
    """Enqueue `specs` under `sweep`; runs that already exist are left alone.

    Returns the ids of all selected runs (new or not), in the order of `specs`.
    `dataset`: {name, kind, synthetic, manifest_hash}.
    """
    protocol_hash = protocol.hash()
    synthetic = bool(dataset["synthetic"])
    now = utcnow()
    session.execute(
        _upsert_insert(session, Sweep.__table__)
        .values(
            name=sweep,
            protocol=protocol.to_dict(),
            protocol_hash=protocol_hash,
            data_dir=str(data_dir),
            dataset_name=dataset["name"],
            dataset_kind=dataset.get("kind"),
            manifest_hash=dataset.get("manifest_hash"),
            synthetic=synthetic,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["name"])
    )
    row = session.execute(
        select(Sweep.id, Sweep.protocol_hash, Sweep.synthetic).where(Sweep.name == sweep)
    ).one()
    if row.protocol_hash != protocol_hash:
        raise SweepConflict(
            f"Sweep '{sweep}' already exists with a different protocol (hash "
            f"{row.protocol_hash}, this one {protocol_hash}); choose another sweep name."
        )
    if row.synthetic != synthetic:
        kinds = {True: "generated stand-in", False: "real"}
        raise SweepConflict(
            f"Sweep '{sweep}' holds runs on {kinds[row.synthetic]} data, not on "
            f"{kinds[synthetic]} data; choose another sweep name."
        )
    rows = [
        {
            "sweep_id": row.id,
            **spec.to_dict(),
            "seed": protocol.seed,
            "protocol_hash": protocol_hash,
            "config": {"spec": spec.to_dict(), "protocol": protocol.to_dict(), "sweep": sweep},
            "dataset_name": dataset["name"],
            "manifest_hash": dataset.get("manifest_hash"),
            "synthetic": synthetic,
            "status": "queued",
            "cancel_requested": False,
            "attempts": 0,
            "epoch": 0,
            "epochs": protocol.epochs,
            "created_at": now,
        }
        for spec in specs
    ]
    if rows:
        identity = [*RUN_IDENTITY, "protocol_hash"]
        stmt = _upsert_insert(session, Run.__table__).on_conflict_do_nothing(
            index_elements=identity
        )
        session.execute(stmt, rows)
    existing = session.execute(
        select(Run.id, Run.experiment, Run.architecture, Run.encoder, Run.init).where(
            Run.sweep_id == row.id, Run.protocol_hash == protocol_hash, Run.seed == protocol.seed
        )
    )
    ids = {(r.experiment, r.architecture, r.encoder, r.init): r.id for r in existing}
    return [ids[(s.experiment, s.architecture, s.encoder, s.init)] for s in specs]


def claim(
    session: Session,
    *,
    run_id: int,
    worker: str,
    lease_seconds: int | None = None,
    max_attempts: int | None = None,
) -> ClaimedRun | None:
    """Take a queued run, or a running one whose lease expired, for `worker`.

    One conditional UPDATE: of two concurrent claims at most one changes the row.
    Returns None when the run is not claimable (running elsewhere, finished,
    cancelled or out of attempts); an unknown id raises UnknownRun.
    """
    if max_attempts is None:
        max_attempts = get_settings().max_attempts
    now = utcnow()
    result = session.execute(
        update(Run)
        .where(
            Run.id == run_id,
            Run.cancel_requested.is_(False),
            Run.attempts < max_attempts,
            or_(
                Run.status == "queued",
                and_(Run.status == "running", Run.lease_expires_at < now),
            ),
        )
        .values(
            status="running",
            worker=worker,
            attempts=Run.attempts + 1,
            lease_expires_at=_lease(lease_seconds, now),
            heartbeat_at=now,
            started_at=now,
            finished_at=None,
            error=None,
        )
        .execution_options(**NO_SYNC)
    )
    if result.rowcount != 1:
        _require_run(session, run_id)
        return None
    run, sweep = session.execute(
        select(Run, Sweep)
        .join(Sweep, Sweep.id == Run.sweep_id)
        .where(Run.id == run_id)
        .execution_options(populate_existing=True)
    ).one()
    return ClaimedRun(
        run_id=run.id,
        spec=RunSpec(run.experiment, run.architecture, run.encoder, run.init),
        protocol=Protocol.from_dict(sweep.protocol),
        sweep=sweep.name,
        data_dir=sweep.data_dir,
        dataset_name=run.dataset_name,
        synthetic=run.synthetic,
        attempts=run.attempts,
        epoch=run.epoch,
        worker=worker,
        lease_expires_at=run.lease_expires_at,
    )


def heartbeat(
    session: Session, *, run_id: int, worker: str | None = None, lease_seconds: int | None = None
) -> bool:
    """Extend the lease of a running run (of `worker`, if given); False if it is not
    running (any more) for that worker."""
    now = utcnow()
    conditions = [Run.id == run_id, Run.status == "running"]
    if worker is not None:
        conditions.append(Run.worker == worker)
    result = session.execute(
        update(Run)
        .where(*conditions)
        .values(lease_expires_at=_lease(lease_seconds, now), heartbeat_at=now)
        .execution_options(**NO_SYNC)
    )
    if result.rowcount != 1:
        _require_run(session, run_id)
        return False
    return True


def record_start(session: Session, *, run_id: int, config: dict[str, Any]) -> None:
    """Store what the run really trains with (config from worker.train.fit).

    Reads: library_versions (or versions), git_commit, device, parameters_m and
    dataset {name, kind, synthetic, manifest_hash}; the whole config is kept as JSON.
    """
    _require_run(session, run_id)
    config = _jsonable(config)
    values: dict[str, Any] = {
        "config": config,
        "library_versions": config.get("library_versions") or config.get("versions"),
        "git_commit": config.get("git_commit"),
        "device": config.get("device"),
        "parameters_m": config.get("parameters_m"),
        "heartbeat_at": utcnow(),
    }
    dataset = config.get("dataset") or {}
    if dataset.get("name"):
        values["dataset_name"] = dataset["name"]
    if dataset.get("manifest_hash"):
        values["manifest_hash"] = dataset["manifest_hash"]
    if dataset.get("synthetic") is not None:
        values["synthetic"] = bool(dataset["synthetic"])
    session.execute(
        update(Run).where(Run.id == run_id).values(**values).execution_options(**NO_SYNC)
    )


def finite_or_none(value: float | None) -> float | None:
    """A diverged loss (NaN/inf) is stored as NULL, the same on SQLite and PostgreSQL."""
    return value if value is not None and math.isfinite(value) else None


def record_epoch(
    session: Session, *, run_id: int, record: EpochRecord, lease_seconds: int | None = None
) -> bool:
    """Upsert one epoch (a repeated epoch overwrites its row) and heartbeat the run.

    Returns the run's cancel flag, read in the same statement, so a worker needs no
    second transaction per epoch to learn that it should stop.
    """
    now = utcnow()
    run_values: dict[str, Any] = {
        "epoch": record.epoch,
        "heartbeat_at": now,
        "lease_expires_at": case(
            (Run.status == "running", _lease(lease_seconds, now)), else_=Run.lease_expires_at
        ),
    }
    if record.is_best:
        run_values.update(best_epoch=record.epoch, best_val_loss=finite_or_none(record.val_loss))
    cancel = session.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(**run_values)
        .returning(Run.cancel_requested)
        .execution_options(**NO_SYNC)
    ).scalar_one_or_none()
    if cancel is None:
        raise _unknown_run(run_id)
    values = {
        "train_loss": finite_or_none(record.train_loss),
        "val_loss": finite_or_none(record.val_loss),
        "train_seconds": record.train_seconds,
        "val_seconds": record.val_seconds,
        "is_best": bool(record.is_best),
        "recorded_at": now,
    }
    stmt = _upsert_insert(session, Epoch.__table__).values(
        run_id=run_id, epoch=record.epoch, **values
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id", "epoch"], set_={k: stmt.excluded[k] for k in values}
    )
    session.execute(stmt)
    return bool(cancel)


def is_cancel_requested(session: Session, *, run_id: int) -> bool:
    flag = session.scalar(select(Run.cancel_requested).where(Run.id == run_id))
    if flag is None:
        raise _unknown_run(run_id)
    return bool(flag)


def _artifact_rows(run_id: int, outcome: RunOutcome, now: datetime) -> list[dict[str, Any]]:
    rows = [
        {
            "kind": "checkpoint",
            "key": "best",
            "path": outcome.checkpoint_dir,
            "sha256": outcome.checkpoint_sha256,
        }
    ]
    for index, bits in sorted(outcome.gallery.items()):
        rows.append(
            {
                "kind": "gallery_mask",
                "key": str(index),
                "data": bits,
                "shape": list(outcome.gallery_shape),
            }
        )
    for kind in ("first_layer_before", "first_layer_after"):
        data = getattr(outcome, kind)
        if data is not None:
            rows.append({"kind": kind, "key": "", "data": data})
            rows[-1]["shape"] = list(outcome.first_layer_shape)
    full = {"path": None, "sha256": None, "data": None, "shape": None}
    for row in rows:
        if row.get("data") is not None:
            row["sha256"] = hashlib.sha256(row["data"]).hexdigest()
    return [{**full, **row, "run_id": run_id, "created_at": now} for row in rows]


def finish(session: Session, *, run_id: int, outcome: RunOutcome) -> None:
    """Write the test results and artifacts of a run and mark it succeeded.

    Earlier results of the run are replaced; everything happens in the caller's one
    transaction, so a failure part-way leaves no partial rows.
    """
    _require_run(session, run_id)
    now = utcnow()
    test = outcome.test
    session.execute(
        delete(SliceResult).where(SliceResult.run_id == run_id).execution_options(**NO_SYNC)
    )
    if test.slices:
        session.execute(
            insert(SliceResult.__table__),
            [
                {
                    "run_id": run_id,
                    "idx": s.index,
                    "volume": s.volume,
                    "slice": s.slice,
                    "tp": s.tp,
                    "fp": s.fp,
                    "fn": s.fn,
                    "tn": s.tn,
                }
                for s in test.slices
            ],
        )
    session.execute(
        delete(TestSummary).where(TestSummary.run_id == run_id).execution_options(**NO_SYNC)
    )
    session.execute(
        insert(TestSummary.__table__).values(
            run_id=run_id,
            metric_mode=test.metric_mode,
            sensitivity=test.sensitivity,
            specificity=test.specificity,
            dice=test.dice,
            dice_std=test.dice_std,
            pooled_dice=test.pooled_dice,
            seconds=test.seconds,
        )
    )
    session.execute(
        delete(Artifact)
        .where(Artifact.run_id == run_id, Artifact.kind.in_(ARTIFACT_KINDS))
        .execution_options(**NO_SYNC)
    )
    session.execute(insert(Artifact.__table__), _artifact_rows(run_id, outcome, now))
    session.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(
            status="succeeded",
            finished_at=now,
            heartbeat_at=now,
            lease_expires_at=None,
            error=None,
            best_epoch=outcome.best_epoch,
            best_val_loss=finite_or_none(outcome.best_val_loss),
            parameters_m=outcome.parameters_m,
            train_seconds_per_epoch=outcome.train_seconds_per_epoch,
            val_seconds_per_epoch=outcome.val_seconds_per_epoch,
        )
        .execution_options(**NO_SYNC)
    )


def fail(session: Session, *, run_id: int, reason: str) -> bool:
    """Mark a queued or running run failed with `reason`; False if it had finished."""
    now = utcnow()
    result = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status.in_(("queued", "running")))
        .values(status="failed", error=reason, finished_at=now, lease_expires_at=None)
        .execution_options(**NO_SYNC)
    )
    if result.rowcount != 1:
        _require_run(session, run_id)
        return False
    return True


def mark_cancelled(session: Session, *, run_id: int) -> bool:
    """The worker stopped a run whose cancel was requested; False if it had finished."""
    result = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status.in_(("queued", "running")))
        .values(
            status="cancelled", cancel_requested=True, finished_at=utcnow(), lease_expires_at=None
        )
        .execution_options(**NO_SYNC)
    )
    if result.rowcount != 1:
        _require_run(session, run_id)
        return False
    return True


def cancel(
    session: Session, *, run_ids: Iterable[int] | None = None, sweep: str | None = None
) -> dict[str, list[int]]:
    """Cancel runs: queued ones at once, running ones at the end of their epoch.

    Returns {"cancelled": ids now cancelled, "requested": running ids asked to stop}.
    Finished runs are left alone.
    """
    ids = _selected_ids(session, run_ids, sweep)
    cancelled = session.scalars(
        update(Run)
        .where(Run.id.in_(ids), Run.status == "queued")
        .values(status="cancelled", cancel_requested=True, finished_at=utcnow())
        .returning(Run.id)
        .execution_options(**NO_SYNC)
    ).all()
    requested = session.scalars(
        update(Run)
        .where(Run.id.in_(ids), Run.status == "running")
        .values(cancel_requested=True)
        .returning(Run.id)
        .execution_options(**NO_SYNC)
    ).all()
    return {"cancelled": sorted(cancelled), "requested": sorted(requested)}


def retry(
    session: Session, *, run_ids: Iterable[int] | None = None, sweep: str | None = None
) -> list[int]:
    """Queue failed or cancelled runs again, with attempts reset and the cancel flag
    cleared; returns the ids queued again."""
    ids = _selected_ids(session, run_ids, sweep)
    requeued = session.scalars(
        update(Run)
        .where(Run.id.in_(ids), Run.status.in_(("failed", "cancelled")))
        .values(
            status="queued",
            attempts=0,
            cancel_requested=False,
            error=None,
            worker=None,
            lease_expires_at=None,
            finished_at=None,
        )
        .returning(Run.id)
        .execution_options(**NO_SYNC)
    ).all()
    return sorted(requeued)


def requeue_expired(
    session: Session, *, max_attempts: int | None = None
) -> tuple[list[int], list[int]]:
    """Runs whose worker stopped heartbeating: queue them again, or fail them when
    their last attempt expired. A run whose cancel was requested becomes cancelled.

    Returns (requeued ids, failed ids).
    """
    if max_attempts is None:
        max_attempts = get_settings().max_attempts
    now = utcnow()
    expired = and_(Run.status == "running", Run.lease_expires_at < now)
    cleared = {"lease_expires_at": None, "finished_at": now}
    session.execute(
        update(Run)
        .where(expired, Run.cancel_requested.is_(True))
        .values(status="cancelled", **cleared)
        .execution_options(**NO_SYNC)
    )
    reason = (
        literal("gave up after ")
        + cast(Run.attempts, String)
        + literal(" attempts: the worker stopped sending heartbeats (lease expired)")
    )
    failed = session.scalars(
        update(Run)
        .where(expired, Run.attempts >= max_attempts)
        .values(status="failed", error=reason, **cleared)
        .returning(Run.id)
        .execution_options(**NO_SYNC)
    ).all()
    requeued = session.scalars(
        update(Run)
        .where(expired)
        .values(status="queued", worker=None, lease_expires_at=None)
        .returning(Run.id)
        .execution_options(**NO_SYNC)
    ).all()
    return sorted(requeued), sorted(failed)


def __getattr__(name: str) -> Any:
    # DbRecorder lives in db.recorder (it imports this module); offered here too.
    if name == "DbRecorder":
        from db.recorder import DbRecorder

        return DbRecorder
    raise AttributeError(f"module 'db.jobs' has no attribute '{name}'")

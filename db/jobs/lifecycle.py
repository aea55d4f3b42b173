"""The queue side of the run state machine: submit, claim, heartbeat, release, fail,
cancel, retry, and the requeueing of runs whose worker died (see db.jobs)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, cast, func, literal, or_, select, update
from sqlalchemy.orm import Session

from db.errors import InvalidInput, SweepConflict
from db.grid import RunSpec
from db.jobs import _shared
from db.jobs._shared import NO_SYNC, lease_until, require_run, unknown_run, upsert_insert
from db.models import Run, Sweep, utcnow
from db.protocol import Protocol
from db.queries._shared import sweep_id
from db.settings import get_settings

RUN_IDENTITY = ("sweep_id", "experiment", "architecture", "encoder", "init", "seed")


SWEEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class SubmittedRuns(list):
    """The ids of the selected runs, with `created`: those this submit inserted."""

    def __init__(self, ids, *, created: set[int]):
        super().__init__(ids)
        self.created = created


def check_sweep_name(name: str) -> str:
    """A sweep name: 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or
    digit (it is shown in terminals, file names and URLs)."""
    if not isinstance(name, str) or not SWEEP_NAME.fullmatch(name):
        shown = ascii(name)[:60] + ("..." if len(ascii(name)) > 60 else "")
        raise InvalidInput(
            f"Sweep name {shown} is not usable; expected 1 to 100 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit."
        )
    return name


def sweep_name_from(text: str) -> str:
    """A usable sweep name made from free text (a dataset's name, say)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:80]
    return name or "sweep"


@dataclass(frozen=True)
class ClaimedRun:
    """What a worker needs to train a run it has just claimed."""

    run_id: int
    uid: str  # unique across databases: names the artifact folder, signs checkpoints
    spec: RunSpec
    protocol: Protocol  # the sweep's, with this run's seed
    protocol_hash: str  # as stored with the run (Protocol.hash() when it was submitted)
    sweep: str
    data_dir: str
    dataset_name: str
    synthetic: bool
    attempts: int  # including this claim
    epoch: int  # last epoch recorded before this claim (0: fresh start)
    worker: str
    lease_expires_at: datetime


def _selected_ids(session: Session, run_ids: Iterable[int] | None, sweep: str | None) -> list[int]:
    ids: set[int] = set()
    if run_ids:
        wanted = {int(i) for i in run_ids}
        found = set(session.scalars(select(Run.id).where(Run.id.in_(wanted))))
        for missing in sorted(wanted - found):
            raise unknown_run(missing)
        ids |= found
    if sweep is not None:
        ids |= set(session.scalars(select(Run.id).where(Run.sweep_id == sweep_id(session, sweep))))
    if not run_ids and sweep is None:
        raise InvalidInput("Name the runs (run ids) or a sweep.")
    return sorted(ids)


def submit(
    session: Session,
    *,
    specs: Sequence[RunSpec],
    protocol: Protocol,
    sweep: str,
    data_dir: str,
    dataset: dict[str, Any],
    seeds: Sequence[int] | None = None,
    models: dict[str, dict[str, Any]] | None = None,
) -> list[int]:
    """Enqueue `specs` x `seeds` (default: the protocol's seed) under `sweep`; runs that
    already exist are left alone. Returns the ids of all selected runs (new or not),
    seed by seed within each spec; `created` holds those this call inserted (what
    needs a message to the broker). `dataset`: {name, kind, synthetic, manifest_hash}.

    The sweep stores the protocol without the per-run seed (runs differing only by
    seed share its hash); a sweep stored under an older hash of the same protocol
    keeps that hash for its new runs. `models`: user models' provenance by reference,
    kept in their runs' config.
    """
    check_sweep_name(sweep)
    seeds = [replace(protocol, seed=int(s)).seed for s in dict.fromkeys(seeds or [protocol.seed])]
    protocol_hash = protocol.hash()
    synthetic = bool(dataset["synthetic"])
    now = utcnow()
    session.execute(
        upsert_insert(session, Sweep.__table__)
        .values(
            name=sweep,
            protocol=protocol.shared_dict(),
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
    row = session.execute(select(Sweep).where(Sweep.name == sweep)).scalar_one()
    if Protocol.from_dict(row.protocol).hash() == protocol_hash:
        protocol_hash = row.protocol_hash  # the same protocol, maybe under an older hash
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
            "seed": seed,
            "protocol_hash": protocol_hash,
            "config": _shared.submit_config(spec, protocol, sweep, models, seed),
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
        for seed in seeds
    ]
    created: set[int] = set()
    if rows:
        identity = [*RUN_IDENTITY, "protocol_hash"]
        stmt = upsert_insert(session, Run.__table__).on_conflict_do_nothing(index_elements=identity)
        created = set(session.scalars(stmt.returning(Run.id), rows))
    existing = session.execute(
        select(Run.id, Run.experiment, Run.architecture, Run.encoder, Run.init, Run.seed).where(
            Run.sweep_id == row.id, Run.protocol_hash == protocol_hash, Run.seed.in_(seeds)
        )
    )
    ids = {(RunSpec(*r[1:5]), r.seed): r.id for r in existing}
    return SubmittedRuns([ids[(s, seed)] for s in specs for seed in seeds], created=created)


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
            lease_expires_at=lease_until(lease_seconds, now),
            heartbeat_at=now,
            started_at=func.coalesce(Run.started_at, now),
            finished_at=None,
            error=None,
        )
        .execution_options(**NO_SYNC)
    )
    if result.rowcount != 1:
        require_run(session, run_id)
        return None
    run, sweep = session.execute(
        select(Run, Sweep)
        .join(Sweep, Sweep.id == Run.sweep_id)
        .where(Run.id == run_id)
        .execution_options(populate_existing=True)
    ).one()
    return ClaimedRun(
        run_id=run.id,
        uid=run.uid,
        spec=RunSpec(run.experiment, run.architecture, run.encoder, run.init),
        protocol=Protocol.from_dict({**sweep.protocol, "seed": run.seed}),
        protocol_hash=run.protocol_hash,
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
        .values(lease_expires_at=lease_until(lease_seconds, now), heartbeat_at=now)
        .execution_options(**NO_SYNC)
    )
    if result.rowcount != 1:
        require_run(session, run_id)
        return False
    return True


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
        require_run(session, run_id)
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
        require_run(session, run_id)
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


def release(session: Session, *, run_id: int, worker: str) -> bool:
    """Give a running run back to the queue without counting the interrupted attempt."""
    result = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == "running", Run.worker == worker)
        .values(status="queued", worker=None, lease_expires_at=None, attempts=Run.attempts - 1)
        .execution_options(**NO_SYNC)
    )
    return result.rowcount == 1

"""A worker's claim from the queue, with cell affinity.

A message on the queue is a token for one claim, with a run id as its hint. A pool
process that has just trained a run of one architecture x encoder (its "cell")
first takes a queued run of that same cell in the hinted run's sweep: the runs of
a cell (its inits, experiments and seeds share the network's shapes) then follow
each other on one process, which keeps cuDNN's autotuned algorithms (cached per
process by layer shape) and any compile cache warm instead of paying for them
again on another process. Otherwise it takes the hinted run; and when that one is no longer
claimable (another process took it as its cell's next run, it was cancelled or it
finished), the next queued run of the queue's order (the hinted run's sweep first,
then by id), so that every message still trains one run while any is queued and
no run waits for the reaper because its message was used for another.

Every attempt is the one conditional UPDATE of db.jobs.claim, so the lease,
attempt, cancel and max_attempts rules are exactly claim()'s, and two processes
never take the same run; a lost race moves on to the next candidate.
"""

from __future__ import annotations

from sqlalchemy import and_, case, select
from sqlalchemy.orm import Session

from db.jobs._shared import require_run
from db.jobs.lifecycle import ClaimedRun, claim
from db.models import Run

CANDIDATES = 16  # queued runs tried after the hint, at most, before giving up


def claim_from_queue(
    session: Session,
    *,
    run_id: int,
    worker: str,
    cell: tuple[str, str] | None = None,
    lease_seconds: int | None = None,
    max_attempts: int | None = None,
) -> ClaimedRun | None:
    """The run a message for `run_id` trains on a process whose last run was of
    `cell` (architecture, encoder), claimed for `worker`; None when nothing is
    claimable. An unknown `run_id` raises UnknownRun (a stale message)."""
    require_run(session, run_id)
    for candidate in candidates(session, run_id=run_id, cell=cell):
        claimed = claim(
            session, run_id=candidate, worker=worker, lease_seconds=lease_seconds,
            max_attempts=max_attempts,
        )  # fmt: skip
        if claimed is not None:
            return claimed
    return None


def candidates(session: Session, *, run_id: int, cell: tuple[str, str] | None) -> list[int]:
    """Run ids to try, best first: queued runs of `cell` in `run_id`'s sweep, then
    `run_id` itself (queued, or running with an expired lease: claim() decides),
    then the other queued runs, `run_id`'s sweep first, by id."""
    sweep = select(Run.sweep_id).where(Run.id == run_id).scalar_subquery()
    same_cell = and_(
        Run.architecture == (cell or ("", ""))[0],
        Run.encoder == (cell or ("", ""))[1],
        Run.sweep_id == sweep,
    )
    rank = case((same_cell, 0), (Run.sweep_id == sweep, 1), else_=2)
    queued = session.execute(
        select(Run.id, rank)
        .where(Run.status == "queued", Run.cancel_requested.is_(False), Run.id != run_id)
        .order_by(rank, Run.id)
        .limit(CANDIDATES)
    ).all()
    ours = [i for i, r in queued if r == 0]
    return [*ours, run_id, *(i for i, r in queued if r != 0)]

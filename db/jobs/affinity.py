"""A worker's claim from the queue, with cell affinity.

A message on the queue is a token for one claim, with a run id as its hint. A pool
process that has just trained a run of one architecture x encoder (its "cell")
first takes a queued run of that same cell in the hinted run's sweep: the runs of
a cell (its inits, experiments and seeds share the network's shapes) then follow
each other on one process, which keeps cuDNN's autotuned algorithms (cached per
process by layer shape) and any compile cache warm instead of paying for them
again on another process. Otherwise it takes the hinted run.

When the hinted run is no longer claimable (another process took it as its cell's
next run, it was cancelled or it finished), the message still trains one run while
any is queued, so none waits for the reaper because its message was used for
another: a queued run of the hint's cell (the cell the queue's messages are at),
then the hint's sweep in the order submit published it (db.queries.sweep_order:
longest cells first, each cell together), then the other sweeps, oldest first, each
in its own order. Taking the fallback by id instead would let one cancelled run
pull a short cell ahead of the long ones (its process then keeps that cell by
affinity), leaving the long cells' runs to the last messages of the sweep.

Every attempt is the one conditional UPDATE of db.jobs.claim, so the lease,
attempt, cancel and max_attempts rules are exactly claim()'s, and two processes
never take the same run; a lost race moves on to the next candidate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.jobs._shared import require_run
from db.jobs.leases import expire_lease_of_dead_process
from db.jobs.lifecycle import ClaimedRun, claim
from db.models import Run, Sweep
from db.protocol import Protocol
from db.queries.workers import sweep_order

CANDIDATES = 16  # queued runs of one cell tried at most, before moving on

TableSeconds = Callable[[], Mapping[tuple, float]]


def claim_from_queue(
    session: Session,
    *,
    run_id: int,
    worker: str,
    cell: tuple[str, str] | None = None,
    table_seconds: TableSeconds | None = None,
    node: str | None = None,
    lease_seconds: int | None = None,
    max_attempts: int | None = None,
) -> ClaimedRun | None:
    """The run a message for `run_id` trains on a process whose last run was of
    `cell` (architecture, encoder), claimed for `worker`; None when nothing is
    claimable. `table_seconds` gives the cells' seconds when none is measured in the
    database (as at submit). `node` (the worker's ``<name>@<host>``): a hint held by
    a process of this host that no longer exists is expired and taken before any
    fallback, so a redelivered message resumes its run at once. An unknown `run_id`
    raises UnknownRun (a stale message)."""
    require_run(session, run_id)
    tried: set[int] = set()
    for candidate in candidates(session, run_id=run_id, cell=cell, table_seconds=table_seconds):
        if candidate in tried:
            continue
        tried.add(candidate)
        claimed = claim(
            session, run_id=candidate, worker=worker, lease_seconds=lease_seconds,
            max_attempts=max_attempts,
        )  # fmt: skip
        if (
            claimed is None
            and candidate == run_id
            and node is not None
            and expire_lease_of_dead_process(session, run_id=run_id, node=node)
        ):
            claimed = claim(
                session, run_id=run_id, worker=worker, lease_seconds=lease_seconds,
                max_attempts=max_attempts,
            )  # fmt: skip
        if claimed is not None:
            return claimed
    return None


def candidates(
    session: Session,
    *,
    run_id: int,
    cell: tuple[str, str] | None,
    table_seconds: TableSeconds | None = None,
) -> Iterator[int]:
    """Run ids to try, best first (read lazily: the sweep's order is only worked out
    when the hint is gone): queued runs of `cell` in `run_id`'s sweep, `run_id` itself
    (queued, or running with an expired lease: claim() decides), queued runs of
    `run_id`'s cell in its sweep, then every queued run by sweep_order, `run_id`'s
    sweep first, then the other sweeps from the oldest. Ids may repeat."""
    sweep, architecture, encoder = session.execute(
        select(Run.sweep_id, Run.architecture, Run.encoder).where(Run.id == run_id)
    ).one()
    if cell is not None:
        yield from _queued(session, sweep, cell, limit=CANDIDATES)
    yield run_id
    yield from _queued(session, sweep, (architecture, encoder), limit=CANDIDATES)
    yield from _in_sweep_order(session, sweep, table_seconds)
    others = session.execute(
        select(Run.sweep_id)
        .where(_claimable(), Run.sweep_id != sweep)
        .group_by(Run.sweep_id)
        .order_by(func.min(Run.id))
    ).scalars()
    for other in list(others):
        yield from _in_sweep_order(session, other, table_seconds)


def _claimable():
    return (Run.status == "queued") & Run.cancel_requested.is_(False)


def _queued(session: Session, sweep: int, cell: tuple[str, str], *, limit: int) -> list[int]:
    """Queued runs of `cell` in `sweep`, by id."""
    return list(
        session.scalars(
            select(Run.id)
            .where(
                _claimable(),
                Run.sweep_id == sweep,
                Run.architecture == cell[0],
                Run.encoder == cell[1],
            )
            .order_by(Run.id)
            .limit(limit)
        )
    )


def _in_sweep_order(session: Session, sweep: int, table_seconds: TableSeconds | None) -> list[int]:
    """The queued runs of `sweep`, in the order submit publishes a sweep."""
    ids = list(
        session.scalars(select(Run.id).where(_claimable(), Run.sweep_id == sweep).order_by(Run.id))
    )
    if not ids:
        return []
    protocol = Protocol.from_dict(session.scalar(select(Sweep.protocol).where(Sweep.id == sweep)))
    return sweep_order(
        session, ids, image_size=protocol.image_size, batch_size=protocol.batch_size,
        table_seconds=table_seconds,
    )  # fmt: skip

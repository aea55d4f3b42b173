"""Helpers shared by the reads of db.queries."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from db.errors import UnknownSweep, check_choice
from db.models import Run, Sweep, TestSummary

Filter = str | Sequence[str] | None

# the columns that name a run of the grid, as most reads show it
RUN_KEY_COLUMNS = (
    Run.id,
    Sweep.name.label("sweep"),
    Run.experiment,
    Run.architecture,
    Run.encoder,
    Run.init,
)
# What a run's test summary stores, in the order reads list it.
SUMMARY_COLUMNS = (
    TestSummary.metric_mode,
    TestSummary.sensitivity,
    TestSummary.specificity,
    TestSummary.dice,
    TestSummary.dice_std,
    TestSummary.pooled_dice,
    TestSummary.nsd,
    TestSummary.hd95,
)
# How far a run has come: its seed, state, epoch of epochs and test Dice.
PROGRESS_COLUMNS = (Run.seed, Run.status, Run.epoch, Run.epochs, TestSummary.dice)


def as_list(value: Filter) -> list[str]:
    """A filter value as a list (empty: no filter)."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def choose(kind: str, name: str, valid: Iterable[str]) -> str:
    return check_choice(kind, name, valid)


def filtered(
    stmt: Select,
    *,
    experiment: Filter = None,
    architecture: Filter = None,
    encoder: Filter = None,
    family: Filter = None,
    init: Filter = None,
    sweep: Filter = None,
    status: Filter = None,
) -> Select:
    """Apply the grid filters; `stmt` must already join Sweep."""
    for column, value in (
        (Run.experiment, experiment),
        (Run.architecture, architecture),
        (Run.encoder, encoder),
        (Run.family, family),
        (Run.init, init),
        (Sweep.name, sweep),
        (Run.status, status),
    ):
        values = as_list(value)
        if values:
            stmt = stmt.where(column.in_(values))
    return stmt


def rows_of(session: Session, stmt: Select) -> list[dict[str, Any]]:
    result = session.connection().execute(stmt)  # Core: no ORM row processing
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result]


def sweep_id(session: Session, sweep: str) -> int:
    """The id of sweep `sweep`; UnknownSweep (listing the known ones) if there is none."""
    found = session.scalar(select(Sweep.id).where(Sweep.name == sweep))
    if found is None:
        known = ", ".join(session.scalars(select(Sweep.name).order_by(Sweep.name))) or "none"
        raise UnknownSweep(f"No sweep named '{sweep}'; known sweeps: {known}.")
    return found

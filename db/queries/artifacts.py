"""Reads of a run's artifacts: checkpoints, the gallery's predicted masks (packed bits)
and the first-layer filters."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Artifact, Run, Sweep, TestSummary
from db.queries._shared import RUN_KEY_COLUMNS, rows_of


def run_artifacts(
    session: Session, *, run_id: int, kinds: Iterable[str] | None = None, with_data: bool = True
) -> list[dict[str, Any]]:
    """A run's artifacts (checkpoint, gallery masks as packed bits, first-layer filters)."""
    columns = [Artifact.kind, Artifact.key, Artifact.path, Artifact.sha256, Artifact.shape]
    if with_data:
        columns.append(Artifact.data)
    stmt = select(*columns).where(Artifact.run_id == run_id).order_by(Artifact.kind, Artifact.key)
    if kinds is not None:
        stmt = stmt.where(Artifact.kind.in_(list(kinds)))
    return rows_of(session, stmt)


def gallery_slice_indexes(session: Session, *, sweep: str, experiment: str) -> list[int]:
    """Test indexes that have a stored predicted mask for some run of sweep/experiment."""
    stmt = (
        select(Artifact.key)
        .join(Run, Run.id == Artifact.run_id)
        .join(Sweep, Sweep.id == Run.sweep_id)
        .where(Artifact.kind == "gallery_mask", Sweep.name == sweep, Run.experiment == experiment)
        .distinct()
    )
    return sorted(int(key) for key in session.scalars(stmt) if key.isdigit())


def stored_gallery_masks(
    session: Session, *, run_ids: Iterable[int], index: int
) -> dict[int, tuple[bytes, list[int]]]:
    """{run_id: (packed bits, shape)} of the runs' predicted masks on test slice `index`."""
    stmt = select(Artifact.run_id, Artifact.data, Artifact.shape).where(
        Artifact.kind == "gallery_mask",
        Artifact.key == str(index),
        Artifact.run_id.in_(list(run_ids)),
    )
    return {
        row.run_id: (row.data, row.shape)
        for row in session.execute(stmt)
        if row.data is not None and row.shape
    }


def runs_with_first_layer(session: Session) -> list[dict[str, Any]]:
    """Runs that recorded their first-layer filters (before and/or after training)."""
    has_filters = (
        select(Artifact.run_id)
        .where(Artifact.kind.in_(("first_layer_before", "first_layer_after")))
        .distinct()
        .scalar_subquery()
    )
    stmt = (
        select(
            *RUN_KEY_COLUMNS,
            Run.synthetic,
            TestSummary.dice,
        )
        .join(Sweep, Sweep.id == Run.sweep_id)
        .outerjoin(TestSummary, TestSummary.run_id == Run.id)
        .where(Run.id.in_(has_filters))
        .order_by(Sweep.name, Run.experiment, Run.architecture, Run.encoder, Run.init)
    )
    return rows_of(session, stmt)

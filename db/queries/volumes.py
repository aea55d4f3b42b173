"""Reads of per-volume test metrics (3-D Dice, NSD, HD95 of each test volume)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import VolumeResult
from db.queries._shared import rows_of

VOLUME_COLUMNS = ("run_id", "volume", "slices", "dice", "nsd", "hd95")


def volume_results(session: Session, *, run_ids: Iterable[int]) -> list[dict[str, Any]]:
    """Per-test-volume metrics of the runs, by run and volume: exactly VOLUME_COLUMNS.

    dice and nsd in percent, hd95 in mm; nsd/hd95 are None where not computed (runs
    evaluated before boundary metrics existed) and hd95 is None where undefined
    (exactly one of prediction and reference empty in that volume). The protocol's
    nsd_tolerance_mm and boundary_mode say how NSD and HD95 were measured.
    """
    stmt = (
        select(*(getattr(VolumeResult, c) for c in VOLUME_COLUMNS))
        .where(VolumeResult.run_id.in_(list(run_ids)))
        .order_by(VolumeResult.run_id, VolumeResult.volume)
    )
    return rows_of(session, stmt)

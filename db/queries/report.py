"""Reads behind `segbench report` and the dashboard's Statistics page: a sweep's
succeeded runs with their seed and boundary metrics, and per-volume test results."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Run, Sweep, TestSummary, VolumeResult
from db.queries._shared import RUN_KEY_COLUMNS, SUMMARY_COLUMNS, rows_of, sweep_id
from db.queries.summaries import with_extra_metrics


def sweep_row(session: Session, *, sweep: str) -> dict[str, Any]:
    """One sweep: name, protocol and its hash, dataset; UnknownSweep if there is none."""
    found = sweep_id(session, sweep)
    stmt = select(
        Sweep.name,
        Sweep.protocol,
        Sweep.protocol_hash,
        Sweep.data_dir,
        Sweep.dataset_name,
        Sweep.dataset_kind,
        Sweep.manifest_hash,
        Sweep.synthetic,
    ).where(Sweep.id == found)
    return rows_of(session, stmt)[0]


def report_runs(session: Session, *, sweep: str) -> list[dict[str, Any]]:
    """The succeeded runs of `sweep` with seed, family, test summary, NSD / HD95 with
    the test volumes their means cover (None where the run stored none) and every
    metric of db.metrics, by run id."""
    found = sweep_id(session, sweep)
    stmt = (
        select(
            *RUN_KEY_COLUMNS,
            Run.family,
            Run.seed,
            Run.synthetic,
            Run.manifest_hash,
            Run.environment_key,
            Run.parameters_m,
            *SUMMARY_COLUMNS,
            TestSummary.test_volumes,
            TestSummary.nsd_volumes,
            TestSummary.hd95_volumes,
            TestSummary.extra,
        )
        .join(Sweep, Sweep.id == Run.sweep_id)
        .join(TestSummary, TestSummary.run_id == Run.id)
        .where(Run.sweep_id == found, Run.status == "succeeded")
        .order_by(Run.id)
    )
    return with_extra_metrics(rows_of(session, stmt))


VOLUME_COLUMNS = ("run_id", "volume", "slices", "dice", "nsd", "hd95")


def volume_rows(session: Session, *, run_ids: Iterable[int]) -> list[dict[str, Any]]:
    """Per-volume test metrics of the runs, by run and volume: exactly VOLUME_COLUMNS;
    empty for runs that stored none.

    dice and nsd in percent, hd95 in mm; nsd/hd95 are None where not computed (runs
    evaluated before boundary metrics existed, a test volume with a gap between its
    slices) and, for runs stored before the missed-volume rule, hd95 is None where one
    of prediction and reference was empty. The protocol's nsd_tolerance_mm and
    boundary_mode say how NSD and HD95 were measured.
    """
    ids = sorted({int(i) for i in run_ids})
    if not ids:
        return []
    stmt = (
        select(*(getattr(VolumeResult, c) for c in VOLUME_COLUMNS))
        .where(VolumeResult.run_id.in_(ids))
        .order_by(VolumeResult.run_id, VolumeResult.volume)
    )
    return rows_of(session, stmt)

"""Reads of a run's test summary as the metric registry (db.metrics) names it: every
metric, whether it has a column of its own or lives in ``test_summaries.extra`` (a
metric added since the schema), and the test volumes each volume-level mean covers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import metrics as registry
from db.models import Run, TestSummary
from db.queries._shared import rows_of


def with_extra_metrics(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows that selected TestSummary.extra, with every metric of db.metrics that has no
    column of its own as a key (None where the run stored none)."""
    own = [m.name for m in registry.all_metrics()]
    for row in rows:
        extra = row.pop("extra", None) or {}
        for name in own:
            if name not in row:
                row[name] = extra.get(name)
    return rows


def _column(name: str) -> Any:
    """The stored column of a metric or count: a test summary's or a run's."""
    return getattr(TestSummary, name, None) or getattr(Run, name, None)


def summary_metrics(session: Session, *, run_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """{run id: {metric name: value}} of every metric of db.metrics and the test volumes
    the volume-level means cover, for the runs that have a test summary (what
    `segbench status --wide` shows beside its status rows)."""
    ids = sorted({int(i) for i in run_ids})
    if not ids:
        return {}
    keys = [m.name for m in registry.all_metrics()]
    keys += [m.coverage for m in registry.select(level="volume")] + ["test_volumes"]
    columns = [_column(k).label(k) for k in keys if _column(k) is not None]
    stmt = (
        select(Run.id, *columns, TestSummary.extra)
        .join(TestSummary, TestSummary.run_id == Run.id)
        .where(Run.id.in_(ids))
    )
    return {row.pop("id"): row for row in with_extra_metrics(rows_of(session, stmt))}

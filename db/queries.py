"""Every read the dashboard, `segbench status` and the exports make.

Aggregations run in SQL; results are plain lists of dicts (pandas.DataFrame(rows)
turns one into a frame). Filters take one value or a list of values.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Select, case, func, or_, select
from sqlalchemy.orm import Session

from db.errors import UnknownRun, UnknownSweep
from db.models import RUN_STATUSES, Artifact, Epoch, Run, SliceResult, Sweep, TestSummary, utcnow

Filter = str | Sequence[str] | None

STATUS_KEYS = (
    "id",
    "experiment",
    "architecture",
    "encoder",
    "init",
    "status",
    "epoch",
    "epochs",
    "dice",
    "sensitivity",
    "specificity",
)
GROUPS = {
    "experiment": Run.experiment,
    "architecture": Run.architecture,
    "encoder": Run.encoder,
    "family": Run.family,
    "init": Run.init,
    "sweep": Sweep.name,
}
METRICS = {
    "dice": TestSummary.dice,
    "sensitivity": TestSummary.sensitivity,
    "specificity": TestSummary.specificity,
    "pooled_dice": TestSummary.pooled_dice,
    "parameters_m": Run.parameters_m,
    "train_seconds_per_epoch": Run.train_seconds_per_epoch,
    "val_seconds_per_epoch": Run.val_seconds_per_epoch,
    "best_val_loss": Run.best_val_loss,
}
LEADERBOARD_COLUMNS = {
    "id": Run.id,
    "sweep": Sweep.name.label("sweep"),
    "experiment": Run.experiment,
    "architecture": Run.architecture,
    "encoder": Run.encoder,
    "family": Run.family,
    "init": Run.init,
    "status": Run.status,
    "dataset_name": Run.dataset_name,
    "synthetic": Run.synthetic,
    "epoch": Run.epoch,
    "epochs": Run.epochs,
    "best_epoch": Run.best_epoch,
    "best_val_loss": Run.best_val_loss,
    "parameters_m": Run.parameters_m,
    "train_seconds_per_epoch": Run.train_seconds_per_epoch,
    "val_seconds_per_epoch": Run.val_seconds_per_epoch,
    "metric_mode": TestSummary.metric_mode,
    "sensitivity": TestSummary.sensitivity,
    "specificity": TestSummary.specificity,
    "dice": TestSummary.dice,
    "dice_std": TestSummary.dice_std,
    "pooled_dice": TestSummary.pooled_dice,
}


def _values(value: Filter) -> list[str] | None:
    if value is None or isinstance(value, str):
        return None if value is None else [value]
    return list(value) or None


def _choose(kind: str, name: str, valid: Iterable[str]) -> str:
    valid = list(valid)
    if name not in valid:
        raise ValueError(f"Unknown {kind} '{name}'; expected one of: {', '.join(valid)}.")
    return name


def _filtered(
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
        values = _values(value)
        if values:
            stmt = stmt.where(column.in_(values))
    return stmt


def _rows(session: Session, stmt: Select) -> list[dict[str, Any]]:
    result = session.connection().execute(stmt)  # Core: no ORM row processing
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result]


def _sweep_id(session: Session, sweep: str) -> int:
    sweep_id = session.scalar(select(Sweep.id).where(Sweep.name == sweep))
    if sweep_id is None:
        known = ", ".join(session.scalars(select(Sweep.name).order_by(Sweep.name))) or "none"
        raise UnknownSweep(f"No sweep named '{sweep}'; known sweeps: {known}.")
    return sweep_id


def leaderboard(
    session: Session,
    *,
    sort: str = "dice",
    descending: bool = True,
    limit: int | None = None,
    **filters: Filter,
) -> list[dict[str, Any]]:
    """Runs with their test summary (None until succeeded), best first.

    Filters: experiment, architecture, encoder, family, init, sweep, status.
    """
    order = LEADERBOARD_COLUMNS[_choose("sort column", sort, LEADERBOARD_COLUMNS)]
    order = order.desc() if descending else order.asc()
    stmt = (
        select(*LEADERBOARD_COLUMNS.values())
        .join(Sweep, Sweep.id == Run.sweep_id)
        .outerjoin(TestSummary, TestSummary.run_id == Run.id)
        .order_by(order.nulls_last(), Run.id)
        .limit(limit)
    )
    return _rows(session, _filtered(stmt, **filters))


def _std(total: Any, squares: Any, n: Any) -> Any:
    """Sample standard deviation (ddof=1) from a group's sum, sum of squares and count,
    portable to SQLite. Used in an outer query so that each sum is computed once."""
    variance = (squares - total * total / n) / (n - 1)
    return case((n < 2, None), (variance <= 0, 0.0), else_=func.sqrt(variance))


def aggregates(
    session: Session, *, by: str | Sequence[str], metric: str = "dice", **filters: Filter
) -> list[dict[str, Any]]:
    """n, mean, std (sample, ddof=1), min and max of `metric` over succeeded runs,
    grouped by one or more of experiment, architecture, encoder, family, init, sweep."""
    names = [by] if isinstance(by, str) else list(by)
    groups = [GROUPS[_choose("grouping", name, GROUPS)].label(name) for name in names]
    x = METRICS[_choose("metric", metric, METRICS)]
    sums = (
        select(
            *groups,
            func.count(x).label("n"),
            func.sum(x).label("total"),
            func.sum(x * x).label("squares"),
            func.min(x).label("min"),
            func.max(x).label("max"),
        )
        .join(Sweep, Sweep.id == Run.sweep_id)
        .join(TestSummary, TestSummary.run_id == Run.id)
        .where(Run.status == "succeeded", x.is_not(None))
        .group_by(*groups)
    )
    g = _filtered(sums, **filters).subquery()
    stmt = select(
        *(g.c[name] for name in names),
        g.c.n,
        (g.c.total / g.c.n).label("mean"),
        _std(g.c.total, g.c.squares, g.c.n).label("std"),
        g.c.min,
        g.c.max,
    ).order_by(*(g.c[name] for name in names))
    return _rows(session, stmt)


def _downsampled(max_points: int | None) -> Any:
    """Keep every k-th epoch (k = ceil(planned epochs / max_points)) and the planned last."""
    if not max_points:
        return True
    step = case((Run.epochs <= max_points, 1), else_=(Run.epochs + max_points - 1) // max_points)
    return or_((Epoch.epoch - 1) % step == 0, Epoch.epoch == Run.epochs)


def _kept_epochs(planned: int, max_points: int | None) -> set[int] | None:
    if not max_points or planned <= max_points:
        return None
    return set(range(1, planned + 1, -(-planned // max_points)))


EPOCH_COLUMNS = (
    Epoch.run_id,
    Epoch.epoch,
    Epoch.train_loss,
    Epoch.val_loss,
    Epoch.train_seconds,
    Epoch.val_seconds,
    Epoch.is_best,
)


def epoch_curves(
    session: Session, *, run_ids: Iterable[int], max_points: int | None = None
) -> list[dict[str, Any]]:
    """Per-epoch losses and seconds of the runs, by run and epoch.

    With `max_points`, a run keeps every k-th epoch (k = ceil(planned epochs /
    max_points)) and its last recorded one; the wanted epochs are looked up by key
    rather than filtered row by row.
    """
    run_ids = sorted({int(i) for i in run_ids})
    if not run_ids:
        return []
    order = (Epoch.run_id, Epoch.epoch)
    if not max_points:
        stmt = select(*EPOCH_COLUMNS).where(Epoch.run_id.in_(run_ids)).order_by(*order)
        return _rows(session, stmt)
    by_plan: dict[int, list[int]] = {}
    last: dict[int, int] = {}
    for run_id, planned, epoch in session.execute(
        select(Run.id, Run.epochs, Run.epoch).where(Run.id.in_(run_ids))
    ):
        by_plan.setdefault(planned, []).append(run_id)
        last[run_id] = epoch
    rows: list[dict[str, Any]] = []
    for planned, ids in by_plan.items():
        stmt = select(*EPOCH_COLUMNS).where(Epoch.run_id.in_(ids)).order_by(*order)
        kept = _kept_epochs(planned, max_points)
        if kept is None:
            rows += _rows(session, stmt)
            continue
        wanted = sorted(kept | {last[i] for i in ids})
        rows += [
            row
            for row in _rows(session, stmt.where(Epoch.epoch.in_(wanted)))
            if row["epoch"] in kept or row["epoch"] == last[row["run_id"]]
        ]
    if len(by_plan) > 1:
        rows.sort(key=lambda row: (row["run_id"], row["epoch"]))
    return rows


def loss_bands(
    session: Session, *, by: str = "architecture", max_points: int | None = None, **filters: Filter
) -> list[dict[str, Any]]:
    """Mean and std (ddof=1) of train and validation loss per group and epoch (the
    paper's Figure 5), over the runs the filters select."""
    group = GROUPS[_choose("grouping", by, GROUPS)].label(by)
    sums = (
        select(
            group,
            Epoch.epoch,
            func.count().label("n"),
            func.sum(Epoch.train_loss).label("train_total"),
            func.sum(Epoch.train_loss * Epoch.train_loss).label("train_squares"),
            func.sum(Epoch.val_loss).label("val_total"),
            func.sum(Epoch.val_loss * Epoch.val_loss).label("val_squares"),
        )
        .select_from(Run)
        .join(Sweep, Sweep.id == Run.sweep_id)
        .join(Epoch, Epoch.run_id == Run.id)
        .where(_downsampled(max_points))
        .group_by(group, Epoch.epoch)
    )
    g = _filtered(sums, **filters).subquery()
    stmt = select(
        g.c[by],
        g.c.epoch,
        g.c.n,
        (g.c.train_total / g.c.n).label("train_mean"),
        _std(g.c.train_total, g.c.train_squares, g.c.n).label("train_std"),
        (g.c.val_total / g.c.n).label("val_mean"),
        _std(g.c.val_total, g.c.val_squares, g.c.n).label("val_std"),
    ).order_by(g.c[by], g.c.epoch)
    return _rows(session, stmt)


def queue_counts(session: Session, *, sweep: str | None = None) -> dict[str, int]:
    """Number of runs per status (every status present, 0 if none)."""
    stmt = select(Run.status, func.count()).group_by(Run.status)
    if sweep is not None:
        stmt = stmt.where(Run.sweep_id == _sweep_id(session, sweep))
    counts = dict.fromkeys(RUN_STATUSES, 0)
    counts.update({status: count for status, count in session.execute(stmt)})
    return counts


def slice_results(session: Session, *, run_ids: Iterable[int]) -> list[dict[str, Any]]:
    """Per-test-slice confusion counts of the runs, by run and test index."""
    stmt = (
        select(
            SliceResult.run_id,
            SliceResult.idx,
            SliceResult.volume,
            SliceResult.slice,
            SliceResult.tp,
            SliceResult.fp,
            SliceResult.fn,
            SliceResult.tn,
        )
        .where(SliceResult.run_id.in_(list(run_ids)))
        .order_by(SliceResult.run_id, SliceResult.idx)
    )
    return _rows(session, stmt)


# what the Live page shows of a running or failed run
RUN_PROGRESS_COLUMNS = (
    Run.id,
    Sweep.name.label("sweep"),
    Run.experiment,
    Run.architecture,
    Run.encoder,
    Run.init,
    Run.worker,
    Run.attempts,
    Run.epoch,
    Run.epochs,
)


def running_runs(session: Session, *, sweep: str | None = None) -> list[dict[str, Any]]:
    """Running runs with progress, worker, heartbeat and an ETA from their mean
    seconds per epoch so far."""
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
            Run.started_at,
            Run.heartbeat_at,
            Run.lease_expires_at,
            per_epoch.label("seconds_per_epoch"),
        )
        .join(Sweep, Sweep.id == Run.sweep_id)
        .where(Run.status == "running")
        .order_by(Run.started_at, Run.id)
    )
    rows = _rows(session, _filtered(stmt, sweep=sweep))
    now = utcnow()
    for row in rows:
        spe = row["seconds_per_epoch"]
        row["eta_seconds"] = None if spe is None else max(row["epochs"] - row["epoch"], 0) * spe
        lease = row["lease_expires_at"]
        row["lease_expired"] = lease is not None and lease < now
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
    return _rows(session, _filtered(stmt, sweep=sweep))


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
    return _rows(session, stmt)


def run_detail(session: Session, *, run_id: int) -> dict[str, Any]:
    """Everything about one run: its row, sweep name and test summary."""
    stmt = (
        select(Run, Sweep.name.label("sweep"), TestSummary)
        .join(Sweep, Sweep.id == Run.sweep_id)
        .outerjoin(TestSummary, TestSummary.run_id == Run.id)
        .where(Run.id == run_id)
    )
    row = session.execute(stmt).one_or_none()
    if row is None:
        raise UnknownRun(
            f"No run with id {run_id} in the database; `segbench status` lists the runs."
        )
    run, sweep, summary = row
    detail = {c.key: getattr(run, c.key) for c in Run.__table__.columns}
    detail["sweep"] = sweep
    summary_columns = [c.key for c in TestSummary.__table__.columns if c.key != "run_id"]
    detail["test"] = None if summary is None else {k: getattr(summary, k) for k in summary_columns}
    return detail


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
    return _rows(session, stmt)


def status_rows(session: Session, sweep: str | None = None) -> list[dict[str, Any]]:
    """The rows of `segbench status --format json`: exactly STATUS_KEYS, by run id."""
    stmt = (
        select(
            Run.id,
            Run.experiment,
            Run.architecture,
            Run.encoder,
            Run.init,
            Run.status,
            Run.epoch,
            Run.epochs,
            TestSummary.dice,
            TestSummary.sensitivity,
            TestSummary.specificity,
        )
        .outerjoin(TestSummary, TestSummary.run_id == Run.id)
        .order_by(Run.id)
    )
    if sweep is not None:
        stmt = stmt.where(Run.sweep_id == _sweep_id(session, sweep))
    return _rows(session, stmt)


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
            Run.id,
            Sweep.name.label("sweep"),
            Run.experiment,
            Run.architecture,
            Run.encoder,
            Run.init,
            Run.synthetic,
            TestSummary.dice,
        )
        .join(Sweep, Sweep.id == Run.sweep_id)
        .outerjoin(TestSummary, TestSummary.run_id == Run.id)
        .where(Run.id.in_(has_filters))
        .order_by(Sweep.name, Run.experiment, Run.architecture, Run.encoder, Run.init)
    )
    return _rows(session, stmt)

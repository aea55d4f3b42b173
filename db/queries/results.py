"""Reads of results: the leaderboard, aggregates, loss curves, per-slice counts and
the succeeded runs behind exports and comparisons (artifacts: db.queries.artifacts)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from db.grid import expand
from db.models import Artifact, Epoch, Run, SliceResult, Sweep, TestSummary
from db.queries._shared import (
    RUN_KEY_COLUMNS,
    SUMMARY_COLUMNS,
    Filter,
    as_list,
    choose,
    filtered,
    rows_of,
    sweep_id,
)
from db.queries.summaries import with_extra_metrics

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
    "seed": Run.seed,
    "protocol_hash": Run.protocol_hash,
    "environment_key": Run.environment_key,
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
    "nsd": TestSummary.nsd,
    "hd95": TestSummary.hd95,
    "test_volumes": TestSummary.test_volumes,
    "nsd_volumes": TestSummary.nsd_volumes,
    "hd95_volumes": TestSummary.hd95_volumes,
}

# a sweep's protocol without the field was stored before bf16 became a protocol
# choice: it loads as fp32 (db.protocol.Protocol)
LEADERBOARD_KEYS = (*LEADERBOARD_COLUMNS, "train_precision")


def leaderboard(
    session: Session,
    *,
    sort: str = "dice",
    descending: bool = True,
    limit: int | None = None,
    **filters: Filter,
) -> list[dict[str, Any]]:
    """Runs with their test summary (None until succeeded), best first: the keys of
    LEADERBOARD_KEYS (train_precision: of the sweep's protocol).

    Filters: experiment, architecture, encoder, family, init, sweep, status.
    """
    order = LEADERBOARD_COLUMNS[choose("sort column", sort, LEADERBOARD_COLUMNS)]
    order = order.desc() if descending else order.asc()
    stmt = (
        select(*LEADERBOARD_COLUMNS.values(), Sweep.protocol, TestSummary.extra)
        .join(Sweep, Sweep.id == Run.sweep_id)
        .outerjoin(TestSummary, TestSummary.run_id == Run.id)
        .order_by(order.nulls_last(), Run.id)
        .limit(limit)
    )
    rows = with_extra_metrics(rows_of(session, filtered(stmt, **filters)))
    for row in rows:
        row["train_precision"] = (row.pop("protocol") or {}).get("train_precision", "fp32")
    return rows


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
    groups = [GROUPS[choose("grouping", name, GROUPS)].label(name) for name in names]
    x = METRICS[choose("metric", metric, METRICS)]
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
    g = filtered(sums, **filters).subquery()
    stmt = select(
        *(g.c[name] for name in names),
        g.c.n,
        (g.c.total / g.c.n).label("mean"),
        _std(g.c.total, g.c.squares, g.c.n).label("std"),
        g.c.min,
        g.c.max,
    ).order_by(*(g.c[name] for name in names))
    return rows_of(session, stmt)


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
        return rows_of(session, stmt)
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
            rows += rows_of(session, stmt)
            continue
        wanted = sorted(kept | {last[i] for i in ids})
        rows += [
            row
            for row in rows_of(session, stmt.where(Epoch.epoch.in_(wanted)))
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
    group = GROUPS[choose("grouping", by, GROUPS)].label(by)
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
    g = filtered(sums, **filters).subquery()
    stmt = select(
        g.c[by],
        g.c.epoch,
        g.c.n,
        (g.c.train_total / g.c.n).label("train_mean"),
        _std(g.c.train_total, g.c.train_squares, g.c.n).label("train_std"),
        (g.c.val_total / g.c.n).label("val_mean"),
        _std(g.c.val_total, g.c.val_squares, g.c.n).label("val_std"),
    ).order_by(g.c[by], g.c.epoch)
    return rows_of(session, stmt)


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
    return rows_of(session, stmt)


SUCCEEDED_COLUMNS = (
    *RUN_KEY_COLUMNS,
    Run.seed,
    Run.protocol_hash,
    Sweep.protocol,
    Run.family,
    Run.synthetic,
    Run.dataset_name,
    Run.manifest_hash,
    Run.environment_key,
    Run.parameters_m,
    Run.train_seconds_per_epoch,
    Run.val_seconds_per_epoch,
    Run.library_versions,
    Run.git_commit,
    *SUMMARY_COLUMNS,
    *(LEADERBOARD_COLUMNS[k] for k in ("test_volumes", "nsd_volumes", "hd95_volumes")),
    TestSummary.extra,
    Artifact.path.label("checkpoint_path"),
    Artifact.sha256.label("checkpoint_sha256"),
)


def succeeded_runs(
    session: Session,
    *,
    sweep: str | None = None,
    experiment: Filter = None,
    architecture: Filter = None,
    encoder: Filter = None,
    family: Filter = None,
    init: Filter = None,
) -> list[dict[str, Any]]:
    """Succeeded runs with their test summary and best checkpoint, by run id.

    Grid filters are checked (an unknown name raises GridError); encoders and
    families combine as a union, as in db.grid.expand.
    """
    chosen = {
        k: as_list(v)
        for k, v in dict(
            experiment=experiment,
            architecture=architecture,
            encoder=encoder,
            family=family,
            init=init,
        ).items()
    }
    expand(**{f"{k}s" if k != "family" else "families": v for k, v in chosen.items()})
    if sweep is not None:
        sweep_id(session, sweep)
    stmt = (
        select(*SUCCEEDED_COLUMNS)
        .join(Sweep, Sweep.id == Run.sweep_id)
        .join(TestSummary, TestSummary.run_id == Run.id)
        .outerjoin(Artifact, (Artifact.run_id == Run.id) & (Artifact.kind == "checkpoint"))
        .where(Run.status == "succeeded")
        .order_by(Run.id)
    )
    stmt = filtered(
        stmt,
        sweep=sweep,
        experiment=chosen["experiment"],
        architecture=chosen["architecture"],
        init=chosen["init"],
    )
    if chosen["encoder"] or chosen["family"]:
        stmt = stmt.where(Run.encoder.in_(chosen["encoder"]) | Run.family.in_(chosen["family"]))
    return with_extra_metrics(rows_of(session, stmt))

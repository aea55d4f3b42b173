"""Results out of the database as frames: one row per succeeded run with its test
metrics in one metric mode, and each run's per-slice counts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from sqlalchemy.orm import Session

from db import metrics as registry
from db import queries
from db.errors import SegbenchError
from worker.training.metrics import summarize


class ExportError(SegbenchError, ValueError):
    """Nothing to export, or a model file that is not where the database says."""


SLICE_COLUMNS = ["idx", "volume", "slice", "tp", "fp", "fn", "tn"]
RUN_COLUMNS = [
    "id",
    "sweep",
    "experiment",
    "architecture",
    "encoder",
    "family",
    "init",
    "seed",
    "protocol_hash",
    "environment_key",  # where it trained (worker.results.environments)
    "protocol",  # the sweep's (db.protocol.Protocol.shared_dict)
    "synthetic",
    "dataset_name",
    "metric_mode",
    "test_volumes",
]


def result_columns() -> list[str]:
    """The columns of results_frame: the run's keys, then every metric of db.metrics and
    the test volumes each volume-level mean covers."""
    coverage = [m.coverage for m in registry.select(level="volume")]
    return [*RUN_COLUMNS, *(m.name for m in registry.all_metrics()), *coverage]


def run_counts(session: Session, run_ids: Sequence[int]) -> dict[int, pd.DataFrame]:
    """Per-slice counts of each run: DataFrame (idx, volume, slice, tp, fp, fn, tn)."""
    rows = queries.slice_results(session, run_ids=run_ids)
    df = pd.DataFrame(rows, columns=["run_id", *SLICE_COLUMNS])
    return {
        int(k): g.drop(columns="run_id").reset_index(drop=True) for k, g in df.groupby("run_id")
    }


def results_frame(
    session: Session, *, metric_mode: str = "standard", sweep: str | None = None, **filters: Any
) -> pd.DataFrame:
    """One row per succeeded run with its test metrics (percent) in ``metric_mode``.

    Runs whose stored summary used another mode are recomputed from their per-slice
    counts, so every row is in the same mode.
    """
    rows = queries.succeeded_runs(session, sweep=sweep, **filters)
    df = pd.DataFrame(rows, columns=result_columns())
    df["synthetic"] = df["synthetic"].astype(bool)
    stale = df.index[df["metric_mode"] != metric_mode]
    if len(stale):
        counts = run_counts(session, df.loc[stale, "id"].tolist())
        for i in stale:
            c = counts.get(int(df.at[i, "id"]))
            if c is None or c.empty:
                raise ExportError(
                    f"Run {df.at[i, 'id']} has no per-slice counts, so its metrics cannot be "
                    f"recomputed in mode {metric_mode}; export it in mode "
                    f"{df.at[i, 'metric_mode']}."
                )
            s = summarize(c[["tp", "fp", "fn", "tn"]].to_numpy(), metric_mode)
            for k, v in s.items():
                df.at[i, k] = v
            df.at[i, "metric_mode"] = metric_mode
    return df

"""Tables of metrics for the dashboard as pandas Stylers: each metric with its decimals
(db.metrics), an en dash where a value is missing, "(k/n)" after a volume-level mean
that covers k of a run's n test volumes, the best value of a column highlighted."""

from __future__ import annotations

import pandas as pd
from pandas.io.formats.style import Styler

from db import metrics as registry
from db.metrics import Metric
from worker.results.formats import MISSING

BEST_STYLE = "font-weight: bold; background-color: rgba(44, 160, 44, 0.28)"


def table_height(rows: int, most: int = 640) -> int:
    """Pixels a st.dataframe needs to show ``rows`` rows without scrolling (at most
    ``most``)."""
    return min(38 + 35 * max(rows, 1), most)


def metric_styler(
    shown: pd.DataFrame,
    rows: pd.DataFrame,
    metrics: tuple[Metric, ...] | None = None,
    *,
    highlight: bool = True,
) -> Styler:
    """``shown`` (one column per metric, headed by its ``header``) styled from ``rows``
    (the same index, with the metrics' coverage and ``test_volumes`` where known).
    Means that leave volumes out are never marked best, and nothing is marked in a
    column whose values are all equal."""
    metrics = registry.all_metrics() if metrics is None else metrics
    style = shown.style.format(precision=2, na_rep=MISSING)
    for m in metrics:
        if m.header not in shown:
            continue
        style = style.format(precision=m.decimals, na_rep=MISSING, subset=[m.header])
        complete = rows.index[pd.to_numeric(rows[m.name], errors="coerce").notna()]
        if m.coverage and m.coverage in rows and "test_volumes" in rows:
            covered = pd.to_numeric(rows[m.coverage], errors="coerce")
            total = pd.to_numeric(rows["test_volumes"], errors="coerce")
            partial = covered.notna() & total.notna() & (covered < total)
            complete = complete.difference(rows.index[partial])
            for i in rows.index[partial]:
                k, n = int(covered[i]), int(total[i])
                style = style.format(
                    lambda v, k=k, n=n, d=m.decimals: f"{v:.{d}f} ({k}/{n})",
                    subset=pd.IndexSlice[[i], [m.header]],
                )
        values = pd.to_numeric(rows.loc[complete, m.name], errors="coerce")
        if highlight and m.higher_is_better is not None and values.nunique() > 1:
            best = style.highlight_max if m.higher_is_better else style.highlight_min
            style = best(subset=pd.IndexSlice[complete, [m.header]], props=BEST_STYLE)
    return style

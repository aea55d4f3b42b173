"""Altair charts of the statistics (the dashboard's Statistics page): intervals, the
blob plot of ranking stability, the significance map, the critical-difference
diagram, and the paper's means beside a user's own. Pure functions of DataFrames
(columns documented by each builder); colours follow worker.results.charts."""

from __future__ import annotations

import altair as alt
import pandas as pd

from db.grid import ARCHITECTURES, EXPERIMENTS
from worker.results.charts import ARCHITECTURE_SCALE

ROW_PX = 26  # height of one run's row: an 11 px label with room to spare
LABEL_LIMIT = 420  # px a run's label may take before Vega-Lite cuts it
MUTED = "#888888"  # marks that must show on light and dark themes alike
# The plot area gets the height asked for and the axes come on top of it; the width
# fills the page (Streamlit's default, "fit", squeezes the plot into the height).
FIT_WIDTH = alt.AutoSizeParams(type="fit-x", contains="padding")


def rows_height(n: int) -> int:
    """Height (px) of a plot area with ``n`` rows of labels, none dropped."""
    return ROW_PX * max(n, 2)


def label_axis(**kwargs) -> alt.Axis:
    """An axis that shows every label whole (no overlap culling, long labels kept)."""
    return alt.Axis(labelOverlap=False, labelLimit=LABEL_LIMIT, **kwargs)


def interval_chart(runs: pd.DataFrame, title: str = "Dice (%)", decimals: int = 2) -> alt.Chart:
    """Mean with its interval, one row per run, best on top, every run labelled.

    Columns: label, architecture, dice, low, high."""
    order = runs.sort_values("dice", ascending=False)["label"].tolist()
    y = alt.Y("label:N", sort=order, title=None, axis=label_axis())
    base = alt.Chart(runs).encode(y=y, color=alt.Color("architecture:N", scale=ARCHITECTURE_SCALE))
    bars = base.mark_rule(strokeWidth=3).encode(
        x=alt.X("low:Q", title=title, scale=alt.Scale(zero=False)), x2="high:Q"
    )
    number = f".{decimals}f"
    points = base.mark_point(filled=True, size=70, stroke=MUTED, strokeWidth=1).encode(
        x="dice:Q",
        tooltip=[
            "label:N",
            alt.Tooltip("dice:Q", format=number, title=title),
            alt.Tooltip("low:Q", format=number),
            alt.Tooltip("high:Q", format=number),
        ],
    )
    return (bars + points).properties(height=rows_height(len(order)), autosize=FIT_WIDTH)


def blob_chart(shares: pd.DataFrame, ranks: pd.DataFrame) -> alt.LayerChart:
    """challengeR's blob plot: for each run (x, ordered by its rank) a circle per rank
    it took in the bootstrap, area proportional to how often; a line spans its 95% rank
    interval and a tick marks its median rank.

    shares: label, rank, share. ranks: label, rank (observed), median_rank, low, high."""
    order = ranks.sort_values(["rank", "median_rank"])["label"].tolist()
    x = alt.X("label:N", sort=order, title=None, axis=label_axis(labelAngle=-40))
    n = max(len(order), 1)
    y_scale = alt.Scale(domain=[0.5, n + 0.5], reverse=True)
    blobs = (
        alt.Chart(shares)
        .mark_circle(color="#1f77b4", opacity=0.7)
        .encode(
            x=x,
            y=alt.Y("rank:Q", title="rank (1 = best)", scale=y_scale),
            size=alt.Size("share:Q", title="share of resamples", scale=alt.Scale(range=[10, 600])),
            tooltip=["label:N", "rank:Q", alt.Tooltip("share:Q", format=".0%")],
        )
    )
    spans = alt.Chart(ranks).mark_rule(color=MUTED).encode(x=x, y="low:Q", y2="high:Q")
    medians = (
        alt.Chart(ranks)
        .mark_tick(color=MUTED, thickness=2, size=14)
        .encode(x=x, y="median_rank:Q", tooltip=["label:N", "median_rank:Q", "low:Q", "high:Q"])
    )
    return (blobs + spans + medians).properties(height=max(220, 28 * n), autosize=FIT_WIDTH)


def significance_map(
    pairs: pd.DataFrame, alpha: float = 0.05, p: str = "p_holm", title: str = "p (Holm)"
) -> alt.Chart:
    """The adjusted p-value ``p`` of every pair shown, both ways round, one row and one
    column per run with every label shown; a cross marks the pairs significant at
    ``alpha``; the tooltip shows ``p_text`` where the frame has it (formatted p).

    Columns: a, b (run labels), the column ``p``, optionally p_text."""
    both = pd.concat([pairs, pairs.rename(columns={"a": "b", "b": "a"})], ignore_index=True)
    both["significant"] = both[p] <= alpha
    if "p_text" not in both:
        both["p_text"] = both[p].map(lambda v: f"{v:.3g}")
    order = list(dict.fromkeys([*pairs["a"], *pairs["b"]]))
    base = alt.Chart(both).encode(
        x=alt.X("a:N", title=None, sort=order, axis=label_axis(labelAngle=-40)),
        y=alt.Y("b:N", title=None, sort=order, axis=label_axis()),
    )
    cells = base.mark_rect().encode(
        color=alt.Color(
            f"{p}:Q",
            title=title,
            scale=alt.Scale(type="log", domain=[1e-4, 1], scheme="viridis", clamp=True),
        ),
        tooltip=["a:N", "b:N", alt.Tooltip("p_text:N", title=title), "significant:N"],
    )
    marks = base.transform_filter("datum.significant").mark_text(text="×", color="white")
    return (cells + marks).properties(height=rows_height(len(order)), autosize=FIT_WIDTH)


def cd_chart(cd: dict) -> alt.LayerChart:
    """A critical-difference diagram (Demšar 2006): treatments on an axis of average
    rank (1 = best, left), each with a line down to its label; a red bar of the CD's
    length above the axis, and a grey bar under each group of treatments whose ranks
    lie within the CD (not significantly different).

    cd: one analysis of worker.results.ranking.cd_analysis."""
    ranks = pd.DataFrame(cd["mean_ranks"])
    k, groups = len(ranks), len(cd["cliques"])
    top = k + 1.0 + 0.35 * groups
    ranks["axis"] = top
    ranks["y"] = [k - i for i in range(k)]
    ranks["text"] = [
        f"{n} ({r:.2f})" for n, r in zip(ranks["name"], ranks["mean_rank"], strict=True)
    ]
    x_scale = alt.Scale(domain=[1, max(k, 2)])
    x = alt.X("mean_rank:Q", title="average rank (1 = best)", scale=x_scale)
    y_scale = alt.Scale(domain=[0.3, top + 1.0])
    y = alt.Y("y:Q", axis=None, scale=y_scale)
    stems = alt.Chart(ranks).mark_rule(color=MUTED).encode(x=x, y=y, y2="axis:Q")
    points = (
        alt.Chart(ranks)
        .mark_point(filled=True, size=50, color=MUTED)
        .encode(x=x, y=alt.Y("axis:Q", scale=y_scale, axis=None), tooltip=["text:N"])
    )
    labels = (
        alt.Chart(ranks)
        .mark_text(align="left", dx=5, color=MUTED, fontSize=12)
        .encode(x=x, y=y, text="text:N")
    )
    bar = pd.DataFrame(
        [{"mean_rank": 1.0, "end": 1.0 + cd["cd"], "y": top + 0.6, "label": f"CD = {cd['cd']:.2f}"}]
    )
    cd_bar = alt.Chart(bar).mark_rule(strokeWidth=3, color="#d62728").encode(x=x, x2="end:Q", y=y)
    cd_text = (
        alt.Chart(bar)
        .mark_text(align="left", dx=5, color="#d62728")
        .encode(x="end:Q", y=y, text="label:N")
    )
    lookup = dict(zip(ranks["name"], ranks["mean_rank"], strict=True))
    cliques = pd.DataFrame(
        [
            {"mean_rank": lookup[g[0]], "end": lookup[g[-1]], "y": top - 0.35 * (i + 1)}
            for i, g in enumerate(cd["cliques"])
        ],
        columns=["mean_rank", "end", "y"],
    )
    lines = alt.Chart(cliques).mark_rule(strokeWidth=5, color=MUTED).encode(x=x, x2="end:Q", y=y)
    layers = cd_bar + cd_text + stems + lines + points + labels
    return layers.properties(height=60 + ROW_PX * k, autosize=FIT_WIDTH)


PAPER_SOURCE = "paper (real CT scans)"


def paper_chart(frame: pd.DataFrame, *, synthetic: bool = False) -> alt.FacetChart:
    """Mean Dice per architecture and experiment: the paper's and the user's side by
    side (a bar each), faceted by experiment. The legend says where each bar comes
    from: the paper's real CT scans, and this database's results, labelled SYNTHETIC
    when they were trained on generated data.

    Columns: experiment, architecture, source ("paper" or "this database"), dice."""
    own = "this database: SYNTHETIC data" if synthetic else "this database"
    frame = frame.assign(source=frame["source"].map({"paper": PAPER_SOURCE}).fillna(own))
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X(
                "architecture:N",
                sort=list(ARCHITECTURES),
                title=None,
                axis=alt.Axis(labelAngle=0),
            ),
            xOffset=alt.XOffset("source:N", sort=[PAPER_SOURCE, own]),
            y=alt.Y("dice:Q", title="mean Dice (%)", scale=alt.Scale(zero=False)),
            color=alt.Color(
                "source:N",
                sort=[PAPER_SOURCE, own],
                title="mean Dice of",
                legend=alt.Legend(orient="bottom", labelLimit=400),
            ),
            opacity=alt.value(0.9),
            tooltip=[
                "experiment:N",
                "architecture:N",
                "source:N",
                alt.Tooltip("dice:Q", format=".2f"),
            ],
        )
        .properties(width=200, height=240)
        .facet(column=alt.Column("experiment:N", title=None, sort=list(EXPERIMENTS)))
    )

"""Altair chart builders: pure functions from DataFrames to charts (no Streamlit, no DB).

Each builder documents the columns it reads. Colours follow one rule: one colour per
architecture everywhere, in the paper's order. Every colour, dash or shade that
encodes something has a legend, drawn so that it reads on a light and on a dark
background (no black or white marks of their own).
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from db.grid import ARCHITECTURES, EXPERIMENTS, INITS

ARCHITECTURE_SCALE = alt.Scale(
    domain=list(ARCHITECTURES), range=["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
)
INIT_SCALE = alt.Scale(domain=list(INITS), range=["#9e9e9e", "#6a3d9a"])
SPLIT_DASH = alt.Scale(domain=["train", "validation"], range=[[1, 0], [5, 3]])
FACET_WIDTH = 180
HEIGHT = 260
LABELS_FLAT = alt.Axis(labelAngle=0)
EPOCH_AXIS = alt.Axis(format="d", tickMinStep=1)
NEUTRAL = "#8c8c8c"  # a grey that reads on the light and on the dark theme
# The train / validation legend draws dashed strokes in that grey: its default symbols
# are black dots, invisible on the dark theme.
SPLIT_LEGEND = alt.Legend(
    title="split", symbolType="stroke", symbolStrokeColor=NEUTRAL, symbolStrokeWidth=2
)


def _architecture_colour(title: str = "architecture") -> alt.Color:
    return alt.Color("architecture:N", scale=ARCHITECTURE_SCALE, title=title)


def _long_losses(frame: pd.DataFrame, ids: list[str]) -> pd.DataFrame:
    long = frame.melt(
        id_vars=ids,
        value_vars=["train_loss", "val_loss"],
        var_name="split",
        value_name="loss",
    )
    long["split"] = long["split"].map({"train_loss": "train", "val_loss": "validation"})
    return long


def loss_curves(curves: pd.DataFrame) -> alt.LayerChart:
    """Train (solid) and validation (dashed) loss per epoch, one colour per run, a dot
    at every epoch (a run of one epoch shows too).

    Columns: label, epoch, train_loss, val_loss. Missing (NaN) losses leave gaps.
    """
    long = _long_losses(curves[["label", "epoch", "train_loss", "val_loss"]], ["label", "epoch"])
    base = alt.Chart(long).encode(
        x=alt.X("epoch:Q", title="epoch", axis=EPOCH_AXIS),
        y=alt.Y("loss:Q", title="loss", scale=alt.Scale(zero=False)),
        color=alt.Color("label:N", title="run"),
        tooltip=["label:N", "split:N", "epoch:Q", alt.Tooltip("loss:Q", format=".4f")],
    )
    # The dots are a layer of their own: a line's point overlay would turn the split
    # legend into black dots.
    lines = base.mark_line().encode(
        strokeDash=alt.StrokeDash("split:N", scale=SPLIT_DASH, legend=SPLIT_LEGEND),
        detail="split:N",
    )
    dots = base.mark_circle(size=14, opacity=1).encode(detail="split:N")
    return alt.layer(lines, dots).properties(height=HEIGHT)


def dice_boxplot(runs: pd.DataFrame) -> alt.FacetChart:
    """Dice per architecture, one panel per experiment (the paper's Figure 6, top).

    Columns: experiment, architecture, dice.
    """
    return (
        alt.Chart(runs[["experiment", "architecture", "dice"]])
        .mark_boxplot(extent="min-max", size=28)
        .encode(
            x=alt.X("architecture:N", sort=list(ARCHITECTURES), title=None, axis=LABELS_FLAT),
            y=alt.Y("dice:Q", title="Dice (%)", scale=alt.Scale(zero=False)),
            color=_architecture_colour(),
        )
        .properties(width=FACET_WIDTH, height=HEIGHT)
        .facet(column=alt.Column("experiment:N", sort=list(EXPERIMENTS), title=None))
    )


def init_boxplot(runs: pd.DataFrame) -> alt.FacetChart:
    """Dice of random vs ImageNet initialisation per architecture, one panel per
    experiment (the paper's Figure 6, bottom). Columns: experiment, architecture,
    init, dice."""
    return (
        alt.Chart(runs[["experiment", "architecture", "init", "dice"]])
        .mark_boxplot(extent="min-max", size=14)
        .encode(
            x=alt.X("architecture:N", sort=list(ARCHITECTURES), title=None, axis=LABELS_FLAT),
            xOffset=alt.XOffset("init:N", sort=list(INITS)),
            y=alt.Y("dice:Q", title="Dice (%)", scale=alt.Scale(zero=False)),
            color=alt.Color("init:N", scale=INIT_SCALE, title="init"),
        )
        .properties(width=FACET_WIDTH, height=HEIGHT)
        .facet(column=alt.Column("experiment:N", sort=list(EXPERIMENTS), title=None))
    )


def dice_vs_parameters(runs: pd.DataFrame, density: pd.DataFrame) -> alt.LayerChart:
    """Dice vs parameters (millions), one colour per architecture, over a Gaussian KDE
    of all points as a grey heat map (the paper's Figure 4).

    runs: architecture, encoder, init, parameters_m, dice; density: x, x2, y, y2, density
    (see worker.results.density.density_grid; may be empty).
    """
    points = (
        alt.Chart(runs[["architecture", "encoder", "init", "parameters_m", "dice"]])
        .mark_circle(size=50, opacity=0.85, stroke="white", strokeWidth=0.5)
        .encode(
            x=alt.X("parameters_m:Q", title="parameters (millions)"),
            y=alt.Y("dice:Q", title="Dice (%)", scale=alt.Scale(zero=False)),
            color=_architecture_colour(),
            tooltip=[
                "architecture:N",
                "encoder:N",
                "init:N",
                alt.Tooltip("parameters_m:Q", format=".2f", title="parameters (M)"),
                alt.Tooltip("dice:Q", format=".2f"),
            ],
        )
    )
    if density.empty:
        return alt.layer(points).properties(height=360)
    # Grey whose opacity grows with the density: empty regions stay transparent, so the
    # heat map is no bright box on the dark theme.
    background = (
        alt.Chart(density)
        .mark_rect(color=NEUTRAL)
        .encode(
            x="x:Q",
            x2="x2:Q",
            y="y:Q",
            y2="y2:Q",
            opacity=alt.Opacity(
                "density:Q",
                scale=alt.Scale(range=[0.0, 0.7]),
                legend=alt.Legend(title="density of models (KDE)", format=".2g", tickCount=3),
            ),
        )
    )
    return alt.layer(background, points).resolve_scale(color="independent").properties(height=360)


def _bands_long(bands: pd.DataFrame, group: str) -> pd.DataFrame:
    parts = []
    for split, prefix in (("train", "train"), ("validation", "val")):
        part = bands[[group, "epoch"]].copy()
        part["split"] = split
        part["mean"] = bands[f"{prefix}_mean"].astype(float)
        std = bands[f"{prefix}_std"].astype(float).fillna(0.0)
        part["low"], part["high"] = part["mean"] - std, part["mean"] + std
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def loss_bands(bands: pd.DataFrame, group: str = "architecture") -> alt.FacetChart:
    """Mean loss per epoch with a +-1 std band, one colour per group, train and
    validation side by side (the paper's Figure 5). Columns: <group>, epoch,
    train_mean, train_std, val_mean, val_std."""
    long = _bands_long(bands, group)
    scale = ARCHITECTURE_SCALE if group == "architecture" else alt.Scale()
    # One legend for both layers, drawn as opaque strokes (the band's pale symbol would
    # hardly show); its title says what the line and the shade are.
    legend = alt.Legend(
        title=[group, "line: mean", "band: ± 1 std"],
        symbolType="stroke",
        symbolOpacity=1,
        symbolStrokeWidth=2,
    )
    colour = alt.Color(f"{group}:N", scale=scale, legend=legend)
    base = alt.Chart().encode(x=alt.X("epoch:Q", title="epoch", axis=EPOCH_AXIS), color=colour)
    band = base.mark_area(opacity=0.18).encode(
        y=alt.Y("low:Q", title="loss", scale=alt.Scale(zero=False)), y2="high:Q"
    )
    line = base.mark_line().encode(
        y="mean:Q", tooltip=[f"{group}:N", "epoch:Q", alt.Tooltip("mean:Q", format=".4f")]
    )
    return (
        alt.layer(band, line, data=long)
        .properties(width=320, height=HEIGHT)
        .facet(column=alt.Column("split:N", sort=["train", "validation"], title=None))
    )


def loss_difference(diff: pd.DataFrame) -> alt.FacetChart:
    """Mean loss of lesion B minus lesion A per epoch, per architecture, train and
    validation (the paper's Figure 5, bottom). Columns: architecture, epoch, split,
    difference."""
    line = (
        alt.Chart()
        .mark_line()
        .encode(
            x=alt.X("epoch:Q", title="epoch", axis=EPOCH_AXIS),
            y=alt.Y("difference:Q", title="loss B − loss A", axis=alt.Axis(format=".3f")),
            color=_architecture_colour(),
            tooltip=["architecture:N", "epoch:Q", alt.Tooltip("difference:Q", format=".4f")],
        )
    )
    zero = alt.Chart().mark_rule(color="#888", strokeDash=[2, 2]).encode(y=alt.datum(0))
    return (
        alt.layer(zero, line, data=diff)
        .properties(width=320, height=200)
        .facet(column=alt.Column("split:N", sort=["train", "validation"], title=None))
    )


def mean_dice_bars(agg: pd.DataFrame, group: str) -> alt.LayerChart:
    """Mean Dice (dot) +- 1 std (whisker) per group (encoder or family), best on top.
    Columns: <group>, n, mean, std."""
    frame = agg[[group, "n", "mean", "std"]].copy()
    frame["std"] = frame["std"].astype(float).fillna(0.0)
    frame["low"], frame["high"] = frame["mean"] - frame["std"], frame["mean"] + frame["std"]
    y = alt.Y(f"{group}:N", sort=alt.EncodingSortField("mean", order="descending"), title=None)
    x = alt.X("mean:Q", title="mean Dice (%) ± 1 std", scale=alt.Scale(zero=False))
    whiskers = alt.Chart(frame).mark_rule(color="#888").encode(x="low:Q", x2="high:Q", y=y)
    dots = (
        alt.Chart(frame)
        .mark_circle(size=70, color="#4c78a8", opacity=1)
        .encode(
            x=x,
            y=y,
            tooltip=[
                f"{group}:N",
                "n:Q",
                alt.Tooltip("mean:Q", format=".2f"),
                alt.Tooltip("std:Q", format=".2f"),
            ],
        )
    )
    return alt.layer(whiskers, dots).properties(height=max(120, 22 * len(frame)))


def intensity_histograms(hist: pd.DataFrame) -> alt.FacetChart:
    """Counts of normalised intensities on a log scale, every image pixel vs pixels
    inside the mask, one panel per split (the paper's Figure 2). Columns: split,
    pixels, start, end, count (empty bins are not drawn)."""
    frame = hist[hist["count"] > 0]
    return (
        alt.Chart(frame)
        .mark_line(interpolate="step-after")
        .encode(
            x=alt.X("start:Q", title="normalised intensity (HU + 500) / 500"),
            y=alt.Y("count:Q", scale=alt.Scale(type="log"), title="pixels (log scale)"),
            color=alt.Color(
                "pixels:N",
                scale=alt.Scale(domain=["image", "masked"], range=["#4c78a8", "#e45756"]),
                title="pixels",
            ),
            tooltip=["split:N", "pixels:N", alt.Tooltip("start:Q", format=".2f"), "count:Q"],
        )
        .properties(width=320, height=220)
        .facet(column=alt.Column("split:N", sort=["train", "validation", "test"], title=None))
    )

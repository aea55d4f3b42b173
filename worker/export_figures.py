"""The paper's figures as Altair charts (pure builders) and as PNG/SVG files.

Builders take plain DataFrames and return Altair charts, so the dashboard can show the
same charts live:
- dice_boxplot(df): Fig. 6, Dice per architecture per experiment, random vs ImageNet.
- dice_vs_parameters(df): Fig. 4, Dice vs parameters, one colour per architecture,
  Gaussian KDE of the runs in the background.
- loss_curves(df): Fig. 5, train/validation loss vs epoch, mean line and std band
  per architecture.
- dice_by_encoder(df): mean Dice (+- std) of each encoder per architecture.

``df`` for the Dice charts is worker.export.results_frame's (columns experiment,
architecture, encoder, init, dice, parameters_m, synthetic); loss_curves takes
loss_frame's (experiment, architecture, epoch, split, mean, std).
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd

from worker.grid import ARCHITECTURES, ENCODERS, EXPERIMENTS, INITS

FIGURES = ("dice_boxplot", "dice_vs_parameters", "loss_curves", "dice_by_encoder")
IMAGE_FORMATS = ("png", "svg")
ARCH_ORDER = list(ARCHITECTURES)
SYNTHETIC_NOTE = " [SYNTHETIC data: not a result on real CT]"


def _title(text: str, df: pd.DataFrame) -> str:
    synthetic = "synthetic" in df.columns and bool(df["synthetic"].fillna(False).any())
    return text + (SYNTHETIC_NOTE if synthetic else "")


def _present(df: pd.DataFrame, column: str, order) -> list[str]:
    seen = set(df[column])
    return [v for v in order if v in seen] + sorted(seen - set(order))


def dice_boxplot(df: pd.DataFrame) -> alt.Chart:
    """Dice (%) per architecture, one box per init, one panel per experiment."""
    return (
        alt.Chart(df, title=_title("Test Dice per architecture (Fig. 6)", df))
        .mark_boxplot(extent="min-max")
        .encode(
            x=alt.X("architecture:N", sort=ARCH_ORDER, title=None),
            xOffset=alt.XOffset("init:N", sort=list(INITS)),
            y=alt.Y("dice:Q", title="Dice (%)", scale=alt.Scale(zero=False)),
            color=alt.Color("init:N", sort=list(INITS)),
            column=alt.Column("experiment:N", sort=list(EXPERIMENTS), title=None),
        )
    )


def _kde_grid(df: pd.DataFrame, steps: int = 40) -> pd.DataFrame:
    """Gaussian KDE of (parameters, Dice) per experiment on a steps x steps grid."""
    from scipy.stats import gaussian_kde

    parts = []
    for exp, g in df.groupby("experiment"):
        pts = g[["parameters_m", "dice"]].dropna().to_numpy(dtype=float).T
        if pts.shape[1] < 3 or np.linalg.matrix_rank(np.cov(pts)) < 2:
            continue
        x = np.linspace(pts[0].min(), pts[0].max(), steps + 1)
        y = np.linspace(pts[1].min(), pts[1].max(), steps + 1)
        xc, yc = (x[:-1] + x[1:]) / 2, (y[:-1] + y[1:]) / 2
        gx, gy = np.meshgrid(xc, yc)
        density = gaussian_kde(pts)(np.vstack([gx.ravel(), gy.ravel()]))
        ix, iy = np.meshgrid(np.arange(steps), np.arange(steps))
        parts.append(
            pd.DataFrame(
                {
                    "experiment": exp,
                    "x": x[ix.ravel()],
                    "x2": x[ix.ravel() + 1],
                    "y": y[iy.ravel()],
                    "y2": y[iy.ravel() + 1],
                    "density": density / density.max(),
                }
            )
        )
    return pd.concat(parts) if parts else pd.DataFrame()


def dice_vs_parameters(df: pd.DataFrame) -> alt.Chart:
    """Dice (%) vs parameters (M) per run, coloured by architecture, KDE behind."""
    points = df.assign(layer="run")
    kde = _kde_grid(df)
    data = pd.concat([points, kde.assign(layer="kde")]) if len(kde) else points
    base = alt.Chart().properties(width=260, height=220)
    background = (
        base.transform_filter(alt.datum.layer == "kde")
        .mark_rect(opacity=0.5)
        .encode(
            x=alt.X("x:Q", title="Parameters (M)", scale=alt.Scale(zero=False)),
            x2="x2:Q",
            y=alt.Y("y:Q", title="Dice (%)"),
            y2="y2:Q",
            color=alt.Color("density:Q", scale=alt.Scale(scheme="greys"), legend=None),
        )
    )
    dots = (
        base.transform_filter(alt.datum.layer == "run")
        .mark_point(filled=True, size=40)
        .encode(
            x=alt.X("parameters_m:Q", title="Parameters (M)", scale=alt.Scale(zero=False)),
            y=alt.Y("dice:Q", title="Dice (%)", scale=alt.Scale(zero=False)),
            fill=alt.Fill("architecture:N", sort=ARCH_ORDER),
            tooltip=["architecture", "encoder", "init", "parameters_m", "dice"],
        )
    )
    layers = [background, dots] if len(kde) else [dots]
    return (
        alt.layer(*layers, data=data)
        .facet(column=alt.Column("experiment:N", sort=list(EXPERIMENTS), title=None))
        .resolve_scale(color="independent")
        .properties(title=_title("Test Dice vs number of parameters (Fig. 4)", df))
    )


def loss_frame(bands: list[dict] | pd.DataFrame, experiment: str | None = None) -> pd.DataFrame:
    """db.queries.loss_bands rows (grouped by architecture) -> the long frame of
    loss_curves: experiment, architecture, epoch, split, mean, std."""
    b = pd.DataFrame(bands)
    if b.empty:
        return pd.DataFrame(columns=["experiment", "architecture", "epoch", "split", "mean", "std"])
    if experiment is not None:
        b["experiment"] = experiment
    parts = [
        b[["experiment", "architecture", "epoch"]].assign(
            split=name, mean=b[f"{key}_mean"], std=b[f"{key}_std"].fillna(0.0)
        )
        for key, name in (("train", "train"), ("val", "validation"))
    ]
    return pd.concat(parts, ignore_index=True)


def loss_curves(df: pd.DataFrame) -> alt.Chart:
    """Mean loss per epoch with a +- std band, per architecture, split and experiment."""
    d = df.assign(low=df["mean"] - df["std"], high=df["mean"] + df["std"])
    base = alt.Chart().encode(
        x=alt.X("epoch:Q", title="Epoch"),
        color=alt.Color("architecture:N", sort=ARCH_ORDER),
    )
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("low:Q", title="Loss"), y2="high:Q")
    line = base.mark_line().encode(y=alt.Y("mean:Q", title="Loss"))
    return (
        alt.layer(band, line, data=d)
        .properties(width=240, height=180)
        .facet(
            row=alt.Row("split:N", sort=["train", "validation"], title=None),
            column=alt.Column("experiment:N", sort=list(EXPERIMENTS), title=None),
        )
        .properties(title=_title("Loss per epoch, mean +- std per architecture (Fig. 5)", df))
    )


def dice_by_encoder(df: pd.DataFrame) -> alt.Chart:
    """Mean Dice (%) +- std of each encoder (paper order), per architecture."""
    enc_order = _present(df, "encoder", ENCODERS)
    base = alt.Chart(df).encode(
        y=alt.Y("encoder:N", sort=enc_order, title=None),
        color=alt.Color("architecture:N", sort=ARCH_ORDER),
        yOffset=alt.YOffset("architecture:N", sort=ARCH_ORDER),
    )
    points = base.mark_point(filled=True).encode(
        x=alt.X("mean(dice):Q", title="Dice (%)", scale=alt.Scale(zero=False))
    )
    bars = base.mark_errorbar(extent="stdev").encode(x=alt.X("dice:Q", title="Dice (%)"))
    return (
        alt.layer(bars, points)
        .properties(width=220, height=alt.Step(6))
        .facet(column=alt.Column("experiment:N", sort=list(EXPERIMENTS), title=None))
        .properties(title=_title("Test Dice per encoder (mean +- std over inits)", df))
    )


def save_chart(chart: alt.TopLevelMixin, path: Path, scale: float = 2.0) -> Path:
    """Write a chart as PNG or SVG (by suffix) with vl-convert (no browser)."""
    kwargs = {"scale_factor": scale} if path.suffix == ".png" else {}
    chart.save(str(path), **kwargs)
    return path


def write_figures(
    results: pd.DataFrame,
    losses: pd.DataFrame,
    directory: Path | str,
    formats: tuple[str, ...] = IMAGE_FORMATS,
) -> list[Path]:
    """Every figure in every format into ``directory``; returns the files written."""
    for f in formats:
        if f not in IMAGE_FORMATS:
            raise ValueError(f"Unknown figure format '{f}'; expected png or svg.")
    if results.empty:
        raise ValueError("No succeeded run matches the selection; there is nothing to plot.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    charts = {
        "dice_boxplot": dice_boxplot(results),
        "dice_vs_parameters": dice_vs_parameters(results),
        "dice_by_encoder": dice_by_encoder(results),
    }
    if not losses.empty:
        synthetic = bool(results["synthetic"].any()) if "synthetic" in results else False
        charts["loss_curves"] = loss_curves(losses.assign(synthetic=synthetic))
    written = []
    for name, chart in charts.items():
        for f in formats:
            written.append(save_chart(chart, directory / f"{name}.{f}"))
    return written

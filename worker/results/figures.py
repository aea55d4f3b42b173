"""The paper's figures as PNG/SVG files, drawn with the dashboard's own chart builders
(worker.results.charts), so a file and the live page show the same chart.

One file per figure, one panel per experiment where a builder draws one experiment:
- dice_boxplot: Fig. 6 top, Dice per architecture per experiment.
- init_boxplot: Fig. 6 bottom, random vs ImageNet initialisation.
- dice_vs_parameters: Fig. 4, Dice vs parameters over a Gaussian KDE.
- loss_curves: Fig. 5, train/validation loss, mean +- std per architecture.
- loss_difference: Fig. 5 bottom, lesion B minus lesion A (when both were run).
- dice_by_encoder: mean Dice +- std per encoder.
Charts of generated stand-in data say so in their title.
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd

from db.errors import InvalidInput
from db.grid import EXPERIMENTS
from worker.results import charts
from worker.results.density import density_grid

IMAGE_FORMATS = ("png", "svg")
SYNTHETIC_NOTE = " [SYNTHETIC data: not a result on real CT]"
LESIONS = ("lesion-segmentation-a", "lesion-segmentation-b")


def _experiments(df: pd.DataFrame) -> list[str]:
    present = set(df["experiment"])
    return [x for x in EXPERIMENTS if x in present]


def loss_difference_frame(bands: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Mean loss of lesion B minus lesion A per architecture, epoch and split
    (columns architecture, epoch, split, difference); empty unless both ran."""
    a, b = (bands.get(x) for x in LESIONS)
    if a is None or b is None or a.empty or b.empty:
        return pd.DataFrame(columns=["architecture", "epoch", "split", "difference"])
    m = b.merge(a, on=["architecture", "epoch"], suffixes=("_b", "_a"))
    parts = [
        m[["architecture", "epoch"]].assign(
            split=split, difference=m[f"{key}_mean_b"] - m[f"{key}_mean_a"]
        )
        for key, split in (("train", "train"), ("val", "validation"))
    ]
    return pd.concat(parts, ignore_index=True)


def figures(results: pd.DataFrame, bands: dict[str, pd.DataFrame]) -> dict[str, alt.TopLevelMixin]:
    """Every figure as an Altair chart.

    results: worker.results.frames.results_frame (experiment, architecture, encoder, init,
    dice, parameters_m, synthetic); bands: experiment -> db.queries.loss_bands rows
    grouped by architecture (architecture, epoch, train_mean, train_std, val_mean,
    val_std).
    """
    exps = _experiments(results)
    out: dict[str, alt.TopLevelMixin] = {
        "dice_boxplot": charts.dice_boxplot(results),
        "init_boxplot": charts.init_boxplot(results),
    }
    panels = []
    for x in exps:
        runs = results[results["experiment"] == x]
        density = density_grid(runs["parameters_m"], runs["dice"])
        panels.append(charts.dice_vs_parameters(runs, density).properties(title=x))
    out["dice_vs_parameters"] = alt.hconcat(*panels).resolve_scale(color="independent")
    panels = []
    for x in exps:
        agg = (
            results[results["experiment"] == x]
            .groupby("encoder")["dice"]
            .agg(n="count", mean="mean", std="std")
            .reset_index()
        )
        panels.append(charts.mean_dice_bars(agg, "encoder").properties(title=x))
    out["dice_by_encoder"] = alt.hconcat(*panels)
    curves = [
        charts.loss_bands(bands[x]).properties(title=x)
        for x in exps
        if x in bands and not bands[x].empty
    ]
    if curves:
        out["loss_curves"] = alt.vconcat(*curves)
    diff = loss_difference_frame(bands)
    if not diff.empty:
        out["loss_difference"] = charts.loss_difference(diff)
    if "synthetic" in results and results["synthetic"].fillna(False).astype(bool).any():
        for name, chart in out.items():
            out[name] = chart.properties(title=name.replace("_", " ") + SYNTHETIC_NOTE)
    return out


def save_chart(chart: alt.TopLevelMixin, path: Path, scale: float = 2.0) -> Path:
    """Write a chart as PNG or SVG (by suffix) with vl-convert (no browser)."""
    kwargs = {"scale_factor": scale} if path.suffix == ".png" else {}
    chart.save(str(path), **kwargs)
    return path


def write_figures(
    results: pd.DataFrame,
    bands: dict[str, pd.DataFrame],
    directory: Path | str,
    formats: tuple[str, ...] = IMAGE_FORMATS,
) -> list[Path]:
    """Every figure in every format into ``directory``; returns the files written."""
    for f in formats:
        if f not in IMAGE_FORMATS:
            raise InvalidInput(f"Unknown figure format '{f}'; expected png or svg.")
    if results.empty:
        raise InvalidInput("No succeeded run matches the selection; there is nothing to plot.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return [
        save_chart(chart, directory / f"{name}.{f}")
        for name, chart in figures(results, bands).items()
        for f in formats
    ]

"""Analysis: the paper's figures, live. Dice boxplots (Fig. 6), Dice vs parameters over a
KDE (Fig. 4), loss bands and lesion B - A (Fig. 5), mean Dice by encoder and family,
intensity histograms of the data (Fig. 2)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import common, data
from db.grid import EXPERIMENTS
from worker.results import charts
from worker.results.density import density_grid

BAND_POINTS = 100  # epochs per loss band, downsampled in SQL

url, sweeps = common.results_page("Analysis", "the figures appear as runs finish")

top = st.columns([2, 2, 3])
with top[0]:
    sweep = common.sweep_choice(sweeps, key="an_sweep", prefer_results=True)
experiment = top[1].selectbox("Experiment", EXPERIMENTS, key="an_experiment")
scope = {"sweep": [sweep] if sweep else None, "status": ["succeeded"]}
runs = common.load(data.leaderboard, url, data.filters_key(**scope))
runs = runs[runs["dice"].notna()] if not runs.empty else runs
if runs.empty:
    st.info("No run has finished with test results yet; the figures appear as runs finish.")
    st.stop()
common.synthetic_badge(runs["synthetic"])
if sweep is None and len(sweeps) > 1:
    st.caption("All sweeps together: their protocols may differ; choose one sweep to compare.")
in_experiment = runs[runs["experiment"] == experiment]

box_tab, params_tab, loss_tab, enc_tab, hist_tab = st.tabs(
    [
        "Dice by architecture (Fig. 6)",
        "Dice vs parameters (Fig. 4)",
        "Loss curves (Fig. 5)",
        "Encoders",
        "Intensities (Fig. 2)",
    ]
)

with box_tab:
    st.caption(f"{len(runs)} finished runs.")
    st.altair_chart(charts.dice_boxplot(runs), width="content")
    st.markdown("**Random vs ImageNet initialisation**")
    st.altair_chart(charts.init_boxplot(runs), width="content")

with params_tab:
    points = in_experiment[in_experiment["parameters_m"].notna()]
    if points.empty:
        st.info(f"No finished {experiment} run with a parameter count yet.")
    else:
        density = density_grid(points["parameters_m"], points["dice"])
        st.altair_chart(charts.dice_vs_parameters(points, density), width="stretch")
        st.caption(
            f"{experiment}: {len(points)} runs; grey background: Gaussian kernel density "
            "of all points."
        )


def bands_for(name: str) -> pd.DataFrame:
    filters = data.filters_key(**{**scope, "experiment": [name]})
    return common.load(data.loss_bands, url, filters, "architecture", BAND_POINTS)


def difference(b: pd.DataFrame, a: pd.DataFrame) -> pd.DataFrame:
    both = b.merge(a, on=["architecture", "epoch"], suffixes=("_b", "_a"))
    parts = []
    for split, prefix in (("train", "train"), ("validation", "val")):
        diff = both[f"{prefix}_mean_b"].astype(float) - both[f"{prefix}_mean_a"].astype(float)
        parts.append(
            pd.DataFrame(
                {
                    "architecture": both["architecture"],
                    "epoch": both["epoch"],
                    "split": split,
                    "difference": diff,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


with loss_tab:
    bands = bands_for(experiment)
    if bands.empty:
        st.info(f"No epochs recorded for finished {experiment} runs yet.")
    else:
        st.markdown(f"**{experiment}**: mean loss ± 1 std per architecture")
        st.altair_chart(charts.loss_bands(bands), width="content")
    lesion_a, lesion_b = bands_for("lesion-segmentation-a"), bands_for("lesion-segmentation-b")
    diff = difference(lesion_b, lesion_a) if not (lesion_a.empty or lesion_b.empty) else None
    st.markdown("**Lesion B − lesion A**: mean loss difference per architecture")
    if diff is None or diff.empty:
        st.info("Needs finished runs of both lesion experiments.")
    else:
        st.altair_chart(charts.loss_difference(diff), width="content")
        st.caption("Below zero: masking the input with the lungs (lesion B) lowers the loss.")

with enc_tab:
    filters = data.filters_key(**{**scope, "experiment": [experiment]})
    left, right = st.columns([3, 2])
    for column, group in ((left, "encoder"), (right, "family")):
        agg = common.load(data.aggregates, url, group, filters)
        with column:
            st.markdown(f"**Mean Dice by {group}** ({experiment})")
            if agg.empty:
                st.info("No finished run yet.")
            else:
                st.altair_chart(charts.mean_dice_bars(agg, group), width="stretch")

with hist_tab:
    if sweep is None:
        st.info("Choose one sweep above: the histograms read that sweep's dataset folder.")
    else:
        row = sweeps[sweeps["name"] == sweep].iloc[0]
        size = int((row["protocol"] or {}).get("image_size", 512))
        st.caption(f"Dataset folder `{row['data_dir']}`, {experiment}, {size} × {size} pixels.")
        if st.toggle("Read the dataset and draw the histograms", key="an_histograms"):
            hist = common.attempt(data.intensity_histograms, row["data_dir"], experiment, size)
            if hist is not None and not hist.empty:
                st.altair_chart(charts.intensity_histograms(hist), width="content")
                st.caption("Every image pixel vs the pixels inside the target mask, log scale.")

"""Gallery: predicted masks of chosen models on a stored test slice over the CT slice,
correct pixels green and wrong pixels red (or blue and orange, safe for colour-blind
readers), with a legend, next to the ground truth (the paper's Figure 3); first-layer
filters before and after training (Figure 8)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import arrays, common, data
from db.grid import ARCHITECTURES, EXPERIMENTS

PER_ROW = 4

url, sweeps = common.results_page("Gallery", "predicted masks appear as runs finish")

top = st.columns([2, 2, 2])
with top[0]:
    sweep = common.sweep_choice(sweeps, key="gal_sweep", allow_all=False, prefer_results=True)
experiment = top[1].selectbox("Experiment", EXPERIMENTS, key="gal_experiment")
row = sweeps[sweeps["name"] == sweep].iloc[0]
common.synthetic_badge(bool(row["synthetic"]))
image_size = int((row["protocol"] or {}).get("image_size", 512))
test_resize = str((row["protocol"] or {}).get("test_resize", "standard"))


def best_and_worst(runs: pd.DataFrame) -> list[int]:
    """Run ids of the best and the worst encoder of each architecture (by Dice): the
    paper's four first, then any other (smp models beyond the paper, users' models)."""
    chosen: list[int] = []
    for architecture in dict.fromkeys([*ARCHITECTURES, *runs["architecture"]]):
        part = runs[runs["architecture"] == architecture]
        if part.empty:
            continue
        ranked = part.sort_values(["dice", "id"], ascending=[False, True])
        chosen += list(dict.fromkeys([int(ranked["id"].iloc[0]), int(ranked["id"].iloc[-1])]))
    return chosen


def slice_dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    p, t = predicted.astype(bool), truth.astype(bool)
    denominator = p.sum() + t.sum()
    return 100.0 if denominator == 0 else 200.0 * float((p & t).sum()) / float(denominator)


def masks_section() -> None:
    indexes = common.load(data.gallery_indexes, url, sweep, experiment)
    filters = data.filters_key(sweep=[sweep], experiment=[experiment], status=["succeeded"])
    runs = common.load(data.leaderboard, url, filters)
    runs = runs[runs["dice"].notna()] if not runs.empty else runs
    if not indexes or runs.empty:
        st.info(f"No stored predicted masks for {experiment} in sweep '{sweep}' yet.")
        return
    index = top[2].selectbox("Test slice", indexes, key="gal_index", format_func=lambda i: f"#{i}")
    labels = {
        int(r["id"]): f"{r['architecture']} · {r['encoder']} · {r['init']} ({r['dice']:.2f})"
        for _, r in runs.iterrows()
    }
    chosen = st.multiselect(
        "Models (default: the best and the worst encoder of each architecture)",
        list(labels),
        default=best_and_worst(runs),
        format_func=labels.get,
        key=f"gal_models_{sweep}_{experiment}",
    )
    image = truth = None
    loaded = common.attempt(
        data.ground_truth_slice, row["data_dir"], experiment, image_size, index, test_resize
    )
    if loaded is None:
        st.caption("Without the dataset folder only the predicted masks can be drawn.")
    else:
        image, truth = loaded
    masks = common.load(data.gallery_masks, url, tuple(chosen), index)
    palette = common.palette_choice()
    common.overlay_legend(palette)
    st.caption("Mean test Dice in brackets; this slice's Dice after the dot.")
    tiles: list[tuple[np.ndarray, str]] = []
    if image is not None:
        tiles.append(
            (arrays.overlay(image, truth, palette=palette), f"ground truth, test slice #{index}")
        )
    for run_id in chosen:
        mask = masks.get(run_id)
        if mask is None:
            tiles.append((np.zeros((8, 8, 3), np.uint8), f"{labels[run_id]}: no stored mask"))
        elif image is None or mask.shape != image.shape:
            tiles.append((arrays.mask_image(mask), labels[run_id]))
        else:
            caption = f"{labels[run_id]} · this slice {slice_dice(mask, truth):.1f}"
            tiles.append((arrays.overlay(image, truth, mask, palette=palette), caption))
    for start in range(0, len(tiles), PER_ROW):
        columns = st.columns(PER_ROW)
        for column, (rgb, caption) in zip(columns, tiles[start : start + PER_ROW], strict=False):
            column.image(arrays.upscale(rgb), caption=caption, width="stretch")


def filters_section() -> None:
    runs = common.load(data.filter_runs, url)
    runs = runs[runs["sweep"] == sweep] if not runs.empty else runs
    if runs.empty:
        st.info(f"No run of sweep '{sweep}' recorded its first-layer filters.")
        return
    labels = {int(r["id"]): common.run_label(r) for _, r in runs.iterrows()}
    preferred = runs[(runs["architecture"] == "unet") & (runs["encoder"] == "resnet18")]
    default = int((preferred if not preferred.empty else runs)["id"].iloc[0])
    ids = list(labels)
    run_id = st.selectbox(
        "Run", ids, index=ids.index(default), format_func=labels.get, key="gal_filter_run"
    )
    weights = common.load(data.first_layer, url, run_id)
    columns = st.columns(2)
    for column, kind, title in (
        (columns[0], "first_layer_before", "before training"),
        (columns[1], "first_layer_after", "after training"),
    ):
        with column:
            if kind in weights:
                w = weights[kind]
                st.image(arrays.filter_grid(w), caption=f"{title}: {w.shape[0]} filters")
            else:
                st.info(f"Not recorded {title}.")
    st.caption("Colour range ±0.4: blue negative, white zero, red positive (as in the paper).")


st.subheader("Predicted masks (Fig. 3)")
masks_section()
st.subheader("First-layer filters (Fig. 8)")
filters_section()

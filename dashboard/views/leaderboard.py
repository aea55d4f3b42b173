"""Leaderboard: the paper's Table 2, live. Sensitivity, specificity and Dice per model,
NSD and HD95 per volume, with parameters and seconds per epoch; filters, sorting, best
per column, CSV; runs that differ only by seed pooled (mean ± std, n)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import common, data
from db.grid import ARCHITECTURES, ENCODERS, EXPERIMENTS, FAMILIES, INITS
from db.models import RUN_STATUSES
from worker.results.baselines import MARKER_NOTE, marked
from worker.results.seeds import STD_DDOF, over_seeds
from worker.results.tables import DEFAULT_DDOF, best_mask, std_note, table2

COLUMNS = {
    "id": "run",
    "sweep": "sweep",
    "experiment": "experiment",
    "grid": "grid",
    "architecture": "architecture",
    "encoder": "encoder",
    "family": "family",
    "init": "init",
    "seed": "seed",
    "train_precision": "precision",
    "status": "status",
    "sensitivity": "Sens (%)",
    "specificity": "Spec (%)",
    "dice": "Dice (%)",
    "dice_std": "Dice std",
    "nsd": "NSD (%)",
    "hd95": "HD95 (mm)",
    "parameters_m": "params (M)",
    "train_seconds_per_epoch": "train s/epoch",
    "val_seconds_per_epoch": "val s/epoch",
    "best_epoch": "best epoch",
    "synthetic": "synthetic",
}
HIGHER_IS_BETTER = ["Sens (%)", "Spec (%)", "Dice (%)", "NSD (%)"]
LOWER_IS_BETTER = ["HD95 (mm)", "train s/epoch", "val s/epoch"]
SORTS = {
    "dice": "Dice",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "nsd": "NSD",
    "hd95": "HD95",
    "parameters_m": "Parameters",
    "train_seconds_per_epoch": "Train seconds per epoch",
    "id": "Run id",
}
BEST_STYLE = "font-weight: bold; background-color: rgba(44, 160, 44, 0.22)"

st.title("Leaderboard")
url = data.database_url()
sweeps = common.load(data.sweeps, url)
if sweeps.empty:
    st.info("The database holds no runs yet; the leaderboard fills as runs finish.")
    st.stop()

with st.expander("Filters", expanded=True, icon=":material/filter_list:"):
    f = st.columns(4)
    chosen = {
        "experiment": f[0].multiselect("Experiment", EXPERIMENTS, key="lb_experiment"),
        "architecture": f[1].multiselect("Architecture", list(ARCHITECTURES), key="lb_arch"),
        "family": f[2].multiselect("Encoder family", FAMILIES, key="lb_family"),
        "encoder": f[3].multiselect("Encoder", list(ENCODERS), key="lb_encoder"),
        "init": f[0].multiselect("Init", INITS, key="lb_init"),
        "sweep": f[1].multiselect("Sweep", sweeps["name"].tolist(), key="lb_sweep"),
        "status": f[2].multiselect("Status", RUN_STATUSES, key="lb_status"),
    }
    sort = f[3].selectbox("Sort by", list(SORTS), format_func=SORTS.get, key="lb_sort")
    paper_only = f[0].checkbox("Paper grid only", key="lb_paper_only")

board = common.load(data.leaderboard, url, data.filters_key(**chosen))
if not board.empty:
    board = marked(board)
    if paper_only:
        board = board[board["grid"] == "paper"]
if board.empty:
    st.info("No run matches these filters.")
    st.stop()

ascending = sort in ("hd95", "parameters_m", "train_seconds_per_epoch", "id")
board = board.sort_values([sort, "id"], ascending=[ascending, True], na_position="last")
common.synthetic_badge(board["synthetic"])
scored = board["dice"].notna()
st.caption(
    f"{len(board)} runs, {int(scored.sum())} with test results. Sens, Spec and Dice are the "
    "mean over test slices, in percent; NSD (percent, at the protocol's tolerance) and HD95 "
    "(mm) the mean over test volumes. The best value of each column is highlighted."
    + (f" {MARKER_NOTE}" if (board["grid"] != "paper").any() else "")
)


def styled(frame: pd.DataFrame):
    """Best per column in bold green: highest Sens/Spec/Dice/NSD, lowest HD95 and
    seconds per epoch.
    (One format call with a precision: per-column formats cost twice as much.)"""
    return (
        frame.style.format(precision=2, na_rep="–")
        .highlight_max(subset=HIGHER_IS_BETTER, props=BEST_STYLE)
        .highlight_min(subset=LOWER_IS_BETTER, props=BEST_STYLE)
    )


runs_tab, seeds_tab, paper_tab = st.tabs(["One row per run", "Over seeds", "Table 2 layout"])
with runs_tab:
    shown = board[list(COLUMNS)].rename(columns=COLUMNS)
    shown["best epoch"] = shown["best epoch"].astype("Int64")
    shown.insert(0, "page", [common.run_link(i) for i in shown["run"]])  # the Run page
    st.dataframe(
        styled(shown),
        hide_index=True,
        width="stretch",
        height=min(38 + 35 * len(shown), 640),
        column_config={
            "run": st.column_config.NumberColumn(format="%d"),
            "page": st.column_config.LinkColumn(display_text=":material/open_in_new:"),
        },
    )
    st.download_button(
        "Download CSV",
        board[list(COLUMNS)].to_csv(index=False).encode(),
        file_name="segbench-leaderboard.csv",
        mime="text/csv",
        icon=":material/download:",
        key="lb_csv",
    )
with seeds_tab:
    pooled = over_seeds(board, sweeps)
    if pooled.empty:
        st.info("No finished run among the filtered runs.")
    else:
        shown = pooled.assign(
            dice=[
                f"{m:.2f} ± {s:.2f}" if pd.notna(s) else f"{m:.2f}"
                for m, s in zip(pooled["dice_mean"], pooled["dice_std"], strict=True)
            ]
        )
        st.dataframe(
            shown[
                [
                    "experiment",
                    "architecture",
                    "encoder",
                    "init",
                    "dice",
                    "n",
                    "seeds",
                    "sweeps",
                    "runs",
                    "sensitivity_mean",
                    "specificity_mean",
                ]
            ].rename(
                columns={
                    "dice": "Dice (%) mean ± std",
                    "sensitivity_mean": "Sens (%)",
                    "specificity_mean": "Spec (%)",
                }
            ),  # fmt: skip
            hide_index=True,
            width="stretch",
            key="lb_seeds",
        )
        st.caption(
            "Runs of one grid cell that differ only by seed (same protocol otherwise, same "
            f"dataset), pooled: n runs, mean ± std over seeds (ddof={STD_DDOF}; no std for "
            "one seed). Queue more seeds for the best runs on the Statistics page."
        )
with paper_tab:
    finished = board[board["dice"].notna()]
    protocols = sweeps.set_index("name")["protocol_hash"]
    kinds = finished["sweep"].map(protocols).nunique() if not finished.empty else 0
    if finished.empty:
        st.info("No finished run among the filtered runs.")
    elif kinds > 1:
        st.info(
            "The filtered runs come from sweeps with different protocols; one table must not "
            "average them. Choose one sweep in the filters."
        )
    else:
        # the same table as `segbench export table`: rows architecture x encoder with
        # per-architecture mean and std, columns init x experiment x metric
        modes = finished["metric_mode"].dropna().unique()
        ddof = DEFAULT_DDOF.get(modes[0], 1) if len(modes) == 1 else 1
        wide = table2(finished, ddof=ddof)
        best = best_mask(wide)
        st.dataframe(
            wide.style.format("{:.2f}", na_rep="–").apply(
                lambda _: best.map(lambda b: BEST_STYLE if b else ""), axis=None
            ),
            width="stretch",
        )
        st.caption(
            "Bold: the best model of each metric column (mean over seeds where several). "
            + std_note(ddof)
        )

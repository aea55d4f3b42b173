"""Leaderboard: the paper's Table 2, live. Sensitivity, specificity and Dice per model,
with parameters and seconds per epoch; filters, sorting, best per column, CSV."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import common, data
from db.grid import ARCHITECTURES, ENCODERS, EXPERIMENTS, FAMILIES, INITS
from db.models import RUN_STATUSES
from worker.results.baselines import MARKER_NOTE, marked
from worker.results.tables import best_mask, table2

COLUMNS = {
    "id": "run",
    "sweep": "sweep",
    "experiment": "experiment",
    "grid": "grid",
    "architecture": "architecture",
    "encoder": "encoder",
    "family": "family",
    "init": "init",
    "status": "status",
    "sensitivity": "Sens (%)",
    "specificity": "Spec (%)",
    "dice": "Dice (%)",
    "dice_std": "Dice std",
    "parameters_m": "params (M)",
    "train_seconds_per_epoch": "train s/epoch",
    "val_seconds_per_epoch": "val s/epoch",
    "best_epoch": "best epoch",
    "synthetic": "synthetic",
}
HIGHER_IS_BETTER = ["Sens (%)", "Spec (%)", "Dice (%)"]
LOWER_IS_BETTER = ["train s/epoch", "val s/epoch"]
SORTS = {
    "dice": "Dice",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
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

ascending = sort in ("parameters_m", "train_seconds_per_epoch", "id")
board = board.sort_values([sort, "id"], ascending=[ascending, True], na_position="last")
common.synthetic_badge(board["synthetic"])
scored = board["dice"].notna()
st.caption(
    f"{len(board)} runs, {int(scored.sum())} with test results. Metrics are the mean over "
    "test slices, in percent; the best value of each column is highlighted."
    + (f" {MARKER_NOTE}" if (board["grid"] != "paper").any() else "")
)


def styled(frame: pd.DataFrame):
    """Best per column in bold green: highest Sens/Spec/Dice, lowest seconds per epoch.
    (One format call with a precision: per-column formats cost twice as much.)"""
    return (
        frame.style.format(precision=2, na_rep="–")
        .highlight_max(subset=HIGHER_IS_BETTER, props=BEST_STYLE)
        .highlight_min(subset=LOWER_IS_BETTER, props=BEST_STYLE)
    )


runs_tab, paper_tab = st.tabs(["One row per run", "Table 2 layout"])
with runs_tab:
    shown = board[list(COLUMNS)].rename(columns=COLUMNS)
    shown["best epoch"] = shown["best epoch"].astype("Int64")
    st.dataframe(
        styled(shown),
        hide_index=True,
        width="stretch",
        height=min(38 + 35 * len(shown), 640),
        column_config={"run": st.column_config.NumberColumn(format="%d")},
    )
    st.download_button(
        "Download CSV",
        board[list(COLUMNS)].to_csv(index=False).encode(),
        file_name="segbench-leaderboard.csv",
        mime="text/csv",
        icon=":material/download:",
        key="lb_csv",
    )
with paper_tab:
    finished = board[board["dice"].notna()]
    if finished.empty:
        st.info("No finished run among the filtered runs.")
    else:
        # the same table as `segbench export table`: rows architecture x encoder with
        # per-architecture mean and std, columns init x experiment x metric
        wide = table2(finished)
        best = best_mask(wide)
        st.dataframe(
            wide.style.format("{:.2f}", na_rep="–").apply(
                lambda _: best.map(lambda b: BEST_STYLE if b else ""), axis=None
            ),
            width="stretch",
        )
        st.caption("Bold: the best model of each metric column (mean over seeds where several).")

"""Leaderboard: the paper's Table 2, live. Every metric of the registry (db.metrics) per
run, right after the model's name, with its unit in the header and its meaning on
hover; filters, a text search, sorting, best per column, CSV; runs chosen side by
side; runs that differ only by seed pooled (mean ± std, n); the Table 2 layout."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import common, data
from db import metrics as registry
from db.grid import ARCHITECTURES, ENCODERS, EXPERIMENTS, FAMILIES, INITS
from db.models import RUN_STATUSES
from worker.results.baselines import MARKER_NOTE, marked
from worker.results.formats import MISSING
from worker.results.seeds import POOLED, STD_DDOF, over_seeds
from worker.results.styles import BEST_STYLE, metric_styler, table_height
from worker.results.tables import DEFAULT_DDOF, best_mask, header, std_note, table2

# shown after the metrics, in this order (the model's name and run id come first)
DETAILS = {
    "experiment": "experiment",
    "sweep": "sweep",
    "architecture": "architecture",
    "encoder": "encoder",
    "init": "init",
    "family": "family",
    "grid": "grid",
    "seed": "seed",
    "train_precision": "precision",
    "environment_key": "environment",
    "status": "status",
    "best_epoch": "best epoch",
    "synthetic": "synthetic",
}
SEARCHED = ("id", "model", "sweep", "experiment", "architecture", "encoder", "family",
            "init", "status", "grid")  # fmt: skip


def model_name(frame: pd.DataFrame) -> pd.Series:
    return frame["architecture"] + " · " + frame["encoder"] + " · " + frame["init"]


def filters(sweeps: pd.DataFrame) -> tuple[dict, str, bool, str]:
    """The filter panel: (grid filters, sort key, paper grid only, search text)."""
    search = st.text_input(
        "Search", key="lb_search", placeholder="Run id, model, encoder, sweep, experiment…",
        icon=":material/search:",
    )  # fmt: skip
    with st.expander("Filters", expanded=False, icon=":material/filter_list:"):
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
        sorts = {m.name: m.label for m in registry.all_metrics()} | {"id": "Run id"}
        sort = f[3].selectbox("Sort by", list(sorts), format_func=sorts.get, key="lb_sort")
        paper_only = f[0].checkbox("Paper grid only", key="lb_paper_only")
    return chosen, sort, paper_only, search


def searched(board: pd.DataFrame, text: str) -> pd.DataFrame:
    """Rows whose text columns hold every word typed (case-insensitive)."""
    words = text.lower().split()
    if not words:
        return board
    haystack = board[list(SEARCHED)].astype(str).agg(" ".join, axis=1).str.lower()
    keep = pd.Series(True, index=board.index)
    for word in words:
        keep &= haystack.str.contains(word, regex=False)
    return board[keep]


def sorted_board(board: pd.DataFrame, sort: str) -> pd.DataFrame:
    """Best first for a metric with a direction, smallest first otherwise (run id,
    parameters); runs without the value last."""
    ascending = sort == "id" or not registry.get(sort).higher_is_better
    return board.sort_values([sort, "id"], ascending=[ascending, True], na_position="last")


def caption(board: pd.DataFrame, sweeps: pd.DataFrame) -> None:
    scored = int(board["dice"].notna().sum())
    sizes = {(p or {}).get("image_size") for p in sweeps.set_index("name").loc[
        board["sweep"].unique(), "protocol"]}  # fmt: skip
    size = sizes.pop() if len(sizes) == 1 else None
    st.caption(
        f"{len(board)} runs, {scored} with test results. Metrics in the order of the "
        "registry; hover a column header for what it means. The best value of each column "
        f"is highlighted. {registry.resolution_note(size)}"
        + (f" {MARKER_NOTE}" if (board["grid"] != "paper").any() else "")
    )
    mixed = common.load(data.environment_note, data.database_url(), environment_keys(board))
    if mixed:
        st.warning(mixed, icon=":material/memory:")


def environment_keys(board: pd.DataFrame) -> tuple[str | None, ...]:
    if "environment_key" not in board:
        return ()
    return tuple(
        sorted({k if isinstance(k, str) else None for k in board["environment_key"]}, key=str)
    )


def metric_config() -> dict:
    return {
        m.header: st.column_config.NumberColumn(m.header, help=m.help)
        for m in registry.all_metrics()
    }


def runs_table(board: pd.DataFrame) -> list[int]:
    """One row per run: run, model, the metrics, then the rest. Returns the ids of the
    rows selected in the table."""
    shown = pd.DataFrame({"run": board["id"], "model": model_name(board)}, index=board.index)
    for m in registry.all_metrics():
        shown[m.header] = pd.to_numeric(board[m.name], errors="coerce")
    for key, name in DETAILS.items():
        shown[name] = board[key]
    shown["best epoch"] = shown["best epoch"].astype("Int64")
    shown.insert(0, "page", [common.run_link(i) for i in shown["run"]])  # the Run page
    event = common.table(
        metric_styler(shown, board),
        hide_index=True,
        width="stretch",
        height=table_height(len(shown)),
        column_config={
            "run": st.column_config.NumberColumn(format="%d"),
            "page": st.column_config.LinkColumn(display_text=":material/open_in_new:"),
            **metric_config(),
        },
        on_select="rerun",
        selection_mode="multi-row",
        key="lb_runs_table",
    )
    st.download_button(
        "Download CSV",
        shown.drop(columns="page").to_csv(index=False).encode(),
        file_name="segbench-leaderboard.csv",
        mime="text/csv",
        icon=":material/download:",
        key="lb_csv",
    )
    rows = getattr(getattr(event, "selection", None), "rows", None) or []
    return [int(shown["run"].iloc[r]) for r in rows]


def side_by_side(board: pd.DataFrame, selected: list[int]) -> None:
    """The runs selected in the table or chosen here, one column each, a row per metric,
    the best of each row highlighted."""
    labels = {int(i): f"#{i} {n}" for i, n in zip(board["id"], model_name(board), strict=True)}
    chosen = st.multiselect(
        "Compare runs side by side (or select rows in the table)",
        list(labels), format_func=labels.get, key="lb_compare", placeholder="Choose runs",
    )  # fmt: skip
    ids = list(dict.fromkeys([*selected, *chosen]))
    if len(ids) < 2:
        st.caption("Choose two or more runs to see them side by side.")
        return
    rows = board.set_index("id").loc[ids]
    table = pd.DataFrame(
        {f"#{i}": [rows.at[i, "experiment"], rows.at[i, "sweep"]] for i in ids},
        index=["experiment", "sweep"],
    )
    metrics = pd.DataFrame(
        {f"#{i}": [m.cell(rows.loc[i], MISSING) for m in registry.all_metrics()] for i in ids},
        index=[m.header for m in registry.all_metrics()],
    )
    best = pd.DataFrame("", index=metrics.index, columns=metrics.columns)
    for m in registry.all_metrics():
        values = pd.to_numeric(rows[m.name], errors="coerce")
        if m.higher_is_better is None or values.isna().all():
            continue
        top = values.max() if m.higher_is_better else values.min()
        for i in ids:
            if values[i] == top:
                best.at[m.header, f"#{i}"] = BEST_STYLE
    common.table(
        pd.concat([table, metrics]).style.apply(lambda _: pd.concat([
            pd.DataFrame("", index=table.index, columns=table.columns), best]), axis=None),
        width="stretch",
    )  # fmt: skip
    st.caption(
        "Models: " + "; ".join(labels[i] for i in ids) + ". `segbench compare A B` tests two "
        "runs of the same experiment, image size and protocol against each other."
    )


def seeds_tab(board: pd.DataFrame, sweeps: pd.DataFrame) -> None:
    pooled = over_seeds(board, sweeps)
    if pooled.empty:
        st.info("No finished run among the filtered runs.")
        return
    shown = pooled[["experiment", "architecture", "encoder", "init"]].copy()
    for name in POOLED:
        m = registry.get(name)
        shown[f"{m.header} mean ± std"] = [
            MISSING
            if pd.isna(mean)
            else f"{mean:.{m.decimals}f}" + ("" if pd.isna(std) else f" ± {std:.{m.decimals}f}")
            for mean, std in zip(pooled[f"{name}_mean"], pooled[f"{name}_std"], strict=True)
        ]
    for key in ("n", "seeds", "sweeps", "runs", "environment"):
        shown[key] = pooled[key]
    common.table(shown, hide_index=True, width="stretch", height=table_height(len(shown)),
                 key="lb_seeds")  # fmt: skip
    st.caption(
        "Runs of one grid cell that differ only by seed (same protocol otherwise, same "
        "dataset, same environment: device, threads, torch, math mode), pooled: n runs, "
        f"mean ± std over seeds (ddof={STD_DDOF}; no std for one seed). Queue more seeds "
        "for the best runs on the Statistics page."
    )


def table2_tab(board: pd.DataFrame, sweeps: pd.DataFrame) -> None:
    finished = board[board["dice"].notna()]
    protocols = sweeps.set_index("name")["protocol_hash"]
    if finished.empty:
        st.info("No finished run among the filtered runs.")
        return
    if finished["sweep"].map(protocols).nunique() > 1:
        st.info(
            "The filtered runs come from sweeps with different protocols; one table must not "
            "average them. Choose one sweep in the filters."
        )
        return
    # the same table as `segbench export table`: rows architecture x encoder with
    # per-architecture mean and std, columns init x experiment x metric
    modes = finished["metric_mode"].dropna().unique()
    ddof = DEFAULT_DDOF.get(modes[0], 1) if len(modes) == 1 else 1
    wide = table2(finished, ddof=ddof)
    bold = best_mask(wide)
    flat = wide.copy()
    flat.columns = [header(c) for c in wide.columns]
    bold.columns = flat.columns
    flat, bold = flat.reset_index(), bold.reset_index()
    bold[["architecture", "encoder"]] = False
    common.table(
        flat.style.format(precision=2, na_rep=MISSING).apply(
            lambda _: bold.map(lambda b: BEST_STYLE if b is True else ""), axis=None
        ),
        hide_index=True,
        width="stretch",
        height=table_height(len(flat), 900),
    )
    st.caption(
        "Bold: the best model of each metric column (mean over seeds where several). "
        + std_note(ddof)
    )


url, sweeps = common.results_page("Leaderboard", "the leaderboard fills as runs finish")

chosen, sort, paper_only, search = filters(sweeps)
board = common.load(data.leaderboard, url, data.filters_key(**chosen))
if not board.empty:
    board = marked(board)
    board["model"] = model_name(board)
    if paper_only:
        board = board[board["grid"] == "paper"]
    board = searched(board, search)
if board.empty:
    st.info("No run matches these filters." if not search else f"No run matches '{search}'.")
    st.stop()

board = sorted_board(board, sort)
common.synthetic_badge(board["synthetic"])
caption(board, sweeps)
runs_tab, seeds_tab_, paper_tab = st.tabs(["One row per run", "Over seeds", "Table 2 layout"])
with runs_tab:
    selected = runs_table(board)
    side_by_side(board, selected)
with seeds_tab_:
    seeds_tab(board, sweeps)
with paper_tab:
    table2_tab(board, sweeps)

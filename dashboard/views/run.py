"""Run: one run on one page, by its id (a deep link: ?run=17). Why it failed (the
traceback and the last lines its worker logged, stored with the run), its loss curves
and every epoch, its test results per volume, its predicted masks, the protocol it
trained with, library versions and device. Without an id: the runs, newest first."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import arrays, common, data, protocol_form, run_data
from db.protocol import Protocol
from worker.results import charts

MAX_LISTED = 500
CODE_HEIGHT, CODE_LINES = 320, 14  # px; longer tracebacks and logs scroll in their box
STATUS_COLOURS = {"succeeded": "green", "failed": "red", "cancelled": "gray", "running": "blue"}
RUN_COLUMN = st.column_config.LinkColumn("run", display_text=common.RUN_LINK_TEXT)


def requested_run() -> int | None:
    value = st.query_params.get("run")
    if value is None:
        return None
    if not str(value).isdigit():
        st.error(f"The run id in the address must be a whole number, got '{value}'.")
        return None
    return int(value)


def run_list_section(url: str) -> None:
    """Every run, the most recently active first, each linked to its page."""
    st.title("Runs")
    sweeps = common.load(data.sweeps, url)
    if sweeps.empty:
        st.info("The database holds no runs yet; launch a sweep on the Launch page.")
        return
    sweep = common.sweep_choice(sweeps, key="run_list_sweep")
    runs = common.load(run_data.run_list, url, sweep, (), MAX_LISTED)
    common.synthetic_badge(sweeps["synthetic"] if sweep is None else
                           sweeps.loc[sweeps["name"] == sweep, "synthetic"])  # fmt: skip
    st.selectbox(
        "Open a run", [None, *runs["id"].astype(int)], key="run_pick", on_change=open_picked,
        format_func=lambda i: "Choose a run" if i is None else _label(runs, i),
    )  # fmt: skip
    table = runs[["id", "sweep", "experiment", "architecture", "encoder", "init", "seed",
                  "status", "epoch", "epochs", "dice", "error"]].copy()  # fmt: skip
    table["id"] = [common.run_link(i) for i in runs["id"]]
    st.dataframe(
        table.rename(columns={"id": "run", "dice": "Dice (%)"}), hide_index=True,
        width="stretch", column_config={"run": RUN_COLUMN},
    )  # fmt: skip
    st.caption(f"The {MAX_LISTED} most recently active runs at most, running ones first.")


def open_picked() -> None:
    """Show the picked run: its id goes into the address, so the page can be shared."""
    picked = st.session_state.pop("run_pick", None)
    if picked is not None:
        st.query_params["run"] = str(picked)


def _label(runs: pd.DataFrame, run_id: int) -> str:
    row = runs[runs["id"] == run_id].iloc[0]
    return f"{common.run_label(row)} ({row['status']})"


def header_section(run: dict[str, Any]) -> None:
    st.title(f"Run #{run['id']}")
    status = run["status"]
    st.badge(status, color=STATUS_COLOURS.get(status, "orange"))
    st.markdown(
        f"**{run['experiment']}** · {run['architecture']} · {run['encoder']} · "
        f"{run['init']} · seed {run['seed']} · sweep **{run['sweep']}**"
    )
    common.synthetic_badge(bool(run["synthetic"]))
    test = run["test"] or {}
    m = st.columns(6)
    m[0].metric("epoch", f"{run['epoch']} / {run['epochs']}")
    m[1].metric("best epoch", run["best_epoch"] if run["best_epoch"] is not None else "–")
    for column, (key, name, unit) in zip(
        m[2:],
        [("dice", "Dice", "%"), ("sensitivity", "Sens", "%"), ("nsd", "NSD", "%"),
         ("hd95", "HD95", " mm")],
        strict=True,
    ):  # fmt: skip
        value = test.get(key)
        column.metric(f"test {name}", "–" if value is None else f"{value:.2f}{unit}")
    if run["note"]:
        st.info(run["note"], icon=":material/info:")


def code_height(text: str) -> int | None:
    """A long traceback or log scrolls inside a box of CODE_HEIGHT; a short one fits."""
    return CODE_HEIGHT if text.count("\n") > CODE_LINES else None


def failure_section(run: dict[str, Any]) -> None:
    if run["status"] != "failed":
        return
    st.subheader("Why it failed")
    st.error(run["error"] or "No reason was recorded.", icon=":material/error:")
    if run["traceback"]:
        st.markdown("**Traceback**")
        st.code(run["traceback"], language="python", height=code_height(run["traceback"]))
    if run["log_tail"]:
        lines = run["log_tail"].count("\n") + 1
        what = "line" if lines == 1 else f"{lines} lines"
        st.markdown(f"**The last {what} its worker logged while it ran**")
        st.code(run["log_tail"], language="log", height=code_height(run["log_tail"]),
                wrap_lines=True)  # fmt: skip
    if not (run["traceback"] or run["log_tail"]):
        st.caption(
            "No traceback was stored: the run failed outside its worker's training (for "
            "example, its workers died more often than the queue allows)."
        )


def curves_section(url: str, run: dict[str, Any]) -> None:
    st.subheader("Loss curves")
    epochs = common.load(run_data.run_epochs, url, int(run["id"]))
    if epochs.empty:
        st.info("No epoch has finished yet.")
        return
    curves = arrays.finite_losses(epochs)
    curves["label"] = f"#{run['id']}"
    st.altair_chart(charts.loss_curves(curves), width="stretch")
    if curves.attrs["non_finite"]:
        st.warning(f"{curves.attrs['non_finite']} loss values are NaN or infinite: not drawn.")
    with st.expander(f"Every epoch ({len(epochs)})"):
        table = epochs.drop(columns=["run_id"]).rename(
            columns={
                "train_loss": "train loss",
                "val_loss": "validation loss",
                "train_seconds": "train s",
                "val_seconds": "validation s",
                "is_best": "best so far",
            }  # fmt: skip
        )
        st.dataframe(table, hide_index=True, width="stretch")


def results_section(url: str, run: dict[str, Any]) -> None:
    st.subheader("Test results")
    test = run["test"]
    if not test:
        st.info("No test results: the run has not succeeded.")
        return
    st.caption(
        f"Mean over test slices ({test['metric_mode']} metrics): Sens "
        f"{test['sensitivity']:.2f}%, Spec {test['specificity']:.2f}%, Dice "
        f"{test['dice']:.2f} ± {test['dice_std']:.2f}%; Dice of the summed counts "
        f"{test['pooled_dice']:.2f}%."
    )
    volumes = common.load(run_data.run_volumes, url, int(run["id"]))
    if volumes.empty:
        st.caption("No per-volume results stored.")
        return
    protocol = Protocol.from_dict(run["protocol"])
    st.dataframe(
        volumes.drop(columns=["run_id"]).rename(
            columns={
                "dice": "3-D Dice (%)",
                "nsd": f"NSD (%) at {protocol.nsd_tolerance_mm:g} mm",
                "hd95": "HD95 (mm)",
            }  # fmt: skip
        ),
        hide_index=True,
        width="stretch",
    )
    st.caption(f"Per test volume; boundary mode {protocol.boundary_mode}.")


def gallery_section(url: str, run: dict[str, Any]) -> None:
    st.subheader("Predicted masks")
    masks = common.load(run_data.run_masks, url, int(run["id"]))
    if not masks:
        st.info("No predicted masks stored: they are saved when a run succeeds.")
        return
    palette = common.palette_choice()
    protocol = Protocol.from_dict(run["protocol"])
    read = [data.ground_truth_slice, run["data_dir"], run["experiment"], protocol.image_size]
    first = common.attempt(*read, min(masks), protocol.test_resize)  # one error at most
    columns = st.columns(4)
    for i, (index, mask) in enumerate(sorted(masks.items())):
        loaded = first and common.attempt(*read, index, protocol.test_resize)
        if not loaded or loaded[0].shape != mask.shape:
            rgb, caption = arrays.mask_image(mask), f"test slice #{index} (prediction only)"
        else:
            rgb = arrays.overlay(loaded[0], loaded[1], mask, palette=palette)
            caption = f"test slice #{index}"
        columns[i % 4].image(arrays.upscale(np.asarray(rgb)), caption=caption, width="stretch")
    if first is None:
        st.caption("Without the dataset folder only the predicted masks (white) can be drawn.")
    else:
        common.overlay_legend(palette)


def protocol_section(run: dict[str, Any]) -> None:
    st.subheader("Protocol, versions and device")
    protocol = Protocol.from_dict(run["protocol"])
    shared = protocol.shared_dict()
    left, right = st.columns(2)
    left.dataframe(
        pd.DataFrame(
            [
                {"setting": f.label, "value": str(shared[f.name])} for f in protocol_form.fields()
            ]  # fmt: skip
        ),
        hide_index=True,
        width="stretch",
    )
    left.caption(f"Protocol hash {run['protocol_hash']}; seed {run['seed']}.")
    facts = {
        "device": run["device"],
        "worker": run["worker"],
        "attempts": run["attempts"],
        "git commit": run["git_commit"],
        "dataset": f"{run['dataset_name']} ({run['manifest_hash'] or 'no manifest'})",
        "parameters (M)": None if run["parameters_m"] is None else f"{run['parameters_m']:.2f}",
        "created": run["created_at"],
        "started": run["started_at"],
        "finished": run["finished_at"],
        **{f"version: {k}": v for k, v in sorted((run["library_versions"] or {}).items())},
    }
    right.dataframe(
        pd.DataFrame(
            [{"what": k, "value": "–" if v is None else str(v)} for k, v in facts.items()]
        ),
        hide_index=True,
        width="stretch",
    )


def main() -> None:
    url = data.database_url()
    run_id = requested_run()
    if run_id is None:
        run_list_section(url)
        return
    run = common.load(run_data.run_detail, url, run_id)
    st.button("All runs", icon=":material/arrow_back:", on_click=st.query_params.clear)
    header_section(run)
    failure_section(run)
    curves_section(url, run)
    results_section(url, run)
    gallery_section(url, run)
    protocol_section(run)


main()

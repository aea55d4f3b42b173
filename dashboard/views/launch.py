"""Launch: choose a part of the grid, a dataset and a protocol; see what it costs (runs,
epochs, disk, an estimate of the time) with every seed counted; enqueue it, or, only
through its confirmation, the full 600-model benchmark; cancel or retry runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import streamlit as st

from dashboard import auth, common, data, protocol_form
from db import queries
from db.catalog import SMP_ARCHITECTURES, SMP_ENCODERS
from db.errors import InvalidInput
from db.grid import ARCHITECTURES, ENCODERS, EXPERIMENTS, FAMILIES, INITS, custom_specs, expand
from db.presets import PRESET_DESCRIPTIONS, PRESET_NAMES, check_seeds, protocol_line, resolve
from db.protocol import Protocol
from db.settings import get_settings

FULL_BENCHMARK = len(expand())  # the paper's 600 models
NOTICE = "launch_notice"  # what the last action said (set in its callback)
GB = 1e9


def parse_seeds(text: str) -> list[int]:
    """'0, 1, 2' -> [0, 1, 2] (InvalidInput for anything else)."""
    parts = [p for p in text.replace(",", " ").split() if p]
    if not parts or not all(p.isdigit() for p in parts):
        raise InvalidInput(f"Seeds must be whole numbers from 0 separated by commas, got '{text}'.")
    return check_seeds(int(p) for p in parts)


@dataclass
class Selection:
    specs: list  # one per grid cell (or per experiment of a user's model)
    what: str  # "grid cells" or "model runs"
    chosen: bool  # anything chosen at all
    full: bool  # the selection is the whole paper grid


def selection_section() -> Selection:
    st.subheader("What to train")
    st.caption(
        "Choose at least one of the filters; an empty filter beside a chosen one means all "
        "of it. Encoders and families add up."
    )
    beyond = st.toggle(
        "Beyond the paper: every architecture and encoder of segmentation-models-pytorch",
        key="launch_beyond",
        help="The paper's 4 architectures and 25 encoders stay the default grid; pairs smp "
        "cannot build are refused with a sentence when you enqueue.",
    )
    left, right = st.columns(2)
    experiments = left.multiselect("Experiments", EXPERIMENTS, key="launch_experiments")
    architectures = right.multiselect(
        "Architectures", list(SMP_ARCHITECTURES if beyond else ARCHITECTURES),
        key="launch_architectures",
    )  # fmt: skip
    families = left.multiselect("Encoder families", FAMILIES, key="launch_families")
    encoders = right.multiselect(
        "Encoders", list(SMP_ENCODERS if beyond else ENCODERS), key="launch_encoders"
    )
    inits = left.multiselect("Weight init", INITS, key="launch_inits")
    own_model = right.text_input(
        "Your own model",
        key="launch_model",
        placeholder="module:function or a segbench.models entry point",
        help="Trains your model instead of grid cells, one run per chosen experiment "
        "(docs/models.md). The module must import here and on the workers.",
    ).strip()
    filters = [architectures, encoders, families, inits]
    if own_model:
        if any(filters):
            st.error(
                "Your own model takes experiments only: clear the architecture, encoder, "
                "family and init choices, or the model field."
            )
            return Selection([], "model runs", True, False)
        specs = common.attempt(custom_specs, own_model, experiments or None) or []
        return Selection(specs, "model runs", True, False)
    if not any([experiments, *filters]):
        return Selection([], "grid cells", False, False)
    specs = common.attempt(expand, experiments, architectures, encoders, families, inits) or []
    return Selection(specs, "grid cells", True, set(specs) == set(expand()))


def dataset_section(can_act: bool) -> tuple[str, dict[str, Any] | None]:
    data_dir = st.text_input(
        "Dataset folder", get_settings().data_dir, key="launch_data_dir"
    ).strip()
    if not data_dir:
        st.error(
            "Name the dataset folder (made by `segbench data fetch` or `segbench data synth`)."
        )
        return data_dir, None
    # Reading a folder says whether it exists: with a password set, only after it is given.
    dataset = common.attempt(data.dataset_info, data_dir) if can_act else None
    if dataset is not None:
        size = f", slices of {dataset['image_size']} px" if dataset["image_size"] else ""
        st.caption(f"Dataset: **{dataset['name']}** ({dataset['kind']}{size}).")
        common.synthetic_badge(dataset["synthetic"])
    return data_dir, dataset


def protocol_section(dataset: dict[str, Any] | None) -> Protocol | None:
    st.subheader("Protocol")
    preset = st.radio(
        "Preset",
        PRESET_NAMES,
        horizontal=True,
        key="launch_preset",
        help=" ".join(f"**{name}**: {text}." for name, text in PRESET_DESCRIPTIONS.items())
        + " The settings below start from the preset; changing one overrides it.",
    )
    native = dataset["image_size"] if dataset else None
    values = protocol_form.protocol_inputs(preset, native_size=native)
    protocol = common.attempt(resolve, preset, **values)
    if protocol is not None:
        st.caption(f"Protocol {protocol.hash()}: {protocol_line(protocol)}.")
    return protocol


def cost(cells: Sequence[tuple[str, str]], protocol: Protocol, workers) -> dict[str, Any]:
    """Disk and time of runs of these (architecture, encoder) cells, one entry per run."""
    slots = int(workers["concurrency"].sum()) if not workers.empty else 0
    disk = common.attempt(data.disk_needed, tuple(cells), max(1, slots)) if cells else None
    measured = common.load(data.measured_epoch_seconds, data.database_url())
    time = queries.time_estimate(
        measured, list(cells), image_size=protocol.image_size,
        batch_size=protocol.batch_size, epochs=protocol.epochs, slots=slots,
    )  # fmt: skip
    return {"disk": disk, "time": time, "slots": slots}


def time_sentence(time: dict[str, Any], protocol: Protocol, live_slots: int) -> str:
    size = f"{protocol.image_size} px, batch {protocol.batch_size}"
    if time["seconds"] is None:
        return f"Time: no estimate yet: no epoch at {size} has been measured in this database."
    at_once = min(time["slots"], time["own"] + time["borrowed"])
    how = f"{at_once} run(s) at once" + ("" if live_slots else " (no worker is alive now)")
    text = (
        f"Time (estimate): about {common.duration(time['seconds'])} with {how}, from "
        f"{time['measured_epochs']:,} measured epochs of {time['measured_runs']} run(s) at "
        f"{size} in this database (on {', '.join(time['devices'])})"
    )
    if time["borrowed"]:
        text += (
            f"; {time['borrowed']} of the runs have no measured epoch of their own model "
            "and take the mean of the measured ones"
        )
    return text + ". Other hardware, image sizes or load change it."


def figures_section(selection: Selection, seeds: list[int], protocol: Protocol | None, workers):
    """Runs, epochs, disk and time of the selection, every seed counted."""
    n_seeds = len(seeds)
    runs = len(selection.specs) * n_seeds
    epochs = runs * protocol.epochs if protocol else 0
    m = st.columns(4)
    m[0].metric("Runs in this selection", runs)
    m[1].metric("Epochs of training", f"{epochs:,}")
    st.caption(
        f"{len(selection.specs)} {selection.what} × {n_seeds} seed(s) × "
        f"{protocol.epochs if protocol else '–'} epochs = {epochs:,} epochs of training."
    )
    if not runs or protocol is None:
        return
    cells = [(s.architecture, s.encoder) for s in selection.specs for _ in seeds]
    found = cost(cells, protocol, workers)
    disk, time = found["disk"], found["time"]
    if disk is not None and disk["unknown"] == runs:  # users' models have no size table
        m[2].metric("Disk (estimate)", "–")
        st.caption(
            f"Disk: no estimate: the models of these runs have no size table "
            f"(worker/training/sizes.py); {disk['free'] / GB:.1f} GB free in the artifacts folder."
        )
    elif disk is not None:
        m[2].metric("Disk (estimate)", f"{disk['peak'] / GB:.1f} GB")
        note = (
            f"Disk (estimate): {disk['finished'] / GB:.1f} GB of best models once the "
            f"{runs} runs have finished, {disk['peak'] / GB:.1f} GB at most while "
            f"{max(1, found['slots'])} run(s) train; {disk['free'] / GB:.1f} GB free in the "
            "artifacts folder."
        )
        if disk["unknown"]:
            note += f" {disk['unknown']} run(s) of models without a size table are not counted."
        (st.warning if disk["free"] < disk["peak"] else st.caption)(note)
    m[3].metric(
        "Time (estimate)", "–" if time["seconds"] is None else common.duration(time["seconds"])
    )
    st.caption(time_sentence(time, protocol, found["slots"]))


def workers_note(workers) -> None:
    if workers.empty:
        st.warning(
            "No worker is alive: the runs will wait until a worker starts: `segbench worker`.",
            icon=":material/hourglass_empty:",
        )
    else:
        st.caption(
            f"{len(workers)} live worker(s), {int(workers['concurrency'].sum())} run(s) at "
            "once; see them on the Live page."
        )


def weights_notice(chosen, key: str) -> tuple[bool, bool]:
    """Say which ImageNet encoders of `chosen` are cached where the workers look;
    returns (may enqueue, queue missing weights anyway)."""
    found = common.attempt(data.weights_for, tuple(chosen)) if chosen else None
    sentence = found.sentence() if found else None
    if sentence is None:
        return True, False
    st.caption(sentence + ".")
    if found.refused is None:
        return True, False
    st.error(found.refused, icon=":material/cloud_off:")
    anyway = st.checkbox(
        "Queue them anyway: the workers have a weights cache of their own",
        key=f"{key}_allow_missing_weights",
    )
    return anyway, anyway


def enqueue(url: str, sweep: str, chosen: list, **submit) -> None:
    """The Enqueue buttons' callback: runs before the page draws, so the counts below
    already hold the new runs."""
    ids, error = common.capture(data.enqueue, url, specs=chosen, sweep=sweep, **submit)
    if not error:
        st.session_state["manage_sweep"] = sweep  # its counts below
    st.session_state[NOTICE] = ("error", error) if error else (
        "success",
        f"Sweep '{sweep}' holds these {len(ids)} runs (runs it already had are left as they "
        "were); follow them on the Live page.",
    )  # fmt: skip


def full_benchmark_section(url: str, seeds: list[int], protocol, dataset, submit, can_act):
    with st.expander(f"The full benchmark: all {FULL_BENCHMARK} models of the paper"):
        runs = FULL_BENCHMARK * len(seeds)
        epochs = runs * protocol.epochs if protocol else 0
        st.write(
            f"4 architectures × 25 encoders × 2 inits × 3 experiments × {len(seeds)} seed(s) "
            f"= **{runs:,} runs**, with the protocol above: **{epochs:,} epochs** of training."
        )
        if protocol is not None and seeds:
            cells = [(s.architecture, s.encoder) for s in expand() for _ in seeds]
            live = common.load(data.live_workers, url)
            found = cost(cells, protocol, live)
            st.caption(time_sentence(found["time"], protocol, found["slots"]))
        full_sweep = st.text_input("Sweep name", "paper-benchmark", key="launch_full_sweep").strip()
        confirmed = st.checkbox(
            f"Yes, enqueue all {runs:,} runs in sweep '{full_sweep}'.", key="launch_full_confirm"
        )
        weights_ok, allow_missing = weights_notice(expand(), "launch_full")
        ready = all([confirmed, protocol, seeds, dataset, full_sweep, can_act, weights_ok])
        st.button(
            f"Enqueue the {FULL_BENCHMARK}-model benchmark ({runs:,} runs)",
            disabled=not ready,
            key="launch_full_enqueue",
            on_click=enqueue,
            args=(url, full_sweep, expand()),
            kwargs={**submit, "allow_missing_weights": allow_missing},
        )


def manage(action: str, url: str, **which) -> None:
    """The cancel and retry buttons' callback (before the page draws its counts)."""
    if action == "cancel":
        done, error = common.capture(data.cancel, url, **which)
        text = None if error else (
            f"Cancelled {len(done.cancelled)} queued run(s); asked "
            f"{len(done.requested)} running run(s) to stop after their epoch."
        )  # fmt: skip
    else:
        done, error = common.capture(data.retry, url, **which)
        text = None if error else (
            f"Queued {len(done.runs)} run(s) again (only failed or cancelled runs are retried)."
        )  # fmt: skip
    st.session_state["manage_notice"] = ("error", error) if error else ("success", text)


def manage_section(url: str, can_act: bool) -> None:
    st.subheader("Cancel or retry")
    sweeps = common.load(data.sweeps, url)
    if sweeps.empty:
        st.info("No sweep yet: nothing to cancel or retry.")
        return
    chosen = common.sweep_choice(sweeps, key="manage_sweep", allow_all=False)
    row = sweeps[sweeps["name"] == chosen].iloc[0]
    common.notice("manage_notice")
    st.caption(
        " · ".join(
            f"{s}: {int(row[s])}" for s in ("queued", "running", "succeeded", "failed", "cancelled")
        )
    )
    common.synthetic_badge(bool(row["synthetic"]))
    b1, b2 = st.columns(2)
    b1.button(
        "Cancel the sweep's queued and running runs", disabled=not can_act,
        key="manage_cancel_sweep", on_click=manage, args=("cancel", url), kwargs={"sweep": chosen},
    )  # fmt: skip
    b2.button(
        "Retry the sweep's failed and cancelled runs", disabled=not can_act,
        key="manage_retry_sweep", on_click=manage, args=("retry", url), kwargs={"sweep": chosen},
    )  # fmt: skip
    runs = common.load(data.leaderboard, url, data.filters_key(sweep=[chosen]))
    labels = {int(r["id"]): f"{common.run_label(r)} ({r['status']})" for _, r in runs.iterrows()}
    picked = st.multiselect(
        "Runs", list(labels), format_func=labels.get, key="manage_runs",
        placeholder="Choose runs of this sweep",
    )  # fmt: skip
    r1, r2 = st.columns(2)
    r1.button(
        "Cancel these runs", disabled=not (picked and can_act), key="manage_cancel_runs",
        on_click=manage, args=("cancel", url), kwargs={"run_ids": picked},
    )  # fmt: skip
    r2.button(
        "Retry these runs", disabled=not (picked and can_act), key="manage_retry_runs",
        on_click=manage, args=("retry", url), kwargs={"run_ids": picked},
    )  # fmt: skip


def main() -> None:
    st.title("Launch")
    url = data.database_url()
    can_act = auth.authorised()
    if not can_act:
        auth.locked_note()
    selection = selection_section()
    st.subheader("Data, seeds and sweep")
    c1, c2, c3 = st.columns([3, 1, 2])
    with c1:
        data_dir, dataset = dataset_section(can_act)
    seeds_text = c2.text_input(
        "Seeds", "0", key="launch_seeds", help="One run per grid cell and seed, e.g. 0, 1, 2."
    )
    sweep = c3.text_input(
        "Sweep name", f"sweep-{datetime.now(UTC):%Y%m%d-%H%M}", key="launch_sweep"
    ).strip()
    with c2:
        seeds = common.attempt(parse_seeds, seeds_text) or []
    protocol = protocol_section(dataset)

    st.subheader("What it costs")
    workers = common.load(data.live_workers, url)
    figures_section(selection, seeds, protocol, workers)
    workers_note(workers)
    weights_ok, allow_missing = weights_notice(selection.specs, "launch")
    if not selection.chosen:
        st.info(
            "Nothing chosen yet. The full 600-model benchmark is below, behind its confirmation.",
            icon=":material/checklist:",
        )
    elif selection.full:
        st.warning(
            f"This selection is the whole {FULL_BENCHMARK}-model grid: enqueue it below, "
            "with its confirmation.",
            icon=":material/warning:",
        )
    submit = {"protocol": protocol, "data_dir": data_dir, "seeds": seeds}
    ready = all([selection.specs, not selection.full, protocol, seeds, dataset, sweep, can_act,
                 weights_ok])  # fmt: skip
    runs = len(selection.specs) * len(seeds)
    st.button(
        f"Enqueue {runs:,} runs" if runs else "Enqueue",
        type="primary",
        disabled=not ready,
        key="launch_enqueue",
        on_click=enqueue,
        args=(url, sweep, selection.specs),
        kwargs={**submit, "allow_missing_weights": allow_missing},
    )
    common.notice(NOTICE)
    full_benchmark_section(url, seeds, protocol, dataset, submit, can_act)
    st.divider()
    manage_section(url, can_act)


main()

"""Launch: choose a part of the grid and a protocol, see how many runs it makes, enqueue
it (or, with a confirmation, the full 600-model benchmark); cancel or retry runs."""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from dashboard import auth, common, data
from db.catalog import SMP_ARCHITECTURES, SMP_ENCODERS
from db.errors import InvalidInput
from db.grid import ARCHITECTURES, ENCODERS, EXPERIMENTS, FAMILIES, INITS, custom_specs, expand
from db.presets import PRESET_NAMES, PRESETS, check_seeds, protocol_line, resolve
from db.protocol import AUGMENT_MODES, LOSSES, METRIC_MODES, PRECISIONS, TEST_RESIZES
from db.settings import get_settings

FULL_BENCHMARK = 600
IMAGE_SIZES = [64, 128, 256, 512]


def parse_seeds(text: str) -> list[int]:
    """'0, 1, 2' -> [0, 1, 2] (InvalidInput for anything else)."""
    parts = [p for p in text.replace(",", " ").split() if p]
    if not parts or not all(p.isdigit() for p in parts):
        raise InvalidInput(f"Seeds must be whole numbers from 0 separated by commas, got '{text}'.")
    return check_seeds(int(p) for p in parts)


st.title("Launch")
url = data.database_url()
can_act = auth.authorised()
if not can_act:
    auth.locked_note()

st.subheader("What to train")
st.caption("An empty choice means all of them. Encoders and families add up.")
beyond = st.toggle(
    "Beyond the paper: every architecture and encoder of segmentation-models-pytorch",
    key="launch_beyond",
    help="The paper's 4 architectures and 25 encoders stay the default grid; pairs smp "
    "cannot build are refused with a sentence when you enqueue.",
)
architecture_names = list(SMP_ARCHITECTURES if beyond else ARCHITECTURES)
encoder_names = list(SMP_ENCODERS if beyond else ENCODERS)
left, right = st.columns(2)
experiments = left.multiselect("Experiments", EXPERIMENTS, key="launch_experiments")
architectures = right.multiselect("Architectures", architecture_names, key="launch_architectures")
families = left.multiselect("Encoder families", FAMILIES, key="launch_families")
encoders = right.multiselect("Encoders", encoder_names, key="launch_encoders")
inits = left.multiselect("Weight init", INITS, key="launch_inits")
own_model = right.text_input(
    "Your own model",
    key="launch_model",
    placeholder="module:function or a segbench.models entry point",
    help="Trains your model instead of grid cells, one run per chosen experiment "
    "(docs/models.md). The module must import here and on the workers.",
).strip()

st.subheader("Protocol")
preset = st.radio(
    "Preset",
    PRESET_NAMES,
    horizontal=True,
    key="launch_preset",
    help="paper: the paper's text; authors-2020: everything as the authors' 2020 code did "
    "it. The settings below start from the preset; changing one overrides it.",
)
base = PRESETS[preset]
c1, c2, c3, c4 = st.columns(4)
epochs = c1.number_input(
    "Epochs", 1, 1000, base["epochs"], key=f"launch_epochs_{preset}", help="Paper: 200."
)
image_size = c2.selectbox(
    "Image size", IMAGE_SIZES, index=IMAGE_SIZES.index(base["image_size"]), key="launch_image_size"
)
loss = c3.selectbox(
    "Loss",
    LOSSES,
    index=LOSSES.index(base["loss"]),
    key=f"launch_loss_{preset}",
    help="soft-dice: the paper's text; authors-2020-dice: the code that trained its models.",
)
batch_size = c4.number_input("Batch size", 1, 64, 2, key="launch_batch_size", help="Paper: 2.")
c1, c2, c3, c4 = st.columns(4)
metric_mode = c1.selectbox(
    "Metrics",
    METRIC_MODES,
    index=METRIC_MODES.index(base["metric_mode"]),
    key=f"launch_metric_mode_{preset}",
)
augment_mode = c2.selectbox(
    "Augmentation",
    AUGMENT_MODES,
    index=AUGMENT_MODES.index(base["augment_mode"]),
    key=f"launch_augment_mode_{preset}",
)
precision = c3.selectbox(
    "Training precision",
    PRECISIONS,
    index=PRECISIONS.index(base["train_precision"]),
    key=f"launch_precision_{preset}",
    help="fp32: the paper's. bf16 speeds up GPU training and can move Dice by points; "
    "validation and test always run in fp32.",
)
test_resize = c4.selectbox(
    "Test resize",
    TEST_RESIZES,
    index=TEST_RESIZES.index(base["test_resize"]),
    key=f"launch_test_resize_{preset}",
    help="pil-antialias: the test slices resized as the authors' PIL code did.",
)
c1, c2 = st.columns([2, 2])
data_dir = c1.text_input("Dataset folder", get_settings().data_dir, key="launch_data_dir")
seeds_text = c2.text_input(
    "Seeds", "0", key="launch_seeds", help="One run per grid cell and seed, e.g. 0, 1, 2."
)
seeds = common.attempt(parse_seeds, seeds_text)
default_sweep = f"sweep-{datetime.now(UTC):%Y%m%d-%H%M}"
sweep = st.text_input("Sweep name", default_sweep, key="launch_sweep").strip()


def own_model_specs(model: str) -> list:
    if architectures or encoders or families or inits:
        raise InvalidInput(
            "Your own model takes experiments only: clear the architecture, encoder, family "
            "and init choices, or the model field."
        )
    return custom_specs(model, experiments or None)


if own_model:
    specs = common.attempt(own_model_specs, own_model) or []
else:
    specs = common.attempt(expand, experiments, architectures, encoders, families, inits) or []
protocol = common.attempt(
    resolve,
    preset,
    epochs=int(epochs),
    image_size=int(image_size),
    batch_size=int(batch_size),
    loss=loss,
    metric_mode=metric_mode,
    augment_mode=augment_mode,
    train_precision=precision,
    test_resize=test_resize,
)
if protocol is not None:
    st.caption(f"Protocol {protocol.hash()}: {protocol_line(protocol)}.")
# Reading a folder says whether it exists: with a password set, only after it is given.
dataset = (
    common.attempt(data.dataset_info, data_dir.strip()) if data_dir.strip() and can_act else None
)
if not data_dir.strip():
    st.error("Name the dataset folder (made by `segbench data fetch` or `segbench data synth`).")
if dataset is not None:
    st.caption(f"Dataset: **{dataset['name']}** ({dataset['kind']}).")
    common.synthetic_badge(dataset["synthetic"])

m1, m2 = st.columns([1, 3])
n_seeds = len(seeds or [])
m1.metric("Runs in this selection", len(specs) * n_seeds)
cells = "model runs" if own_model else "grid cells"
m2.caption(
    f"{len(specs)} {cells} × {n_seeds} seed(s) × {int(epochs)} epochs = "
    f"{len(specs) * n_seeds * int(epochs):,} epochs of training."
)

workers_now = common.load(data.live_workers, url)
at_once = max(1, int(workers_now["concurrency"].sum())) if not workers_now.empty else 1
if specs:
    disk = common.attempt(
        data.disk_needed, tuple((s.architecture, s.encoder) for s in specs), at_once
    )
    if disk is not None:
        gb = 1e9
        note = (
            f"Disk (estimate): {disk['finished'] / gb:.1f} GB of best models once finished, "
            f"{disk['peak'] / gb:.1f} GB at most while {at_once} run(s) train; "
            f"{disk['free'] / gb:.1f} GB free in the artifacts folder."
        )
        if disk["unknown"]:
            note += f" {disk['unknown']} run(s) of models without a size table are not counted."
        if disk["free"] < disk["peak"]:
            st.warning(note, icon=":material/hard_drive:")
        else:
            st.caption(note)
if workers_now.empty:
    st.warning(
        "No worker is alive: the runs will wait until a worker starts: `segbench worker`.",
        icon=":material/hourglass_empty:",
    )
else:
    st.caption(
        f"{len(workers_now)} live worker(s), {int(workers_now['concurrency'].sum())} run(s) "
        "at once; see them on the Live page."
    )


def weights_notice(chosen, key: str) -> tuple[bool, bool]:
    """Say which ImageNet encoders of `chosen` are cached where the workers look;
    returns (may enqueue, queue missing weights anyway)."""
    found = common.attempt(data.weights_for, tuple(chosen)) if chosen else None
    if not found or not (found["cached"] or found["missing"]):
        return True, False
    parts = []
    if found["cached"]:
        parts.append(f"cached: {', '.join(found['cached'])}")
    if found["missing"]:
        how = "the workers download them on first use" if found["downloads"] else "no download"
        parts.append(f"not cached: {', '.join(found['missing'])} ({how})")
    st.caption(f"ImageNet weights in `{found['cache']}`: " + "; ".join(parts) + ".")
    if found["refused"] is None:
        return True, False
    st.error(found["refused"], icon=":material/cloud_off:")
    anyway = st.checkbox(
        "Queue them anyway: the workers have a weights cache of their own",
        key=f"{key}_allow_missing_weights",
    )
    return anyway, anyway


weights_ok, allow_missing = weights_notice(specs, "launch")
ready = (
    bool(specs)
    and protocol is not None
    and bool(seeds)
    and dataset is not None
    and bool(sweep)
    and can_act
    and weights_ok
)


def do_enqueue(chosen, sweep_name: str, allow_missing_weights: bool = False) -> None:
    ids = common.attempt(
        data.enqueue,
        url,
        specs=chosen,
        protocol=protocol,
        sweep=sweep_name,
        data_dir=data_dir.strip(),
        allow_missing_weights=allow_missing_weights,
        seeds=seeds,
    )
    if ids is not None:
        st.success(
            f"Sweep '{sweep_name}' holds these {len(ids)} runs (runs it already had are left "
            "as they were); follow them on the Live page.",
            icon=":material/check_circle:",
        )


if st.button(
    f"Enqueue {len(specs) * n_seeds} runs", type="primary", disabled=not ready, key="launch_enqueue"
):
    do_enqueue(specs, sweep, allow_missing)

with st.expander("The full benchmark: all 600 models of the paper"):
    st.write(
        "4 architectures × 25 encoders × 2 inits × 3 experiments, with the protocol above, "
        f"{FULL_BENCHMARK * int(epochs):,} epochs of training in all."
    )
    full_sweep = st.text_input("Sweep name", "paper-benchmark", key="launch_full_sweep").strip()
    confirmed = st.checkbox(
        f"Yes, enqueue all {FULL_BENCHMARK} runs in sweep '{full_sweep}'.",
        key="launch_full_confirm",
    )
    full_weights_ok, full_allow_missing = weights_notice(expand(), "launch_full")
    full_ready = (
        confirmed
        and protocol is not None
        and bool(seeds)
        and dataset is not None
        and bool(full_sweep)
    )
    if st.button(
        f"Enqueue the {FULL_BENCHMARK}-model benchmark",
        disabled=not (full_ready and can_act and full_weights_ok),
        key="launch_full_enqueue",
    ):
        do_enqueue(expand(), full_sweep, full_allow_missing)

st.divider()
st.subheader("Cancel or retry")
sweeps = common.load(data.sweeps, url)
if sweeps.empty:
    st.info("No sweep yet: nothing to cancel or retry.")
    st.stop()
chosen_sweep = common.sweep_choice(sweeps, key="manage_sweep", allow_all=False)
row = sweeps[sweeps["name"] == chosen_sweep].iloc[0]
st.caption(
    " · ".join(f"{s}: {int(row[s])}" for s in ("queued", "running", "succeeded", "failed"))
    + f" · cancelled: {int(row['cancelled'])}"
)
common.synthetic_badge(bool(row["synthetic"]))
b1, b2 = st.columns(2)
if b1.button(
    "Cancel the sweep's queued and running runs", disabled=not can_act, key="manage_cancel_sweep"
):
    result = common.attempt(data.cancel, url, sweep=chosen_sweep)
    if result is not None:
        st.success(
            f"Cancelled {len(result['cancelled'])} queued runs; asked "
            f"{len(result['requested'])} running runs to stop after their epoch."
        )
if b2.button(
    "Retry the sweep's failed and cancelled runs", disabled=not can_act, key="manage_retry_sweep"
):
    ids = common.attempt(data.retry, url, sweep=chosen_sweep)
    if ids is not None:
        st.success(f"Queued {len(ids)} runs again.")

runs = common.load(data.leaderboard, url, data.filters_key(sweep=[chosen_sweep]))
labels = {int(r["id"]): f"{common.run_label(r)} ({r['status']})" for _, r in runs.iterrows()}
picked = st.multiselect(
    "Runs",
    list(labels),
    format_func=labels.get,
    key="manage_runs",
    placeholder="Choose runs of this sweep",
)
r1, r2 = st.columns(2)
if r1.button("Cancel these runs", disabled=not (picked and can_act), key="manage_cancel_runs"):
    result = common.attempt(data.cancel, url, run_ids=picked)
    if result is not None:
        st.success(
            f"Cancelled {len(result['cancelled'])}; asked {len(result['requested'])} to stop."
        )
if r2.button("Retry these runs", disabled=not (picked and can_act), key="manage_retry_runs"):
    ids = common.attempt(data.retry, url, run_ids=picked)
    if ids is not None:
        st.success(f"Queued {len(ids)} runs again (only failed or cancelled runs are retried).")

"""Live: counts by status, the runs done and the one time left, the running runs with
progress and their loss curves (finished runs' too), the live workers, failed runs
with their reasons and links to their pages. The body refreshes itself every few
seconds (st.fragment)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import arrays, common, data, run_data
from db.models import RUN_STATUSES
from db.settings import get_settings
from worker.results import charts

REFRESH_S = 5
MAX_DEFAULT_CURVES = 6
CURVES_KEY = "live_curve_runs"
TOUCHED_KEY = "live_curves_touched"
RECENT_RUNS = 200  # runs of the sweep offered for loss curves, most recent first
MAX_FAILURE_LINKS = 5
RUN_COLUMN = st.column_config.LinkColumn("run", display_text=common.RUN_LINK_TEXT)

st.title("Live")
url = data.database_url()
sweeps = common.load(data.sweeps, url)


@st.fragment(run_every=REFRESH_S)
def wait_for_runs() -> None:
    """An empty database: look again every few seconds, show the page once runs exist."""
    if not common.load(data.sweeps, url).empty:
        st.rerun()
    st.info("The database holds no runs yet; launch a sweep on the Launch page.")
    st.page_link("views/launch.py", label="Launch a sweep", icon=":material/rocket_launch:")
    workers_table(common.load(data.live_workers, url))


def progress_section(progress: dict) -> None:
    """Counts by status, how many runs are done and the one time left (sweep_eta)."""
    counts = progress["counts"]
    columns = st.columns(len(RUN_STATUSES) + 1)
    columns[0].metric("total", sum(counts.values()))
    for column, status in zip(columns[1:], RUN_STATUSES, strict=True):
        column.metric(status, counts.get(status, 0))
    done, total = progress["done"], progress["total"]
    if total:
        cancelled = progress["cancelled"]
        text = f"{done} of {total} runs done (succeeded or failed)"
        if cancelled:
            text += f"; {cancelled} cancelled run(s) not counted"
        st.progress(done / total, text=text)
    eta_caption(progress)


LATE_HEARTBEAT_FACTOR = 2  # heartbeats missed before the Live page says so


def run_note(
    lease_expired: bool, cancelling: bool, heartbeat_age: float | None, note: str | None = None
) -> str:
    """What the Live page says of a running run whose worker may be gone: a late
    heartbeat shows before the lease expires and the run is requeued."""
    late = heartbeat_age is not None and heartbeat_age > LATE_HEARTBEAT_FACTOR * heartbeat_s()
    parts = []
    if lease_expired:
        parts.append("lease expired: being requeued")
    elif late:
        parts.append(f"no heartbeat for {heartbeat_age:.0f} s")
    if cancelling:
        parts.append("cancelling")
    return "; ".join(parts) or (note if isinstance(note, str) else "")


def heartbeat_s() -> float:
    s = get_settings()
    return min(s.heartbeat_seconds, s.lease_seconds / 3)


def running_table(running: pd.DataFrame) -> None:
    table = pd.DataFrame(
        {
            "run": [common.run_link(i) for i in running["id"]],
            "model": [common.run_label(r).split(" ", 1)[1] for _, r in running.iterrows()],
            "sweep": running["sweep"],
            "progress": running["epoch"] / running["epochs"].clip(lower=1),
            "epoch": [
                f"{e} / {n}" for e, n in zip(running["epoch"], running["epochs"], strict=True)
            ],
            "s / epoch": running["seconds_per_epoch"].astype(float),  # None: not measured yet
            "worker": running["worker"],
            "attempt": running["attempts"],
            "note": [
                run_note(expired, cancel, age, note)
                for expired, cancel, age, note in zip(
                    running["lease_expired"],
                    running["cancel_requested"],
                    running["heartbeat_age_seconds"],
                    running["note"] if "note" in running else [None] * len(running),
                    strict=True,
                )
            ],
        }
    )
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "run": RUN_COLUMN,
            "progress": st.column_config.ProgressColumn(
                "progress", format="percent", min_value=0.0, max_value=1.0
            ),
            "s / epoch": st.column_config.NumberColumn(format="%.1f"),
        },
    )


def workers_table(workers: pd.DataFrame) -> None:
    """The live workers: where they run, on what, and which runs they train now."""
    st.subheader(f"Workers ({len(workers)})")
    if workers.empty:
        st.warning(
            "No worker is alive: queued runs wait until a worker starts: `segbench worker`.",
            icon=":material/hourglass_empty:",
        )
        return
    gpu = [
        f"{name} ({memory / 1024:.0f} GiB)" if name and memory else (name or "")
        for name, memory in zip(workers["gpu_name"], workers["gpu_memory_mb"], strict=True)
    ]
    table = pd.DataFrame(
        {
            "worker": workers["name"],
            "host": workers["host"],
            "pid": workers["pid"],
            "device": workers["device"],
            "GPU": gpu,
            "slots": workers["concurrency"],
            "up for": [common.duration(s) for s in _ages(workers["started_at"])],
            "last beat": [f"{common.duration(s)} ago" for s in workers["heartbeat_age_s"]],
            "training": [
                ", ".join(f"#{i}" for i in runs) or "idle" for runs in workers["current_runs"]
            ],
        }
    )
    st.dataframe(table, hide_index=True, width="stretch")


def _ages(times: pd.Series) -> list[float | None]:
    now = pd.Timestamp.now(tz="UTC")
    return [None if pd.isna(t) else (now - pd.Timestamp(t)).total_seconds() for t in times]


def eta_caption(eta: dict) -> None:
    """The one time left of the page: the sweep's (or every sweep's)."""
    if not eta["remaining_epochs"]:
        return
    if eta["eta_seconds"] is None:
        why = (
            "no worker is alive"
            if not eta["workers"]
            else "no epoch has finished yet to measure its time"
        )
        st.caption(f"{eta['remaining_epochs']:,} epochs left; time left unknown: {why}.")
        return
    per_epoch = eta["seconds_per_epoch"]
    st.caption(
        f"Time left (estimate): about **{common.duration(eta['eta_seconds'])}**: "
        f"{eta['remaining_epochs']:,} epochs of the queued and running runs at "
        f"{per_epoch:.{2 if per_epoch < 10 else 1}f} s each (the mean of the measured epochs of "
        f"{'this sweep' if sweep else 'every sweep'}) on {eta['workers']} live worker(s), "
        f"{eta['slots']} run(s) at once."
    )


if sweeps.empty:
    wait_for_runs()
    st.stop()

sweep = common.sweep_choice(sweeps, key="live_sweep")
shown = sweeps if sweep is None else sweeps[sweeps["name"] == sweep]
common.synthetic_badge(shown["synthetic"])


def curve_choice(running: pd.DataFrame) -> list[int]:
    """Which runs to plot: the running ones until the user picks, any run of the sweep
    that recorded an epoch (finished ones too); the choice survives refreshes."""
    recent = common.load(run_data.run_list, url, sweep, (), RECENT_RUNS)
    recent = recent[recent["epoch"] > 0] if not recent.empty else recent
    labels = {int(r["id"]): f"{common.run_label(r)} ({r['status']})" for _, r in recent.iterrows()}
    labels.update({int(r["id"]): common.run_label(r) for _, r in running.iterrows()})
    chosen = [i for i in st.session_state.get(CURVES_KEY, []) if isinstance(i, int)]
    labels.update({i: st.session_state.get("live_labels", {}).get(i, f"#{i}") for i in chosen})
    st.session_state["live_labels"] = labels
    options = list(dict.fromkeys([*labels, *chosen]))
    if not st.session_state.get(TOUCHED_KEY):
        # Until the user picks runs, follow the runs that are training now (or, when
        # none is, the ones that trained last).
        follow = running["id"] if not running.empty else recent["id"]
        st.session_state[CURVES_KEY] = [int(i) for i in follow][:MAX_DEFAULT_CURVES]

    def touched() -> None:
        st.session_state[TOUCHED_KEY] = True

    return st.multiselect(
        "Loss curves of",
        options,
        key=CURVES_KEY,
        format_func=lambda i: labels.get(i, f"#{i}"),
        placeholder="Choose runs (running or finished)",
        on_change=touched,
    )


def loss_curves(run_ids: list[int]) -> None:
    curves = common.load(data.epoch_curves, url, tuple(sorted(run_ids)))
    if curves.empty:
        st.info("No epoch has finished yet for the chosen runs.")
        return
    curves = arrays.finite_losses(curves)
    labels = st.session_state.get("live_labels", {})
    curves["label"] = [labels.get(int(i), f"#{i}") for i in curves["run_id"]]
    st.altair_chart(charts.loss_curves(curves), width="stretch")
    if curves.attrs["non_finite"]:
        st.warning(
            f"{curves.attrs['non_finite']} loss values are NaN or infinite and are not drawn; "
            "the training of those runs diverged."
        )


def failed_section() -> None:
    failed = common.load(data.failed_runs, url, sweep)
    st.subheader(f"Failed ({len(failed)})")
    if failed.empty:
        st.caption("No run has failed.")
        return
    table = pd.DataFrame(
        {
            "run": [common.run_link(i) for i in failed["id"]],
            "model": [common.run_label(r).split(" ", 1)[1] for _, r in failed.iterrows()],
            "attempts": failed["attempts"],
            "reason": failed["error"].fillna("(no reason recorded)"),
            "finished": failed["finished_at"],
        }
    )
    st.dataframe(table, hide_index=True, width="stretch", column_config={"run": RUN_COLUMN})
    st.caption("Each run's page has its traceback and the last lines its worker logged:")
    for _, row in failed.head(MAX_FAILURE_LINKS).iterrows():
        st.page_link(
            "views/run.py",
            label=f"#{row['id']}: {str(row['error'] or 'no reason recorded')[:120]}",
            query_params={"run": str(row["id"])},
            icon=":material/bug_report:",
        )


@st.fragment(run_every=REFRESH_S)
def live_body() -> None:
    progress_section(common.load(data.sweep_eta, url, sweep))

    st.subheader("Running")
    running = common.load(data.running_runs, url, sweep)
    waiting = common.load(data.queue_counts, url, sweep).get("queued", 0)
    if running.empty:
        st.info(
            f"No run is training right now; {waiting} queued run(s) wait for a worker "
            "(`segbench worker`)."
            if waiting
            else "No run is training right now."
        )
    else:
        running_table(running)
    chosen = curve_choice(running)
    if chosen:
        loss_curves(chosen)

    workers_table(common.load(data.live_workers, url))
    failed_section()
    st.caption(f"Refreshes every {REFRESH_S} s. A run's own page: click its number.")


live_body()

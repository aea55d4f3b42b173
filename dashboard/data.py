"""Everything the dashboard reads or changes, as cached calls into db.queries / db.jobs.

Pages never build SQL. Reads are cached for a few seconds (TTL) so a page that
re-renders every few seconds, or many people looking at once, costs one query per
TTL; writes clear the cache so the next render shows their effect.

Writes go through worker.queue.service, the functions the `segbench` command calls.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import nibabel as nib
import numpy as np
import pandas as pd
import streamlit as st

from dashboard.arrays import intensity_histogram
from db import queries
from db.grid import RunSpec
from db.metrics import BOOTSTRAP_RESAMPLES, INTERVAL_METHOD
from db.protocol import Protocol
from db.session import redact, session_scope
from db.settings import get_settings
from worker.data.dataset import dataset_info as read_dataset_info
from worker.data.dataset import load_dataset
from worker.data.errors import DataError
from worker.data.layout import read_layout
from worker.queue import doctor, service
from worker.results import environments
from worker.results.frames import results_frame
from worker.results.ranking import rank_frequencies
from worker.results.report import build_report

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

TTL_S = 5  # seconds a read stays cached
DATASET_TTL_S = 600  # arrays read from a dataset folder change rarely
MAX_CURVE_POINTS = 200  # loss curves are downsampled in SQL to about this many epochs
FILTER_KEYS = ("experiment", "architecture", "family", "encoder", "init", "sweep", "status")

Filters = tuple[tuple[str, tuple[str, ...]], ...]  # hashable form of {key: values}


def database_url() -> str:
    return get_settings().database_url


def shown_url(url: str) -> str:
    return redact(url)


def filters_key(**filters: Iterable[str] | None) -> Filters:
    """{key: values} as a hashable, order-independent cache key (empty values dropped)."""
    return tuple(
        (k, tuple(sorted(v))) for k, v in sorted(filters.items()) if k in FILTER_KEYS and v
    )


def _frame(rows: list[dict[str, Any]], columns: Sequence[str] = ()) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    if frame.empty and columns:
        frame = pd.DataFrame(columns=list(columns))
    return frame


# -------------------------------------------------------------------- reads


@st.cache_data(ttl=TTL_S, show_spinner=False)
def sweeps(url: str) -> pd.DataFrame:
    with session_scope(url) as session:
        return _frame(queries.sweeps(session), ("id", "name", "synthetic", "runs", "data_dir"))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def leaderboard(url: str, filters: Filters = ()) -> pd.DataFrame:
    with session_scope(url) as session:
        rows = queries.leaderboard(session, **{k: list(v) for k, v in filters})
    return _frame(rows, list(queries.LEADERBOARD_KEYS))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def environment_note(url: str, keys: tuple[str | None, ...]) -> str | None:
    """The sentence saying that runs of several environments are shown (else None)."""
    if len({k or "" for k in keys}) < 2:
        return None
    with session_scope(url) as session:
        return environments.note(keys, queries.environments(session, keys))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def queue_counts(url: str, sweep: str | None = None) -> dict[str, int]:
    with session_scope(url) as session:
        return queries.queue_counts(session, sweep=sweep)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def running_runs(url: str, sweep: str | None = None) -> pd.DataFrame:
    with session_scope(url) as session:
        rows = queries.running_runs(session, sweep=sweep)
    return _frame(rows, ("id", "sweep", "experiment", "architecture", "encoder", "init"))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def failed_runs(url: str, sweep: str | None = None, limit: int = 200) -> pd.DataFrame:
    with session_scope(url) as session:
        rows = queries.failed_runs(session, sweep=sweep, limit=limit)
    return _frame(rows, ("id", "sweep", "experiment", "architecture", "encoder", "init", "error"))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def epoch_curves(
    url: str, run_ids: tuple[int, ...], max_points: int = MAX_CURVE_POINTS
) -> pd.DataFrame:
    if not run_ids:
        return _frame([], ("run_id", "epoch", "train_loss", "val_loss"))
    with session_scope(url) as session:
        rows = queries.epoch_curves(session, run_ids=run_ids, max_points=max_points)
    return _frame(rows, ("run_id", "epoch", "train_loss", "val_loss"))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def loss_bands(
    url: str, filters: Filters = (), by: str = "architecture", max_points: int = MAX_CURVE_POINTS
) -> pd.DataFrame:
    with session_scope(url) as session:
        rows = queries.loss_bands(
            session, by=by, max_points=max_points, **{k: list(v) for k, v in filters}
        )
    return _frame(rows, (by, "epoch", "n", "train_mean", "train_std", "val_mean", "val_std"))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def aggregates(url: str, by: str, filters: Filters = (), metric: str = "dice") -> pd.DataFrame:
    with session_scope(url) as session:
        rows = queries.aggregates(session, by=by, metric=metric, **{k: list(v) for k, v in filters})
    return _frame(rows, (by, "n", "mean", "std", "min", "max"))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def gallery_indexes(url: str, sweep: str, experiment: str) -> list[int]:
    with session_scope(url) as session:
        return queries.gallery_slice_indexes(session, sweep=sweep, experiment=experiment)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def gallery_masks(url: str, run_ids: tuple[int, ...], index: int) -> dict[int, np.ndarray]:
    """Predicted masks (H, W) uint8 of the runs on test slice `index`."""
    with session_scope(url) as session:
        stored = queries.stored_gallery_masks(session, run_ids=run_ids, index=index)
    return {run_id: unpack_mask(data, shape) for run_id, (data, shape) in stored.items()}


@st.cache_data(ttl=TTL_S, show_spinner=False)
def filter_runs(url: str) -> pd.DataFrame:
    with session_scope(url) as session:
        rows = queries.runs_with_first_layer(session)
    return _frame(rows, ("id", "sweep", "experiment", "architecture", "encoder", "init"))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def first_layer(url: str, run_id: int) -> dict[str, np.ndarray]:
    """{"first_layer_before"|"first_layer_after": float32 array of its stored shape}."""
    with session_scope(url) as session:
        rows = queries.run_artifacts(
            session, run_id=run_id, kinds=("first_layer_before", "first_layer_after")
        )
    out = {}
    for row in rows:
        if row["data"] is None:
            continue
        weights = np.frombuffer(row["data"], dtype=np.float32)
        shape = tuple(row["shape"] or (weights.size,))
        if int(np.prod(shape)) == weights.size:
            out[row["kind"]] = weights.reshape(shape)
    return out


def unpack_mask(data: bytes, shape: Sequence[int]) -> np.ndarray:
    """A mask stored as packed bits back to a (H, W) uint8 array of 0/1."""
    h, w = int(shape[0]), int(shape[1])
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: h * w].reshape(h, w)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def live_workers(url: str) -> pd.DataFrame:
    """The workers whose heartbeat is recent (db.queries.live_workers)."""
    with session_scope(url) as session:
        rows = queries.live_workers(session)
    return _frame(rows, queries.WORKER_COLUMNS)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def sweep_eta(url: str, sweep: str | None = None) -> dict[str, Any]:
    with session_scope(url) as session:
        return queries.sweep_eta(session, sweep=sweep)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def measured_epoch_seconds(url: str) -> list[dict[str, Any]]:
    """Measured seconds per epoch by grid cell, image size, batch size and device."""
    with session_scope(url) as session:
        return queries.measured_epoch_seconds(session)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def weights_for(specs: tuple[RunSpec, ...]) -> service.WeightsCheck:
    """Which ImageNet encoders of `specs` are in the workers' weights cache; `refused`
    holds the sentence submitting would answer when downloads are forbidden."""
    return service.check_weights(specs)


REPORT_TTL_S = 60  # a sweep's statistics: bootstrap resamples cost seconds, not ms


@st.cache_data(ttl=REPORT_TTL_S, show_spinner="Bootstrapping the test set…", max_entries=8)
def report(
    url: str,
    sweep: str,
    metric_mode: str | None = None,
    top: int = 10,
    resamples: int = BOOTSTRAP_RESAMPLES,
    interval: str = INTERVAL_METHOD,
) -> dict[str, Any]:
    """`segbench report` of one sweep, plus "rank_shares": how often each run took
    each rank over the resamples (rows run id, rank, share) for the blob plot."""
    with session_scope(url) as session:
        out = build_report(
            session, sweep, metric_mode=metric_mode, top=top, n_resamples=resamples,
            with_replicates=True, interval=interval,
        )  # fmt: skip
    replicates = out.pop("rank_replicates")
    ids = list(replicates)
    shares = []
    if ids:
        stacked = np.stack([replicates[i] for i in ids], axis=1)
        for row in rank_frequencies(stacked):
            shares.append({**row, "run": ids[row["run"]]})
    out["rank_shares"] = shares
    return out


@st.cache_data(ttl=REPORT_TTL_S, show_spinner=False)
def both_modes(url: str, sweep: str) -> pd.DataFrame:
    """Each succeeded run of `sweep` with Dice, sensitivity and specificity in both
    metric modes, recomputed from its stored per-slice counts."""
    frames = []
    with session_scope(url) as session:
        for mode in ("standard", "authors-2020"):
            df = results_frame(session, metric_mode=mode, sweep=sweep)
            keep = df[["id", "experiment", "architecture", "encoder", "init", "dice",
                       "sensitivity", "specificity"]]  # fmt: skip
            frames.append(keep)
    keys = ["id", "experiment", "architecture", "encoder", "init"]
    return frames[0].merge(frames[1], on=keys, suffixes=(" standard", " authors-2020"))


# -------------------------------------------------------------------- dataset folder


@st.cache_data(ttl=TTL_S, show_spinner=False)
def disk_needed(cells: tuple[tuple[str, str], ...], concurrent: int) -> dict[str, int]:
    """Disk estimate for runs of these (architecture, encoder) cells and free space in
    the artifacts folder (the server's setting, not a user-given path)."""
    artifacts = Path(get_settings().artifacts_dir).resolve()
    return doctor.disk_for(list(cells), concurrent, artifacts)


@st.cache_data(ttl=DATASET_TTL_S, show_spinner=False)
def dataset_info(data_dir: str) -> dict[str, Any]:
    """{"name", "kind", "synthetic", "manifest_hash", "image_size"}: image_size is the
    in-plane size of its training slices (None when it cannot be read)."""
    return {**read_dataset_info(data_dir), "image_size": slice_size(data_dir)}


def slice_size(data_dir: str) -> int | None:
    """The in-plane size of a dataset's training slices, from the header of its first
    training volume (no voxel is read)."""
    layout = read_layout(data_dir)
    train = [e for e in layout.entries if e.split == "train"] or layout.entries
    if not train:
        return None
    try:
        return int(nib.load(layout.root / train[0].image).shape[0])
    except (OSError, ValueError, IndexError, nib.filebasedimages.ImageFileError):
        return None


@st.cache_data(ttl=DATASET_TTL_S, show_spinner="Reading the test slice…", max_entries=8)
def ground_truth_slice(
    data_dir: str, experiment: str, image_size: int, index: int, test_resize: str = "standard"
) -> tuple[np.ndarray, np.ndarray]:
    """The normalised test image and ground-truth mask at test index `index`, resized
    as the sweep's protocol resized its test slices."""
    test = load_dataset(data_dir, experiment, image_size, test_resize=test_resize).test
    if not 0 <= index < len(test):
        raise DataError(
            f"{data_dir}: test index {index} is outside its {len(test)} test slices; "
            "was the sweep run on another dataset?"
        )
    return test.images[index].copy(), test.masks[index].copy()


@st.cache_data(ttl=DATASET_TTL_S, show_spinner="Reading the dataset…", max_entries=4)
def intensity_histograms(data_dir: str, experiment: str, image_size: int) -> pd.DataFrame:
    ds = load_dataset(data_dir, experiment, image_size)
    return intensity_histogram({"train": ds.train, "test": ds.test})


# -------------------------------------------------------------------- writes


def clear_cache() -> None:
    st.cache_data.clear()


def changes_the_queue(call: Callable[P, R]) -> Callable[P, R]:
    """A write through worker.queue.service: the cached reads are cleared afterwards,
    whether it succeeded or not, so the page that called it shows the new counts."""

    @functools.wraps(call)
    def write(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return call(*args, **kwargs)
        finally:
            clear_cache()

    return write


@changes_the_queue
def enqueue(
    url: str,
    *,
    specs: Sequence[RunSpec],
    protocol: Protocol,
    sweep: str,
    data_dir: str,
    allow_missing_weights: bool = False,
    seeds: Sequence[int] | None = None,
) -> list[int]:
    """Put runs in the queue as `segbench submit` does (rows in the database, then the
    ids of the queued ones to the broker), each spec once per seed. Returns the ids of
    the selected runs, new or already there."""
    result = service.submit_runs(
        list(specs),
        protocol,
        data=Path(data_dir),
        sweep=sweep,
        db_url=url,
        allow_missing_weights=allow_missing_weights,
        seeds=seeds,
    )
    return list(result.runs)


@changes_the_queue
def cancel(
    url: str, *, run_ids: Sequence[int] | None = None, sweep: str | None = None
) -> service.CancelResult:
    """`segbench cancel`: queued runs at once, running ones after their epoch."""
    return service.cancel(url, run_ids=run_ids, sweep=sweep)


@changes_the_queue
def add_seeds(url: str, *, run_ids: Sequence[int], seeds: Sequence[int]) -> service.SeedsAdded:
    """The grid cells of `run_ids` queued again with each of `seeds` (service.add_seeds)."""
    return service.add_seeds(url, list(run_ids), list(seeds))


@changes_the_queue
def retry(
    url: str, *, run_ids: Sequence[int] | None = None, sweep: str | None = None
) -> service.Retried:
    """`segbench retry`: failed and cancelled runs queued again and sent to the broker."""
    return service.retry(url, run_ids=run_ids, sweep=sweep)

"""Everything the dashboard reads or changes, as cached calls into db.queries / db.jobs.

Pages never build SQL. Reads are cached for a few seconds (TTL) so a page that
re-renders every few seconds, or many people looking at once, costs one query per
TTL; writes clear the cache so the next render shows their effect.

Writes go through the same functions as the `segbench` command: db.jobs for the
state changes, worker.cli_queue / worker.tasks for the broker.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from db import jobs, queries
from db.session import redact, session_scope
from db.settings import get_settings
from worker.grid import RunSpec
from worker.protocol import Protocol

log = logging.getLogger(__name__)

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
    return _frame(rows, list(queries.LEADERBOARD_COLUMNS))


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


# -------------------------------------------------------------------- dataset folder


@st.cache_data(ttl=DATASET_TTL_S, show_spinner=False)
def dataset_info(data_dir: str) -> dict[str, Any]:
    from worker.data import dataset_info as info

    return info(data_dir)


@st.cache_data(ttl=DATASET_TTL_S, show_spinner="Reading the test slice…", max_entries=8)
def ground_truth_slice(
    data_dir: str, experiment: str, image_size: int, index: int
) -> tuple[np.ndarray, np.ndarray]:
    """The normalised test image and ground-truth mask at test index `index`."""
    from worker.data import DataError, load_dataset

    test = load_dataset(data_dir, experiment, image_size).test
    if not 0 <= index < len(test):
        raise DataError(
            f"{data_dir}: test index {index} is outside its {len(test)} test slices; "
            "was the sweep run on another dataset?"
        )
    return test.images[index].copy(), test.masks[index].copy()


@st.cache_data(ttl=DATASET_TTL_S, show_spinner="Reading the dataset…", max_entries=4)
def intensity_histograms(data_dir: str, experiment: str, image_size: int) -> pd.DataFrame:
    from dashboard.arrays import intensity_histogram
    from worker.data import load_dataset

    ds = load_dataset(data_dir, experiment, image_size)
    return intensity_histogram({"train": ds.train, "test": ds.test})


# -------------------------------------------------------------------- writes


def clear_cache() -> None:
    st.cache_data.clear()


class QueueError(RuntimeError):
    """The broker is not configured, does not answer, or did not take the run ids."""


def _connect_broker(url: str) -> None:
    """What `segbench submit` does before it touches the database: choose the broker
    for this database (the embedded one beside a SQLite file) and check it answers."""
    from worker import tasks

    try:
        tasks.configure(url)
        tasks.check_broker()
    except tasks.BrokerError as error:
        raise QueueError(str(error)) from None


def enqueue(
    url: str, *, specs: Sequence[RunSpec], protocol: Protocol, sweep: str, data_dir: str
) -> list[int]:
    """Put runs in the queue through the function `segbench submit` uses (rows in the
    database, then the ids of the queued ones to the broker). Returns the ids of the
    selected runs, new or already there."""
    from worker import cli_queue, tasks

    _connect_broker(url)
    try:
        result = cli_queue.submit_runs(
            list(specs), protocol, data=Path(data_dir), sweep=sweep, db_url=url
        )
    except tasks.BrokerError as error:
        raise QueueError(str(error)) from None
    finally:
        clear_cache()
    return list(result["runs"])


def cancel(
    url: str, *, run_ids: Sequence[int] | None = None, sweep: str | None = None
) -> dict[str, list[int]]:
    """`segbench cancel`: queued runs at once, running ones after their epoch."""
    with session_scope(url) as session:
        result = jobs.cancel(session, run_ids=run_ids, sweep=sweep)
    clear_cache()
    return result


def retry(url: str, *, run_ids: Sequence[int] | None = None, sweep: str | None = None) -> list[int]:
    """`segbench retry`: failed and cancelled runs queued again and sent to the broker."""
    from worker import tasks

    _connect_broker(url)
    with session_scope(url) as session:
        ids = jobs.retry(session, run_ids=run_ids, sweep=sweep)
    clear_cache()
    if ids:
        try:
            tasks.publish(ids, database_url=url)
        except Exception as error:
            log.warning("publishing %s failed: %s", ids, error)
            raise QueueError(
                "The runs are queued again in the database, but sending their ids to the "
                "broker failed; a worker's reaper will send them once the broker answers."
            ) from None
    return ids

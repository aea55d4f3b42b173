"""The reads of the Run page and the run lists, as cached calls into db.queries (the
rest of the dashboard's reads are in dashboard.data)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard.data import TTL_S, _frame, unpack_mask
from db import queries
from db.session import session_scope


@st.cache_data(ttl=TTL_S, show_spinner=False)
def run_detail(url: str, run_id: int) -> dict[str, Any]:
    """Everything stored about one run (its row, sweep, protocol and test summary);
    UnknownRun (one sentence) when there is no such run."""
    with session_scope(url) as session:
        return queries.run_detail(session, run_id=run_id)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def run_epochs(url: str, run_id: int) -> pd.DataFrame:
    """Every recorded epoch of a run: losses, seconds, and which was the best."""
    with session_scope(url) as session:
        rows = queries.epoch_curves(session, run_ids=[run_id])
    return _frame(rows, [c.key for c in queries.EPOCH_COLUMNS])


@st.cache_data(ttl=TTL_S, show_spinner=False)
def run_volumes(url: str, run_id: int) -> pd.DataFrame:
    """Per-test-volume 3-D Dice, NSD and HD95 of a run."""
    with session_scope(url) as session:
        rows = queries.volume_rows(session, run_ids=[run_id])
    return _frame(rows, queries.VOLUME_COLUMNS)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def run_masks(url: str, run_id: int) -> dict[int, Any]:
    """{test index: predicted mask (H, W) uint8} of the run's stored gallery slices."""
    with session_scope(url) as session:
        rows = queries.run_artifacts(session, run_id=run_id, kinds=("gallery_mask",))
    return {
        int(r["key"]): unpack_mask(r["data"], r["shape"])
        for r in rows
        if r["data"] is not None and r["shape"] and str(r["key"]).isdigit()
    }


@st.cache_data(ttl=TTL_S, show_spinner=False)
def run_list(
    url: str, sweep: str | None = None, status: tuple[str, ...] = (), limit: int | None = 500
) -> pd.DataFrame:
    """Runs, the most recently active first (db.queries.run_list)."""
    with session_scope(url) as session:
        rows = queries.run_list(session, sweep=sweep, status=list(status) or None, limit=limit)
    return _frame(rows, queries.RUN_LIST_KEYS)

"""Runs that differ only by seed, pooled: the leaderboard's mean ± std over seeds.

Two runs are seeds of one another when they share the grid cell (experiment,
architecture, encoder, init), the dataset, real vs generated data, every protocol
setting except the seed, and the environment they trained in (environment_key: device,
threads, torch, math mode; worker.results.environments). Pure pandas.
"""

from __future__ import annotations

import json

import pandas as pd

from worker.results.environments import UNRECORDED, key_of

CELL = ["experiment", "architecture", "encoder", "init"]
POOLED = ("dice", "sensitivity", "specificity")
STD_DDOF = 1  # sample std over seeds; NaN for a single seed


def protocol_without_seed(protocol: dict) -> str:
    """A protocol as a stable key that ignores its seed."""
    return json.dumps({k: v for k, v in (protocol or {}).items() if k != "seed"}, sort_keys=True)


def over_seeds(board: pd.DataFrame, sweeps: pd.DataFrame) -> pd.DataFrame:
    """One row per grid cell and protocol (seed aside) of the succeeded runs in
    ``board`` (rows of db.queries.leaderboard), with n, mean and std (ddof=1) of Dice,
    sensitivity and specificity over its seeds, the seeds and the run ids.

    ``sweeps``: rows of db.queries.sweeps (name, protocol, dataset_name, synthetic).
    """
    columns = [*CELL, "environment", "sweeps", "n", "seeds", "runs"]
    columns += [f"{m}_{s}" for m in POOLED for s in ("mean", "std")]
    done = board[board["dice"].notna()] if "dice" in board else board.iloc[0:0]
    if done.empty:
        return pd.DataFrame(columns=columns)
    protocols = {
        row["name"]: protocol_without_seed(row["protocol"])
        + f"|{row['dataset_name']}|{bool(row['synthetic'])}"
        for _, row in sweeps.iterrows()
    }
    seeds = {row["name"]: (row["protocol"] or {}).get("seed") for _, row in sweeps.iterrows()}
    frame = done.copy()
    frame["protocol_key"] = frame["sweep"].map(protocols)
    # never across environments (worker.results.environments)
    if "environment_key" in frame:
        frame["environment"] = [key_of(k) for k in frame["environment_key"]]
    else:
        frame["environment"] = UNRECORDED
    if "seed" not in frame:
        frame["seed"] = frame["sweep"].map(seeds)
    grouped = frame.groupby([*CELL, "protocol_key", "environment"], sort=False)
    out = grouped.agg(
        sweeps=("sweep", lambda s: ", ".join(sorted(set(s)))),
        n=("id", "size"),
        seeds=("seed", lambda s: ", ".join(str(int(v)) for v in sorted(s.dropna()))),
        runs=("id", lambda s: ", ".join(str(int(v)) for v in sorted(s))),
        **{f"{m}_mean": (m, "mean") for m in POOLED},
        **{f"{m}_std": (m, lambda s: s.std(ddof=STD_DDOF)) for m in POOLED},
    ).reset_index()
    return out[columns].sort_values("dice_mean", ascending=False, ignore_index=True)

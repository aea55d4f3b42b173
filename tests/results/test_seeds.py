"""worker.results.seeds: runs that differ only by seed pooled, checked by hand with
numpy (std ddof=1)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from worker.results.seeds import over_seeds

P = {"epochs": 2, "image_size": 64, "loss": "soft-dice"}


def test_seeds_pool_only_runs_that_differ_by_seed():
    sweeps = pd.DataFrame(
        [
            {"name": "s", "protocol": {**P, "seed": 0}, "dataset_name": "d", "synthetic": True},
            {"name": "s-seed1", "protocol": {**P, "seed": 1}, "dataset_name": "d",
             "synthetic": True},
            {"name": "long", "protocol": {**P, "epochs": 9, "seed": 2}, "dataset_name": "d",
             "synthetic": True},
        ]
    )  # fmt: skip
    cell = {"experiment": "lung-segmentation", "architecture": "unet", "encoder": "vgg11",
            "init": "random", "sensitivity": 90.0, "specificity": 99.0}  # fmt: skip
    board = pd.DataFrame(
        [
            {**cell, "id": 1, "sweep": "s", "seed": 0, "dice": 80.0},
            {**cell, "id": 2, "sweep": "s-seed1", "seed": 1, "dice": 84.0},
            {**cell, "id": 3, "sweep": "long", "seed": 2, "dice": 95.0},  # another protocol
            {**cell, "id": 4, "sweep": "s", "seed": 0, "dice": None},  # not finished
        ]
    )
    out = over_seeds(board, sweeps)
    assert len(out) == 2
    pooled = out[out["n"] == 2].iloc[0]
    assert pooled["dice_mean"] == pytest.approx(82.0)
    assert pooled["dice_std"] == pytest.approx(np.std([80.0, 84.0], ddof=1))
    assert pooled["seeds"] == "0, 1" and pooled["runs"] == "1, 2"
    alone = out[out["n"] == 1].iloc[0]
    assert alone["sweeps"] == "long" and np.isnan(alone["dice_std"])
    assert over_seeds(board.iloc[3:], sweeps).empty

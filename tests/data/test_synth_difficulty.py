"""The generated lesions need learning: no single HU threshold inside the lungs finds
them (on real CT vessels, airway walls, dependent lung and partial volume share the
lesions' HU). Measured here by an exhaustive search over every threshold of the whole
HU range, in both directions, on the slices that have lesions."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from worker.data.synth import synth

# every integer HU a stored int16 slice can hold after synth's clipping, as bin edges
EDGES = np.arange(-1024, 3002, 1)


def best_single_threshold(hu: np.ndarray, lungs: np.ndarray, lesions: np.ndarray) -> dict:
    """Mean Dice (percent) over the slices with lesions of `lungs & (HU >= t)` and of
    `lungs & (HU < t)`, at the best t of each; arrays (H, W, N) as stored."""
    counts = []
    for i in range(hu.shape[-1]):
        target = lesions[..., i] > 0
        if not target.any():
            continue
        inside = lungs[..., i] > 0
        values, labels = hu[..., i][inside], target[inside]
        pos = np.histogram(values[labels], EDGES)[0]
        neg = np.histogram(values[~labels], EDGES)[0]
        counts.append((pos, neg, target.sum()))
    if not counts:
        raise AssertionError("no slice with lesions")
    best = {}
    for direction in ("above", "below"):
        dice = []
        for pos, neg, n in counts:
            if direction == "above":  # predicted: HU >= edge
                tp, fp = np.cumsum(pos[::-1])[::-1], np.cumsum(neg[::-1])[::-1]
            else:  # predicted: HU < edge
                tp, fp = np.r_[0, np.cumsum(pos)[:-1]], np.r_[0, np.cumsum(neg)[:-1]]
            dice.append(2 * tp / (tp + fp + n))
        mean = np.mean(dice, axis=0)
        best[direction] = (100 * float(mean.max()), int(EDGES[mean.argmax()]))
    best["slices"] = len(counts)
    return best


def read(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def test_the_search_finds_a_flat_lesion_level_perfectly():
    """Hand-made check of the measurement itself: lesions at one level are found."""
    hu = np.full((8, 8, 2), -850, np.int16)
    lungs = np.zeros((8, 8, 2), np.uint8)
    lungs[1:7, 1:7] = 1
    lesions = np.zeros_like(lungs)
    lesions[2:4, 2:5, 0] = 1
    lesions[5, 5, 1] = 2
    hu[lesions > 0] = -500
    hu[0, 0] = -400  # outside the lungs: not counted
    best = best_single_threshold(hu, lungs, lesions)
    assert best["above"][0] == pytest.approx(100.0) and best["slices"] == 2
    assert -849 <= best["above"][1] <= -500


@pytest.mark.parametrize("size", [16, 32, 64, 128, pytest.param(512, marks=pytest.mark.slow)])
def test_no_single_threshold_reaches_half_the_lesion_dice(tmp_path, size):
    small = size >= 512
    root = synth(
        tmp_path / "d",
        image_size=size,
        train_slices=20 if small else 60,
        test_volumes=2 if small else 3,
        slices_per_volume=10 if small else 24,
        seed=size,
    )
    names = sorted(p.name for p in (root / "rp_im").iterdir())
    splits = {
        "train": [read(root / f) for f in ("tr_im.nii.gz", "tr_lungmasks_updated.nii.gz",
                                           "tr_mask.nii.gz")],
        "test": [
            np.concatenate([read(root / folder / n) for n in names], axis=-1)
            for folder in ("rp_im", "rp_lung_msk", "rp_msk")
        ],
    }  # fmt: skip
    for split, (hu, lungs, lesions) in splits.items():
        best = best_single_threshold(hu, lungs, lesions)
        assert best["slices"] >= 5, (split, best)
        for direction in ("above", "below"):
            assert best[direction][0] < 50, (size, split, best)

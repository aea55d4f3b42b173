"""Per-volume test metrics in evaluate(): the wiring from predictions and NIfTI
spacing to 3-D Dice, NSD and HD95 per volume, and the protocol fields behind them.

The metrics themselves are checked against hand-computed cases, surface-distance and
medpy in test_boundary.py; here the expected values are recomputed from the model's
own predictions (torch, outside evaluate) and the spacing read from the headers
(nibabel), so a wrong axis order, spacing scale or volume boundary shows.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from db.protocol import Protocol, ProtocolError
from worker import data
from worker.data.dataset import Split
from worker.training.boundary import boundary_metrics
from worker.training.evaluate import evaluate
from worker.training.volumes import VolumeScorer, volume_ranges, volume_summary


class Threshold(torch.nn.Module):
    """A fixed "model": probability of being darker than -400 HU (lungs and air)."""

    def forward(self, x):
        return torch.sigmoid(20 * ((-400 + 500) / 500 - x))


@pytest.fixture(scope="module")
def lungs(synthetic_data):
    return data.load_dataset(synthetic_data, "lung-segmentation", 64)


def header_spacing(root, volume: int, size: int) -> tuple[float, float, float]:
    """(slice, row, column) mm of the resized slices, from the test volume's header."""
    img = nib.load(str(root / "rp_im" / f"{volume + 1}.nii.gz"))
    rows, cols, _ = img.shape
    zr, zc, zz = (float(z) for z in img.header.get_zooms()[:3])
    return zz, zr * rows / size, zc * cols / size


@pytest.mark.parametrize("mode", ["surface-area", "border-voxel"])
def test_evaluate_scores_each_volume_with_its_header_spacing(lungs, synthetic_data, mode, batch=4):
    split = lungs.test
    result, _ = evaluate(
        Threshold(),
        split,
        batch_size=batch,  # 4: batches straddle the two 6-slice volumes
        spacing=lungs.test_spacing,
        nsd_tolerance_mm=3.0,
        boundary_mode=mode,
    )
    with torch.inference_mode():
        pred = (Threshold()(torch.from_numpy(split.images)[:, None])[:, 0] > 0.5).numpy()
    assert [(v.volume, v.slices) for v in result.volumes] == [(0, 6), (1, 6)]
    for v in result.volumes:
        rows = split.volume == v.volume
        t, p = split.masks[rows].astype(bool), pred[rows]
        assert p.sum() > 0 and (p != t).any()  # neither empty nor perfect
        expected = boundary_metrics(t, p, header_spacing(synthetic_data, v.volume, 64), 3.0, mode)
        assert v.dice == pytest.approx(100 * 2 * (t & p).sum() / (t.sum() + p.sum()))
        assert v.nsd == pytest.approx(100 * expected["nsd"])
        assert v.hd95 == pytest.approx(expected["hd95"])
    assert result.nsd == pytest.approx(np.mean([v.nsd for v in result.volumes]))
    assert result.hd95 == pytest.approx(np.mean([v.hd95 for v in result.volumes]))


def test_the_two_modes_give_different_numbers_and_no_spacing_gives_none(lungs):
    area, _ = evaluate(Threshold(), lungs.test, spacing=lungs.test_spacing)
    voxels, _ = evaluate(
        Threshold(), lungs.test, spacing=lungs.test_spacing, boundary_mode="border-voxel"
    )
    assert area.nsd != voxels.nsd
    plain, _ = evaluate(Threshold(), lungs.test)
    assert plain.nsd is None and plain.hd95 is None
    assert [v.dice for v in plain.volumes] == [v.dice for v in area.volumes]


def split_of(volume, slices, masks) -> Split:
    n = len(volume)
    zeros = np.zeros((n, *masks.shape[1:]), np.float32)
    return Split(zeros, masks, masks, np.asarray(volume), np.asarray(slices))


def test_empty_volumes_and_a_gap_between_slices():
    masks = np.zeros((7, 8, 8), np.uint8)
    masks[3:5, 2:5, 2:5] = 1  # volume 1 holds a target, volume 0 none
    split = split_of([0, 0, 0, 1, 1, 2, 2], [0, 1, 2, 0, 1, 0, 5], masks)
    scorer = VolumeScorer(split, [(1.0, 1.0, 2.0)] * 3)
    pred = np.zeros_like(masks, dtype=bool)
    for start in range(0, 7, 3):
        scorer.add(start, pred[start : start + 3])
    counts = np.zeros((7, 4), np.int64)
    counts[3:5, 2] = 9  # the target's voxels, all missed
    got = {v.volume: v for v in scorer.results(counts)}
    # both empty: Dice 100, NSD 100, HD95 0; reference only (a missed volume): Dice 0,
    # NSD 0, HD95 the volume's diagonal, by hand: 2 slices of 2 mm, 8 x 8 of 1 mm ->
    # sqrt(4^2 + 8^2 + 8^2) = 12 mm; slices 0 and 5 are not neighbours: no 3-D surface,
    # no NSD/HD95.
    assert (got[0].dice, got[0].nsd, got[0].hd95) == (100.0, 100.0, 0.0)
    assert (got[1].dice, got[1].nsd, got[1].hd95) == (0.0, 0.0, 12.0)
    assert (got[2].slices, got[2].dice, got[2].nsd, got[2].hd95) == (2, 100.0, None, None)
    summary = volume_summary(list(got.values()))
    assert summary == {"nsd": 50.0, "nsd_volumes": 2, "hd95": 6.0, "hd95_volumes": 2}


def test_a_volume_split_in_two_places_is_refused():
    with pytest.raises(ValueError, match="not consecutive"):
        volume_ranges(np.array([0, 0, 1, 0]))


def test_protocol_boundary_fields():
    p = Protocol()
    assert (p.nsd_tolerance_mm, p.boundary_mode) == (2.0, "surface-area")
    assert Protocol(nsd_tolerance_mm=2).hash() == p.hash()  # stored as a float
    assert Protocol(nsd_tolerance_mm=1.0).hash() != p.hash()
    assert Protocol(boundary_mode="border-voxel").hash() != p.hash()
    # a protocol stored before these fields existed loads with the defaults
    old = {k: v for k, v in p.to_dict().items() if k not in ("nsd_tolerance_mm", "boundary_mode")}
    assert Protocol.from_dict(old) == p
    for bad in (0, -1.0, float("nan"), float("inf"), 5000.0, True, "2"):
        with pytest.raises(ProtocolError, match="NSD tolerance"):
            Protocol(nsd_tolerance_mm=bad)
    with pytest.raises(ProtocolError, match="boundary mode 'mesh'"):
        Protocol(boundary_mode="mesh")


def test_scoring_on_a_thread_pool_gives_the_same_numbers():
    """threads > 1 scores finished volumes on a pool while slices keep arriving; the
    numbers are those of the scorer that scores in line."""
    rng = np.random.default_rng(0)
    masks = np.zeros((12, 16, 16), np.uint8)
    masks[1:5, 4:11, 3:9] = 1
    masks[6:11, 2:8, 6:14] = 1
    split = split_of([0] * 6 + [1] * 6, list(range(6)) * 2, masks)
    pred = (masks > 0) ^ (rng.random(masks.shape) < 0.05)
    counts = np.zeros((12, 4), np.int64)
    out = []
    for threads in (1, 3):
        scorer = VolumeScorer(split, [(0.8, 0.8, 2.0)] * 2, threads=threads)
        for start in range(0, 12, 5):
            scorer.add(start, pred[start : start + 5])
        out.append(scorer.results(counts))
    assert out[0] == out[1]
    assert all(v.nsd is not None and v.hd95 is not None for v in out[1])

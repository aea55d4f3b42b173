"""worker.inference.boundary: NSD and HD95 on shapes with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from worker.inference.boundary import border, boundary_metrics, hd95, normalized_surface_dice


def sphere(shape=(40, 40, 40), centre=(20, 20, 20), radius=10.0) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float64)
    d2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
    return d2 <= radius**2


def box(shape=(30, 30, 30), lo=(8, 8, 8), hi=(20, 22, 18)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return m


@pytest.mark.parametrize("shift", [1, 2, 4])
def test_shifted_spheres(shift):
    a = sphere()
    b = sphere(centre=(20 + shift, 20, 20))
    spacing = (1.0, 1.0, 1.0)
    # Each border voxel of one has its shifted copy on the other border: NSD = 1 at
    # a tolerance of the shift, and no border distance exceeds it.
    assert normalized_surface_dice(a, b, spacing, tolerance_mm=shift) == 1.0
    assert normalized_surface_dice(a, b, spacing, tolerance_mm=shift - 0.5) < 1.0
    assert hd95(a, b, spacing, percentile=100) == pytest.approx(shift)
    # Distance ~ shift * |cos(angle to the shift axis)|, uniform on the sphere:
    # its 95th percentile is about 0.95 shift.
    assert 0.8 * shift <= hd95(a, b, spacing) <= shift


def test_shifted_boxes_hd95_is_the_shift_in_mm_with_anisotropic_spacing():
    a = box()
    b = np.roll(a, 2, axis=2)  # two slices further, 2.5 mm apart
    spacing = (0.7, 0.7, 2.5)
    assert hd95(a, b, spacing) == pytest.approx(5.0)
    assert normalized_surface_dice(a, b, spacing, tolerance_mm=5.0) == 1.0
    assert normalized_surface_dice(a, b, spacing, tolerance_mm=4.9) < 1.0


def test_identical_masks():
    a = sphere()
    m = boundary_metrics(a, a.copy(), (1.0, 2.0, 3.0), tolerance_mm=0.0)
    assert m == {"nsd": 1.0, "hd95": 0.0, "dice": 1.0, "tolerance_mm": 0.0}


def test_empty_mask_conventions():
    empty = np.zeros((10, 10, 10), bool)
    full = box((10, 10, 10), (2, 2, 2), (6, 6, 6))
    both = boundary_metrics(empty, empty, (1, 1, 1))
    assert both["nsd"] == 1.0 and both["hd95"] == 0.0 and both["dice"] == 1.0
    one = boundary_metrics(full, empty, (1, 1, 1))
    assert one["nsd"] == 0.0 and one["hd95"] == float("inf") and one["dice"] == 0.0
    assert boundary_metrics(empty, full, (1, 1, 1))["hd95"] == float("inf")


def test_border_counts_the_volume_edge_as_background():
    full = np.ones((3, 3, 3), bool)
    assert border(full).sum() == 26  # all but the centre
    assert border(np.ones((1, 4, 4), bool)).all()


def test_bad_inputs():
    a = np.zeros((4, 4, 4), bool)
    with pytest.raises(ValueError, match="differ in shape"):
        hd95(a, np.zeros((4, 4, 5), bool), (1, 1, 1))
    with pytest.raises(ValueError, match="3-D"):
        hd95(a[0], a[0], (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        hd95(a, a, (1, 0, 1))

"""worker.training.boundary: NSD and HD95 in both boundary modes.

Checked against hand-computed cases with anisotropic spacing (the expected values are
worked out in the comments from the geometry, not from the code), against DeepMind's
surface-distance package for the "surface-area" mode and against medpy for the
"border-voxel" mode (both independent implementations, dev extra; skipped when absent).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from worker.training.boundary import (
    CORNER_BITS,
    border,
    boundary_metrics,
    hd95,
    normalized_surface_dice,
    surface_area_table,
    surface_distances,
)

S = (2.0, 0.5, 1.0)  # anisotropic spacing (mm) of axes 0, 1, 2
A, B, C = S[1] * S[2], S[0] * S[2], S[0] * S[1]  # face areas normal to axes 0, 1, 2


def voxel(shape=(6, 6, 6), at=(2, 2, 2)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[at] = True
    return m


def box(shape=(9, 10, 11), lo=(2, 2, 2), size=(3, 4, 5)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[tuple(slice(a, a + n) for a, n in zip(lo, size, strict=True))] = True
    return m


def sphere(shape=(40, 40, 40), centre=(20, 20, 20), radius=10.0) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float64)
    d2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
    return d2 <= radius**2


# Marching-cubes areas of the three kinds of 2x2x2 cube on a box's surface:
# one corner inside (a triangle cutting the corner at the edge midpoints: area vector
# (1/8)(A, B, C)); two corners along axis j (a rectangle s_j long, across the
# diagonal of the other two axes at half length); four corners on a face (a square
# parallel to the face).
CORNER = 0.125 * math.sqrt(A**2 + B**2 + C**2)
EDGE = [S[0] * 0.5 * math.hypot(S[1], S[2]), S[1] * 0.5 * math.hypot(S[0], S[2])]
EDGE.append(S[2] * 0.5 * math.hypot(S[0], S[1]))
FACE = [A, B, C]


def box_area(n0, n1, n2) -> float:
    """8 corner cubes, 4 (n_j - 1) edge cubes along each axis j, 2 (n_k - 1)(n_l - 1)
    face cubes normal to each axis."""
    n = (n0, n1, n2)
    edges = sum(4 * (n[j] - 1) * EDGE[j] for j in range(3))
    faces = sum(2 * (n[(j + 1) % 3] - 1) * (n[(j + 2) % 3] - 1) * FACE[j] for j in range(3))
    return 8 * CORNER + edges + faces


def test_single_voxel_surface_area():
    # A voxel touches 8 cubes, each with one corner inside: 8 x (1/8) |(A, B, C)|.
    s = surface_distances(voxel(), voxel(), S)
    assert len(s.truth_weights) == 8
    assert s.truth_weights.sum() == pytest.approx(math.sqrt(0.5**2 + 2**2 + 1**2))
    m = boundary_metrics(voxel(), voxel(), S, tolerance_mm=0.1)
    assert (m["dice"], m["nsd"], m["hd95"]) == (1.0, 1.0, 0.0)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_single_voxel_shifted_by_one_along_each_axis(axis):
    at = [2, 2, 2]
    at[axis] += 1
    truth, pred = voxel(), voxel(at=tuple(at))
    step = S[axis]
    # surface-area: the 8 cubes of each voxel are 2 layers of 4 along `axis`; the layer
    # between the voxels belongs to both (distance 0), the other is one step away.
    # Equal areas: half of each surface is within any tolerance below the step.
    assert normalized_surface_dice(truth, pred, S, 0.9 * step) == pytest.approx(0.5)
    assert normalized_surface_dice(truth, pred, S, step) == 1.0
    # Weighted 95th percentile: 4/8 at 0, 4/8 at one step -> the step.
    assert hd95(truth, pred, S) == pytest.approx(step)
    assert hd95(truth, pred, S, percentile=40) == 0.0
    # border-voxel: each surface is the voxel itself, one step from the other.
    assert normalized_surface_dice(truth, pred, S, 0.9 * step, mode="border-voxel") == 0.0
    assert normalized_surface_dice(truth, pred, S, step, mode="border-voxel") == 1.0
    assert hd95(truth, pred, S, mode="border-voxel") == pytest.approx(step)


def test_box_surface_area_and_border_voxels():
    s = surface_distances(box(), box(), S)
    assert s.truth_weights.sum() == pytest.approx(box_area(3, 4, 5))
    # Border voxels of a 3 x 4 x 5 box: all 60 but the 1 x 2 x 3 inside.
    sv = surface_distances(box(), box(), S, mode="border-voxel")
    assert len(sv.truth_weights) == 54 and sv.truth_weights.sum() == 54


def test_box_shifted_one_slice_surface_area():
    truth, pred = box(), box(lo=(3, 2, 2))  # one voxel (2 mm) further along axis 0
    # Cube layers of the truth along axis 0: q0 = 0 (bottom), 1, 2 (rings), 3 (top).
    # Bottom layer (4 corners, 2x3 edge cubes along axis 1, 2x4 along axis 2, 3x4
    # faces): 2 mm to the prediction's bottom layer at q0 = 1. Rings and the top ring:
    # shared with the prediction (0). The 3 x 4 top face cubes (area A each) lie in the
    # prediction's ring layer q0 = 3: 0.5 mm (q1 = 1 or 3, next to the ring along
    # axis 1, 0.5 mm voxels) for 8 of them, 1.0 mm for the 4 at q1 = 2 (two 0.5 mm
    # steps, or one 1 mm step along axis 2). The prediction mirrors this.
    total = box_area(3, 4, 5)
    far = 4 * CORNER + 6 * EDGE[1] + 8 * EDGE[2] + 12 * FACE[0]
    at_half, at_one = 8 * A, 4 * A
    zero = total - far - at_half - at_one
    assert normalized_surface_dice(truth, pred, S, 0.25) == pytest.approx(zero / total)
    assert normalized_surface_dice(truth, pred, S, 0.75) == pytest.approx((zero + at_half) / total)
    assert normalized_surface_dice(truth, pred, S, 1.5) == pytest.approx((total - far) / total)
    assert normalized_surface_dice(truth, pred, S, 2.0) == 1.0
    # Area-weighted percentiles: zero / total = 72.6%, + 8A -> 77.0%, + 4A -> 79.3%.
    assert zero / total == pytest.approx(0.7263, abs=1e-3)
    assert hd95(truth, pred, S, percentile=70) == 0.0
    assert hd95(truth, pred, S, percentile=75) == pytest.approx(0.5)
    assert hd95(truth, pred, S, percentile=78) == pytest.approx(1.0)
    assert hd95(truth, pred, S) == pytest.approx(2.0)


def test_box_shifted_one_slice_border_voxel():
    truth, pred = box(), box(lo=(3, 2, 2))
    # Truth's border voxels by layer: bottom (20): 2 mm to the prediction's bottom
    # layer; middle ring (14) and top ring (14): 0, shared; the top layer's 6 inner
    # voxels: 0.5 mm to the prediction's ring along axis 1. 54 per mask, mirrored.
    assert normalized_surface_dice(truth, pred, S, 0.4, mode="border-voxel") == pytest.approx(
        28 / 54
    )
    assert normalized_surface_dice(truth, pred, S, 1.0, mode="border-voxel") == pytest.approx(
        34 / 54
    )
    # numpy percentile of 28 x 0, 6 x 0.5, 20 x 2: positions 50.35 -> 2 mm.
    assert hd95(truth, pred, S, mode="border-voxel") == pytest.approx(2.0)
    assert hd95(truth, pred, S, percentile=50, mode="border-voxel") == 0.0


def test_the_modes_differ_on_anisotropic_data():
    truth, pred = box(), box(lo=(3, 2, 2))
    area = normalized_surface_dice(truth, pred, S, 1.0)
    voxels = normalized_surface_dice(truth, pred, S, 1.0, mode="border-voxel")
    assert area - voxels > 0.1


@pytest.mark.parametrize("shift", [1, 2, 4])
@pytest.mark.parametrize("mode", ["surface-area", "border-voxel"])
def test_shifted_spheres(shift, mode):
    a = sphere()
    b = sphere(centre=(20 + shift, 20, 20))
    spacing = (1.0, 1.0, 1.0)
    # Every surface point has a copy `shift` away on the other surface: NSD 1 at a
    # tolerance of the shift, and no distance exceeds it.
    assert normalized_surface_dice(a, b, spacing, shift, mode=mode) == 1.0
    assert normalized_surface_dice(a, b, spacing, shift - 0.5, mode=mode) < 1.0
    assert hd95(a, b, spacing, percentile=100, mode=mode) == pytest.approx(shift)
    assert 0.8 * shift <= hd95(a, b, spacing, mode=mode) <= shift


def test_empty_mask_conventions():
    empty = np.zeros((10, 10, 10), bool)
    full = box((10, 10, 10), (2, 2, 2), (4, 4, 4))
    for mode in ("surface-area", "border-voxel"):
        both = boundary_metrics(empty, empty, S, mode=mode)
        assert (both["dice"], both["nsd"], both["hd95"]) == (1.0, 1.0, 0.0)
        assert not both["missed"]
        # exactly one mask empty: HD95 is the volume's diagonal (10 voxels of S mm along
        # each axis), the farthest two points of the volume can be
        diagonal = math.sqrt(sum((10 * s) ** 2 for s in S))
        for t, p in ((full, empty), (empty, full)):
            one = boundary_metrics(t, p, S, mode=mode)
            assert one["dice"] == 0.0 and one["nsd"] == 0.0 and one["missed"]
            assert one["hd95"] == pytest.approx(diagonal, rel=1e-12)
            assert hd95(t, p, S, mode=mode) == one["hd95"]


def test_a_missed_volume_scores_worse_than_any_wrong_blob():
    """No HD95 of two non-empty masks in a volume exceeds the diagonal: checked against
    the farthest-apart blobs the volume holds (opposite corners), in both modes."""
    shape = (6, 9, 12)
    truth = np.zeros(shape, bool)
    truth[0, 0, 0] = True
    blob = np.zeros(shape, bool)
    blob[-1, -1, -1] = True
    for mode in ("surface-area", "border-voxel"):
        wrong = boundary_metrics(truth, blob, S, mode=mode)["hd95"]
        missed = boundary_metrics(truth, np.zeros(shape, bool), S, mode=mode)["hd95"]
        diagonal = math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, S, strict=True)))
        assert missed == pytest.approx(diagonal)
        assert 0 < wrong <= missed


def test_border_counts_the_volume_edge_as_background():
    full = np.ones((3, 3, 3), bool)
    assert border(full).sum() == 26  # all but the centre
    assert border(np.ones((1, 4, 4), bool)).all()
    # surface-area: a mask filling the volume is closed at its edges too.
    s = surface_distances(full, full, S)
    assert s.truth_weights.sum() == pytest.approx(box_area(3, 3, 3))


def test_bad_inputs():
    a = np.zeros((4, 4, 4), bool)
    with pytest.raises(ValueError, match="differ in shape"):
        hd95(a, np.zeros((4, 4, 5), bool), (1, 1, 1))
    with pytest.raises(ValueError, match="3-D"):
        hd95(a[0], a[0], (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        hd95(a, a, (1, 0, 1))
    with pytest.raises(ValueError, match="boundary mode"):
        hd95(a, a, (1, 1, 1), mode="mesh")
    with pytest.raises(ValueError, match="tolerance"):
        normalized_surface_dice(a, a, (1, 1, 1), -1.0)


# ------------------------------------------------- independent implementations


def blobs(seed: int, shape=(24, 28, 20)) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping irregular masks (smoothed noise, thresholded)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=(2, *shape)), sigma=(0, 2.5, 2.5, 2.5))
    return noise[0] > 0.02, (0.7 * noise[0] + 0.3 * noise[1]) > 0.02


def test_area_table_equals_surface_distance_lookup_table():
    lookup = pytest.importorskip("surface_distance.lookup_tables")
    for spacing in ((1.0, 1.0, 1.0), S, (5.0, 0.7, 0.8)):
        expected = lookup.create_table_neighbour_code_to_surface_area(spacing)
        np.testing.assert_allclose(surface_area_table(spacing), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(CORNER_BITS, lookup.ENCODE_NEIGHBOURHOOD_3D_KERNEL)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surface_area_mode_matches_surface_distance(seed):
    sd = pytest.importorskip("surface_distance")
    truth, pred = blobs(seed)
    assert truth.any() and pred.any() and (truth != pred).any()
    spacing = (2.5, 0.6, 0.8)
    ref = sd.compute_surface_distances(truth, pred, spacing)
    for tol in (0.5, 1.0, 2.0):
        assert normalized_surface_dice(truth, pred, spacing, tol) == pytest.approx(
            sd.compute_surface_dice_at_tolerance(ref, tol), abs=1e-12
        )
    for pct in (50, 95, 100):
        assert hd95(truth, pred, spacing, percentile=pct) == pytest.approx(
            sd.compute_robust_hausdorff(ref, pct), abs=1e-12
        )


@pytest.mark.parametrize("seed", [0, 1])
def test_border_voxel_mode_matches_medpy(seed):
    medpy = pytest.importorskip("medpy.metric.binary")
    truth, pred = blobs(seed)
    spacing = (2.5, 0.6, 0.8)
    # medpy's Hausdorff distance (maximum) uses the same border voxels and distances.
    assert hd95(truth, pred, spacing, percentile=100, mode="border-voxel") == pytest.approx(
        medpy.hd(pred, truth, voxelspacing=spacing)
    )
    # medpy's hd95 pools both directions before the percentile (ours takes the larger
    # directed one, as MONAI does); the pooled distances must agree all the same.
    s = surface_distances(truth, pred, spacing, mode="border-voxel")
    pooled = np.concatenate([s.truth_to_pred, s.pred_to_truth])
    assert np.percentile(pooled, 95) == pytest.approx(medpy.hd95(pred, truth, voxelspacing=spacing))
    # medpy 0.5's assd is the mean of the pooled distances.
    assert medpy.assd(pred, truth, voxelspacing=spacing) == pytest.approx(pooled.mean())


@pytest.mark.parametrize("mode", ["surface-area", "border-voxel"])
def test_far_apart_masks_both_search_paths(mode):
    # Surfaces farther apart than NEAR_MM: a few far points (k-d tree) and many (the
    # distance transform) must give the same distances. Reference: two voxels 15
    # slices (30 mm) apart have HD95 = 30 mm in border-voxel mode; a slab of 12 x 12
    # voxels against one voxel 15 slices away: its nearest point to the voxel is 30 mm.
    a, b = voxel((20, 6, 6), (2, 2, 2)), voxel((20, 6, 6), (17, 2, 2))
    assert hd95(a, b, S, mode="border-voxel") == pytest.approx(30.0)
    slab = np.zeros((20, 14, 14), bool)
    slab[2, 1:13, 1:13] = True
    far = voxel((20, 14, 14), (17, 6, 6))
    s = surface_distances(slab, far, S, mode=mode)
    # border voxels: slice 2 to slice 17; cube layers: the slab's reach slice 3, the
    # voxel's start at slice 17, 14 steps of 2 mm
    assert s.pred_to_truth.min() == pytest.approx(30.0 if mode == "border-voxel" else 28.0)
    sd = pytest.importorskip("surface_distance")
    if mode == "surface-area":
        cube = box((30, 30, 50), (2, 2, 2), (20, 20, 20))
        stray = cube.copy()
        stray[10, 10, 40] = True  # 18 voxels (18 mm) past the cube: a few far points
        for t, p in ((a, b), (slab, far), (cube, stray)):
            ref = sd.compute_surface_distances(t, p, S)
            mine = surface_distances(t, p, S)
            np.testing.assert_allclose(np.sort(mine.truth_to_pred), ref["distances_gt_to_pred"])
            np.testing.assert_allclose(np.sort(mine.pred_to_truth), ref["distances_pred_to_gt"])

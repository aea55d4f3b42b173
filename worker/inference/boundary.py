"""Boundary metrics of 3-D masks: normalised surface Dice (NSD) and HD95, in mm.

Definitions follow DeepMind's surface-distance package (Nikolov et al. 2018), with
one simplification: surfaces are the masks' border voxels (foreground voxels with a
background 6-neighbour, the volume's edge counting as background), each weighing one,
instead of marching-cube surface elements weighted by their area (MONAI's
``compute_surface_dice`` without sub-voxels does the same).

- distances: for every border voxel of one mask, the Euclidean distance in mm
  (``sampling=spacing``) to the nearest border voxel of the other mask.
- NSD at tolerance t: (border voxels of truth within t of the predicted border +
  border voxels of the prediction within t of the true border) / (all border voxels
  of both). 1 = every border point lies within t of the other border.
- HD95: the larger of the two directed 95th percentiles of the distances.

Empty masks (conventions):
- both empty: NSD 1.0, HD95 0.0 (perfect agreement, as the standard metric mode
  scores 0/0 as 1; surface-distance returns NaN and inf here).
- one empty: NSD 0.0, HD95 inf (no border point has a partner).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from db.errors import InvalidInput

__all__ = ["border", "boundary_metrics", "hd95", "normalized_surface_dice", "surface_distances"]

_SIX_NEIGHBOURS = ndimage.generate_binary_structure(3, 1)


def _check(truth: np.ndarray, pred: np.ndarray, spacing: Sequence[float]):
    t = np.asarray(truth).astype(bool, copy=False)
    p = np.asarray(pred).astype(bool, copy=False)
    if t.shape != p.shape:
        raise InvalidInput(f"masks differ in shape: truth {t.shape}, prediction {p.shape}.")
    if t.ndim != 3:
        raise InvalidInput(f"masks must be 3-D, got {t.ndim}-D of shape {t.shape}.")
    s = tuple(float(x) for x in spacing)
    if len(s) != 3 or any(not np.isfinite(x) or x <= 0 for x in s):
        raise InvalidInput(f"spacing must be three positive numbers (mm), got {spacing!r}.")
    return t, p, s


def border(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with at least one background 6-neighbour (edge = background)."""
    m = np.asarray(mask, dtype=bool)
    return m & ~ndimage.binary_erosion(m, structure=_SIX_NEIGHBOURS, border_value=0)


def surface_distances(
    truth: np.ndarray, pred: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """(truth-border -> predicted border, predicted border -> truth-border) distances, mm.

    Both arrays are empty when the masks are; an array is all inf when the other
    mask is empty. Computed on the bounding box of both masks (exact: every border
    voxel lies inside it).
    """
    t, p, s = _check(truth, pred, spacing)
    union = t | p
    if not union.any():
        return np.zeros(0), np.zeros(0)
    box = tuple(slice(ix.min(), ix.max() + 1) for ix in np.nonzero(union))
    t = np.pad(t[box], 1)
    p = np.pad(p[box], 1)
    bt, bp = border(t), border(p)

    def to(other: np.ndarray, points: np.ndarray) -> np.ndarray:
        if not other.any():
            return np.full(int(points.sum()), np.inf)
        return ndimage.distance_transform_edt(~other, sampling=s)[points]

    return to(bp, bt), to(bt, bp)


def _nsd(d_tp: np.ndarray, d_pt: np.ndarray, tolerance_mm: float) -> float:
    total = len(d_tp) + len(d_pt)
    if total == 0:
        return 1.0
    return float(
        (np.count_nonzero(d_tp <= tolerance_mm) + np.count_nonzero(d_pt <= tolerance_mm)) / total
    )


def _hd(d_tp: np.ndarray, d_pt: np.ndarray, percentile: float) -> float:
    if len(d_tp) == 0 and len(d_pt) == 0:
        return 0.0
    if len(d_tp) == 0 or len(d_pt) == 0:
        return float("inf")
    return float(max(np.percentile(d_tp, percentile), np.percentile(d_pt, percentile)))


def normalized_surface_dice(
    truth: np.ndarray, pred: np.ndarray, spacing: Sequence[float], tolerance_mm: float
) -> float:
    """Normalised surface Dice at ``tolerance_mm`` (see the module docstring)."""
    return _nsd(*surface_distances(truth, pred, spacing), tolerance_mm)


def hd95(
    truth: np.ndarray, pred: np.ndarray, spacing: Sequence[float], percentile: float = 95.0
) -> float:
    """Robust Hausdorff distance in mm (percentile 100 = the Hausdorff distance)."""
    return _hd(*surface_distances(truth, pred, spacing), percentile)


def boundary_metrics(
    truth: np.ndarray, pred: np.ndarray, spacing: Sequence[float], tolerance_mm: float = 2.0
) -> dict[str, float]:
    """{"nsd", "hd95", "dice"} of one volume as fractions (0..1) and mm; distances
    computed once. What segbench reports is percent (`segbench predict` converts)."""
    d_tp, d_pt = surface_distances(truth, pred, spacing)
    t = np.asarray(truth, dtype=bool)
    p = np.asarray(pred, dtype=bool)
    den = int(t.sum()) + int(p.sum())
    dice = 1.0 if den == 0 else 2 * int((t & p).sum()) / den
    return {
        "nsd": _nsd(d_tp, d_pt, tolerance_mm),
        "hd95": _hd(d_tp, d_pt, 95.0),
        "dice": float(dice),
        "tolerance_mm": float(tolerance_mm),
    }

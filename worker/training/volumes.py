"""Per-volume test metrics: 3-D Dice, NSD and HD95 of each test volume.

The test split holds, per test volume, a run of consecutive slices (all of the
volume's slices, or the slab its `slices = [start, stop]` names in dataset.toml),
resized to the protocol's image size. A volume's metrics are those of that stack of
slices: rows and columns measured with the header's spacing scaled by original /
resized size, slices with the header's slice spacing. A slab is closed at its first
and last slice as a whole volume is at its edges.

VolumeScorer takes the predicted masks batch by batch, in test-set order, and scores
each volume as soon as its last slice arrives, so at most one volume's predictions
are held at a time.
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from db import metrics as registry
from db.protocol import VolumeMetrics
from worker.data.dataset import Split
from worker.training.boundary import boundary_metrics
from worker.training.metrics import dice_from_counts


def volume_ranges(volume: np.ndarray) -> list[tuple[int, int, int]]:
    """(volume, start, stop) of each run of equal volume indices in test-set order."""
    volume = np.asarray(volume)
    if len(volume) == 0:
        return []
    cuts = np.flatnonzero(np.diff(volume)) + 1
    starts = [0, *cuts.tolist()]
    stops = [*cuts.tolist(), len(volume)]
    ranges = [(int(volume[a]), a, b) for a, b in zip(starts, stops, strict=True)]
    seen = [v for v, _, _ in ranges]
    if len(set(seen)) != len(seen):
        raise ValueError("the slices of a test volume are not consecutive in the test set")
    return ranges


def dice_3d(tp: int, fp: int, fn: int) -> float:
    """3-D Dice in percent; 100 when both masks are empty (Metrics Reloaded)."""
    return 100.0 * dice_from_counts(tp, fp, fn)


class VolumeScorer:
    """Scores test volumes from per-slice counts and (optionally) predicted masks.

    spacing: per test volume (rows mm, columns mm, slice mm) of the stored slices, as
    worker.data.dataset.Dataset.test_spacing; None or [] = no boundary metrics
    (NSD and HD95 stay None).

    threads > 1: a finished volume's boundary metrics are computed on a pool of that
    many threads while the caller goes on predicting the next slices (scipy's k-d tree
    and distance transform release the GIL: 1.5x with 2 threads on a 2-core VM). The
    numbers are the same either way; on a GPU the device no longer waits for them.
    """

    def __init__(
        self,
        split: Split,
        spacing: list[tuple[float, float, float]] | None,
        tolerance_mm: float = 2.0,
        mode: str = "surface-area",
        threads: int = 1,
    ):
        self.split = split
        self._pool = ThreadPoolExecutor(threads) if threads > 1 and spacing else None
        self.ranges = volume_ranges(split.volume)
        self.spacing = list(spacing or [])
        self.boundary = bool(self.spacing)
        if self.boundary and len(self.spacing) <= max((v for v, _, _ in self.ranges), default=-1):
            raise ValueError(
                f"{len(self.spacing)} test spacing(s) for test volumes up to "
                f"{max(v for v, _, _ in self.ranges)}"
            )
        self.tolerance_mm = tolerance_mm
        self.mode = mode
        self._chunks: list[np.ndarray] = []
        self._next = 0  # index of the next range to complete
        self._boundary: dict[int, tuple[float | None, float | None]] = {}

    @property
    def wants_masks(self) -> bool:
        return self.boundary

    def add(self, start: int, pred: np.ndarray) -> None:
        """Predicted binary masks (b, H, W) of test slices start .. start+b-1."""
        if not self.boundary:
            return
        stop = start + len(pred)
        while self._next < len(self.ranges):
            v, a, b = self.ranges[self._next]
            lo, hi = max(a, start), min(b, stop)
            if lo < hi:
                self._chunks.append(pred[lo - start : hi - start])
            if b > stop:
                return
            self._score(v, a, b, np.concatenate(self._chunks) if self._chunks else None)
            self._chunks = []
            self._next += 1

    def _score(self, v: int, a: int, b: int, pred: np.ndarray | None) -> None:
        slices = self.split.slice[a:b]
        if pred is None or len(pred) != b - a or np.any(np.diff(slices) != 1):
            self._boundary[v] = (None, None)  # a gap between slices: no honest 3-D surface
            return
        rows, cols, z = self.spacing[v]
        args = (self.split.masks[a:b], pred, (z, rows, cols), self.tolerance_mm, self.mode)
        if self._pool is not None:
            self._boundary[v] = self._pool.submit(_scored, *args)
        else:
            self._boundary[v] = _scored(*args)

    def results(self, counts: np.ndarray) -> list[VolumeMetrics]:
        """Per-volume metrics, given the per-slice (tp, fp, fn, tn) of the test set
        (waits for the volumes still being scored)."""
        if self._pool is not None:
            self._boundary = {
                v: (r.result() if isinstance(r, Future) else r) for v, r in self._boundary.items()
            }
            self._pool.shutdown()
            self._pool = None
        out = []
        for v, a, b in self.ranges:
            tp, fp, fn = (int(x) for x in counts[a:b, :3].sum(0))
            nsd, hd = self._boundary.get(v, (None, None))
            out.append(VolumeMetrics(v, b - a, dice_3d(tp, fp, fn), nsd, hd))
        return out


def _scored(truth, pred, spacing, tolerance_mm, mode) -> tuple[float, float]:
    m = boundary_metrics(truth, pred, spacing, tolerance_mm, mode)
    return 100.0 * m["nsd"], m["hd95"]


def mean_covered(values) -> tuple[float | None, int]:
    """(mean of the values that are not None or None when there are none, how many
    there are): a mean over test volumes with the number of volumes it covers."""
    kept = [x for x in values if x is not None and math.isfinite(x)]
    return (float(np.mean(kept)) if kept else None), len(kept)


def volume_summary(volumes: list[VolumeMetrics]) -> dict[str, float | int | None]:
    """The TestResult fields of the volume-level means of db.metrics (nsd, hd95) and the
    number of volumes each covers (nsd_volumes, hd95_volumes)."""
    out: dict[str, float | int | None] = {}
    for m in registry.select(level="volume"):
        out[m.name], out[m.coverage] = mean_covered(getattr(v, m.name) for v in volumes)
    return out

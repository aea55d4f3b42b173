"""Preprocessing of CT slices as the paper does it: resize, HU normalisation, the
lung-masked input of lesion-segmentation-b. Pure numpy, used by training and by
`segbench predict` alike, so both see exactly the same input."""

from __future__ import annotations

import numpy as np

HU_MEAN, HU_STD = -500.0, 500.0  # normalisation of the paper: (HU - mean) / std


def normalise_hu(hu: np.ndarray) -> np.ndarray:
    """Paper normalisation (HU - (-500)) / 500, as float32."""
    return ((np.asarray(hu, dtype=np.float32) - HU_MEAN) / HU_STD).astype(np.float32, copy=False)


def _linear_index(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    i0 = np.floor(src).astype(np.intp)
    return i0, np.minimum(i0 + 1, n_in - 1), (src - i0).astype(np.float32)


def resize_bilinear(stack: np.ndarray, size: int) -> np.ndarray:
    """Resize the last two axes to size x size, bilinear (align_corners=False), float32."""
    h, w = np.shape(stack)[-2:]
    if (h, w) == (size, size):
        return np.array(stack, dtype=np.float32, order="C")  # always a fresh copy
    a = np.ascontiguousarray(stack, dtype=np.float32)  # gathers are 10x faster on C order
    y0, y1, wy = _linear_index(h, size)
    x0, x1, wx = _linear_index(w, size)
    return _lerp(_lerp(a, y0, y1, wy[:, None], -2), x0, x1, wx, -1)


def _lerp(a: np.ndarray, i0, i1, w, axis: int) -> np.ndarray:
    # a[i0] + (a[i1] - a[i0]) * w along axis, in place; np.take keeps C order
    # (fancy indexing a[..., idx, :] would not, and later passes would crawl).
    lo, hi = np.take(a, i0, axis=axis), np.take(a, i1, axis=axis)
    hi -= lo
    hi *= w
    hi += lo
    return hi


def resize_nearest(stack: np.ndarray, size: int) -> np.ndarray:
    """Resize the last two axes to size x size, nearest (pixel centres), same dtype."""
    a = np.ascontiguousarray(stack)
    h, w = a.shape[-2:]
    iy = np.minimum(np.floor((np.arange(size) + 0.5) * (h / size)).astype(np.intp), h - 1)
    ix = np.minimum(np.floor((np.arange(size) + 0.5) * (w / size)).astype(np.intp), w - 1)
    return np.take(np.take(a, iy, axis=-2), ix, axis=-1)


def denormalise(images: np.ndarray) -> np.ndarray:
    """Back from normalised intensities to HU (float32, a new array)."""
    return np.asarray(images, dtype=np.float32) * HU_STD + HU_MEAN


def to_hu(arr: np.ndarray, intensity: str, window: tuple[float, float] | None) -> np.ndarray:
    """A volume stored as `intensity` (hu, normalised or unit over the HU `window`) in HU."""
    if intensity == "normalised":
        return denormalise(arr)
    if intensity == "unit":
        lo, hi = window
        return lo + arr.astype(np.float32) * (hi - lo)
    return arr

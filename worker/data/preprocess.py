"""Preprocessing of CT slices as the paper does it: resize, HU normalisation, the
lung-masked input of lesion-segmentation-b. Pure numpy, used by training and by
`segbench predict` alike, so both see exactly the same input."""

from __future__ import annotations

import numpy as np
from PIL import Image

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


def _pil_bilinear_weights(n_in: int, n_out: int) -> np.ndarray:
    """The (n_out, n_in) weights of PIL's antialiased bilinear resample (its
    precompute_coeffs with the triangle filter, support scaled on downsampling)."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    weights = np.zeros((n_out, n_in), dtype=np.float64)
    for xx in range(n_out):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in)
        x = np.arange(xmin, xmax, dtype=np.float64)
        w = np.maximum(1.0 - np.abs((x - center + 0.5) / filterscale), 0.0)
        total = w.sum()
        weights[xx, xmin:xmax] = w / total if total != 0.0 else w
    return weights


def resize_pil_antialias(stack: np.ndarray, size: int) -> np.ndarray:
    """Resize the last two axes to size x size as PIL's ``Image.resize(BILINEAR)`` does
    on a float ("F") image: antialiased, columns first, float32 between the passes."""
    a = np.asarray(stack, dtype=np.float32)
    h, w = a.shape[-2:]
    if (h, w) == (size, size):
        return np.array(a, dtype=np.float32, order="C")
    wx = _pil_bilinear_weights(w, size)
    wy = _pil_bilinear_weights(h, size)
    columns = (a.astype(np.float64) @ wx.T).astype(np.float32)
    return np.ascontiguousarray((wy @ columns.astype(np.float64)).astype(np.float32))


def resize_mask_pil(labels: np.ndarray, size: int) -> np.ndarray:
    """Label masks (..., H, W) as the authors' 2020 code resized them, as binary uint8.

    That code made each slice's label mask (lesions 0..3, lungs 0..2, as stored) an
    8-bit PIL image (``to_pil_image(mask.astype('uint8'))``, mode "L"), resized it with
    torchvision's default, ``PIL.Image.BILINEAR`` (antialiased: the filter widens when
    shrinking; Pillow works in 8-bit integers and rounds after each of its two passes,
    columns then rows), and kept the pixels above 0 (``to_tensor(...).bool()``). So a
    label-1 region survives where its interpolated value rounds to 1 or more (at least
    0.5), and a label-3 region spreads further than a label-1 one. Done here with Pillow
    itself, slice by slice. Labels above 255 are cut to 255 (the 2020 code's uint8 cast
    would wrap them; the paper's data has none).
    """
    a = np.asarray(labels)
    h, w = a.shape[-2:]
    flat = np.clip(a.reshape(-1, h, w), 0, 255).astype(np.uint8)
    out = np.empty((len(flat), size, size), np.uint8)
    for k, label in enumerate(flat):
        resized = Image.fromarray(label).resize((size, size), Image.Resampling.BILINEAR)
        out[k] = np.asarray(resized) > 0
    return out.reshape(*a.shape[:-2], size, size)


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

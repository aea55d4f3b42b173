"""Pure numpy helpers behind the figures: overlays, filter grids, histograms, densities."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

# The overlay's colours: (right pixels inside the target, wrong pixels). Green / red
# is the paper's Figure 3; blue / orange (Okabe and Ito) reads with any colour vision.
PALETTES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "green / red (as in the paper)": ((0, 200, 70), (230, 30, 30)),
    "blue / orange (colour-blind safe)": ((0, 114, 178), (230, 159, 0)),
}
DEFAULT_PALETTE = next(iter(PALETTES))
OVERLAY_ALPHA = 0.55
DISPLAY_RANGE = (-1.7, 1.3)  # lung window W1500 L-600: HU -1350..150, normalised
FILTER_LIMIT = 0.4  # the paper's colour range for first-layer filters (Fig. 8)
HISTOGRAM_EDGES = np.linspace(-1.5, 3.5, 101)  # normalised intensity, (HU + 500) / 500


def grey(image: np.ndarray, display_range: tuple[float, float] = DISPLAY_RANGE) -> np.ndarray:
    """A normalised CT slice as an RGB uint8 image."""
    lo, hi = display_range
    scaled = np.clip((np.asarray(image, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0) * 255
    return np.repeat(scaled[..., None], 3, axis=-1).astype(np.uint8)


def _blend(rgb: np.ndarray, where: np.ndarray, colour: np.ndarray) -> None:
    rgb[where] = (1 - OVERLAY_ALPHA) * rgb[where] + OVERLAY_ALPHA * colour


def overlay(
    image: np.ndarray,
    truth: np.ndarray | None,
    predicted: np.ndarray | None = None,
    palette: str = DEFAULT_PALETTE,
):
    """The CT slice with masks over it, as RGB uint8, in one of PALETTES.

    Without a prediction the ground truth is drawn in the first colour (green). With
    one, pixels the model got right inside the target take the first colour and every
    wrong pixel (false positive or false negative) the second (red), as in the paper's
    Figure 3. Without the ground truth the prediction alone takes the first colour.
    """
    right, wrong = (np.array(c, dtype=np.float32) for c in PALETTES[palette])
    rgb = grey(image).astype(np.float32)
    if predicted is None and truth is not None:
        _blend(rgb, truth.astype(bool), right)
    elif predicted is not None and truth is None:
        _blend(rgb, predicted.astype(bool), right)
    elif predicted is not None and truth is not None:
        pred, true = predicted.astype(bool), truth.astype(bool)
        _blend(rgb, pred & true, right)
        _blend(rgb, pred ^ true, wrong)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def mask_image(mask: np.ndarray) -> np.ndarray:
    """A binary mask alone, white on black, as RGB uint8."""
    return np.repeat((mask.astype(bool) * 255).astype(np.uint8)[..., None], 3, axis=-1)


def upscale(rgb: np.ndarray, min_size: int = 256) -> np.ndarray:
    """Repeat pixels so small slices stay crisp when the browser enlarges them."""
    factor = max(1, -(-min_size // max(rgb.shape[0], 1)))
    return rgb.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else rgb


def diverging(values: np.ndarray, limit: float = FILTER_LIMIT) -> np.ndarray:
    """Blue (-limit) .. white (0) .. red (+limit), as RGB uint8."""
    t = np.clip(np.asarray(values, dtype=np.float32) / limit, -1.0, 1.0)[..., None]
    white = np.array([255, 255, 255], dtype=np.float32)
    blue = np.array([33, 102, 172], dtype=np.float32)
    red = np.array([178, 24, 43], dtype=np.float32)
    rgb = np.where(t < 0, white + (blue - white) * -t, white + (red - white) * t)
    return rgb.astype(np.uint8)


def filter_grid(
    weights: np.ndarray, *, columns: int = 8, limit: float = FILTER_LIMIT, scale: int = 8
) -> np.ndarray:
    """First-layer filters (out, in, k, k) as one RGB image: a grid of k x k tiles
    (first input channel), 1-pixel white gaps, colour range +-limit (Fig. 8)."""
    w = np.asarray(weights, dtype=np.float32)
    if w.ndim == 4:
        w = w[:, 0]
    elif w.ndim == 2:
        w = w[None]
    n, kh, kw = w.shape
    rows = -(-n // columns)
    tile_h, tile_w = kh * scale, kw * scale
    out = np.full((rows * (tile_h + 1) + 1, columns * (tile_w + 1) + 1, 3), 255, dtype=np.uint8)
    tiles = diverging(w, limit).repeat(scale, axis=1).repeat(scale, axis=2)
    for i in range(n):
        r, c = divmod(i, columns)
        y, x = 1 + r * (tile_h + 1), 1 + c * (tile_w + 1)
        out[y : y + tile_h, x : x + tile_w] = tiles[i]
    return out


def intensity_histogram(splits: Mapping[str, Any], edges: np.ndarray = HISTOGRAM_EDGES):
    """Counts of normalised intensities per split: every image pixel vs the pixels
    inside the target mask (the paper's Figure 2). Values outside the edges are
    counted in the first / last bin."""
    rows = []
    lo, hi = float(edges[0]), float(edges[-1])
    for name, split in splits.items():
        images = np.clip(np.asarray(split.images, dtype=np.float32), lo, hi)
        masks = np.asarray(split.masks).astype(bool)
        for pixels, values in (("image", images), ("masked", images[masks])):
            counts, _ = np.histogram(values, bins=edges)
            rows.append(
                pd.DataFrame(
                    {
                        "split": name,
                        "pixels": pixels,
                        "start": edges[:-1],
                        "end": edges[1:],
                        "count": counts,
                    }
                )
            )
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def finite_losses(curves: pd.DataFrame, columns=("train_loss", "val_loss")) -> pd.DataFrame:
    """Loss rows with NaN / infinite losses turned into gaps (None), so a chart can
    draw the rest; counts of dropped values are in frame.attrs["non_finite"]."""
    frame = curves.copy()
    dropped = 0
    for column in columns:
        if column in frame:
            values = pd.to_numeric(frame[column], errors="coerce").astype(float)
            bad = ~np.isfinite(values)
            dropped += int(bad.sum())
            frame[column] = values.where(~bad)
    frame.attrs["non_finite"] = dropped
    return frame

"""The Gaussian KDE behind the Dice-vs-parameters figure (paper Fig. 4)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def gaussian_kde_2d(points: np.ndarray, at: np.ndarray) -> np.ndarray:
    """scipy.stats.gaussian_kde(points)(at) for 2-D points (2, n) and positions (2, m),
    in numpy: Scott's bandwidth, full covariance. Kept here so the Analysis page does
    not pay for importing scipy.stats on its first render."""
    n = points.shape[1]
    covariance = np.cov(points, ddof=1) * n ** (-2.0 / 6.0)  # Scott: n^(-1/(d+4)), d=2
    inverse = np.linalg.inv(covariance)  # raises LinAlgError for collinear points
    norm = 2 * np.pi * np.sqrt(np.linalg.det(covariance))
    diff = at[:, None, :] - points[:, :, None]  # (2, n, m)
    energy = np.einsum("inm,ij,jnm->nm", diff, inverse, diff)
    return np.exp(-0.5 * energy).sum(axis=0) / (n * norm)


def density_grid(x: np.ndarray, y: np.ndarray, size: int = 40) -> pd.DataFrame:
    """A Gaussian KDE of the points (x, y) evaluated on a size x size grid of cells
    (columns x, x2, y, y2, density); empty when the points cannot make one."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    empty = pd.DataFrame(columns=["x", "x2", "y", "y2", "density"])
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return empty
    pad_x, pad_y = 0.1 * np.ptp(x), 0.1 * np.ptp(y)
    xe = np.linspace(x.min() - pad_x, x.max() + pad_x, size + 1)
    ye = np.linspace(y.min() - pad_y, y.max() + pad_y, size + 1)
    xc, yc = (xe[:-1] + xe[1:]) / 2, (ye[:-1] + ye[1:]) / 2
    gx, gy = np.meshgrid(xc, yc, indexing="ij")
    try:
        density = gaussian_kde_2d(np.vstack([x, y]), np.vstack([gx.ravel(), gy.ravel()]))
    except np.linalg.LinAlgError:  # points on a line: no 2-D density
        return empty
    if not np.isfinite(density).all():
        return empty
    ix, iy = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    ix, iy = ix.ravel(), iy.ravel()
    return pd.DataFrame(
        {"x": xe[ix], "x2": xe[ix + 1], "y": ye[iy], "y2": ye[iy + 1], "density": density}
    )

"""Confidence intervals of a mean over test slices that come from a few test volumes.

The paper's 829 test slices come from 9 patients of very unequal size (one volume can
hold half the slices), so a mean over slices has about as much information as a
handful of independent numbers. Two methods (``INTERVAL_METHODS`` of db.metrics):

- ``cluster-t`` (the default): the cluster-robust t interval. The mean over slices is
  sum_v S_v / N (S_v the sum of volume v's slice values, N the number of slices); its
  variance is estimated with the CR2 small-sample correction of Bell and McCaffrey
  (2002), sum_v e_v^2 / (1 - n_v / N) / N^2 with e_v = S_v - mean * n_v, and the
  interval uses Student's t with the Bell-McCaffrey (Satterthwaite) degrees of freedom
  (Imbens and Kolesar 2016, "Robust standard errors in small samples"), which are
  small when a few volumes hold most slices. Approximate: exact only for normal
  volume means.
- ``percentile``: the percentile interval of the hierarchical bootstrap
  (worker.results.bootstrap: volumes, then slices). Approximate, and too narrow with 9
  unequal volumes.

bench/interval_coverage.py measures both (and two other candidates) on simulated test
sets; docs/report.md gives the figures and tests/results/test_intervals.py keeps the
default's coverage at what that page states. Pure numpy/scipy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

from db.errors import InvalidInput, check_choice
from db.metrics import BOOTSTRAP_RESAMPLES, CONFIDENCE, INTERVAL_METHOD, INTERVAL_METHODS
from worker.results import bootstrap

DESCRIPTIONS = {
    "cluster-t": "approximate cluster-robust t interval over test volumes (CR2 variance, "
    "Bell-McCaffrey degrees of freedom)",
    "percentile": "approximate percentile bootstrap interval (test volumes, then slices "
    "within them)",
}


def _clusters(volumes: Sequence[int] | np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(volumes).ravel()
    if len(v) != n:
        raise InvalidInput(f"{n} values per run but {len(v)} volume indices.")
    if n == 0:
        raise InvalidInput("no test slices to compute an interval from.")
    _, inverse = np.unique(v, return_inverse=True)
    return inverse, np.bincount(inverse).astype(np.float64)


def bell_mccaffrey_df(sizes: Sequence[float] | np.ndarray) -> float:
    """Degrees of freedom of the CR2 variance of a mean over slices of clusters of these
    sizes (Bell-McCaffrey, working model: independent slices of equal variance)."""
    n = np.asarray(sizes, dtype=np.float64)
    total = n.sum()
    c = 1.0 / ((1.0 - n / total) * total**2)
    root = np.sqrt(c)
    k = root[:, None] * (np.diag(n) - np.outer(n, n) / total) * root[None, :]
    return float(np.trace(k) ** 2 / np.trace(k @ k))


Bounds = tuple[float, float] | None


def cluster_t(
    values: np.ndarray,
    volumes: Sequence[int] | np.ndarray,
    confidence: float = CONFIDENCE,
    bounds: Bounds = None,
) -> dict:
    """{"mean", "low", "high", "se", "df"} of the mean over slices of ``values`` ((n,) or
    (runs, n); arrays for the latter), slice i being of test volume ``volumes[i]``; the
    interval is cut to ``bounds`` (the values' range, e.g. 0..100 for a Dice in percent:
    the mean cannot lie outside it, so cutting loses no coverage).

    With one test volume the slices are taken as independent (t with n - 1 degrees of
    freedom); "clusters" says which."""
    if not 0 < confidence < 1:
        raise InvalidInput(f"confidence must be in (0, 1), got {confidence}.")
    x = np.asarray(values, dtype=np.float64)
    inverse, sizes = _clusters(volumes, x.shape[-1])
    total = sizes.sum()
    mean = x.mean(axis=-1)
    if len(sizes) == 1:
        df = max(total - 1.0, 1.0)
        se = x.std(axis=-1, ddof=1) / np.sqrt(total) if total > 1 else np.zeros_like(mean)
        clusters = bootstrap.ONE_VOLUME
    else:
        onehot = np.zeros((len(inverse), len(sizes)))
        onehot[np.arange(len(inverse)), inverse] = 1.0
        sums = x @ onehot
        residual = sums - np.multiply.outer(mean, sizes)
        weights = 1.0 / ((1.0 - sizes / total) * total**2)
        se = np.sqrt((residual**2 * weights).sum(axis=-1))
        df = bell_mccaffrey_df(sizes)
        clusters = "volumes"
    half = sps.t.ppf(0.5 + confidence / 2, df) * se
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = np.clip(low, *bounds), np.clip(high, *bounds)
    return {"mean": mean, "low": low, "high": high, "se": se, "df": df,
            "clusters": clusters}  # fmt: skip


def cluster_t_p(values: np.ndarray, volumes: Sequence[int] | np.ndarray) -> float:
    """Two-sided p-value of "the mean over slices is 0" with the cluster-t statistic
    (for a paired difference a - b)."""
    r = cluster_t(values, volumes)
    mean, se = float(r["mean"]), float(r["se"])
    if se == 0:
        return 1.0 if mean == 0 else 0.0
    return float(2 * sps.t.sf(abs(mean) / se, r["df"]))


def check_method(method: str) -> str:
    return check_choice("interval method", method, INTERVAL_METHODS)


def mean_interval(
    values: Sequence[float] | np.ndarray,
    volumes: Sequence[int] | np.ndarray,
    *,
    method: str = INTERVAL_METHOD,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    bounds: Bounds = None,
) -> dict:
    """{"mean", "low", "high", "method", "interval", ...} of the mean over slices of one
    run's per-slice ``values`` with the interval of ``method`` (cluster-t: cut to
    ``bounds``)."""
    check_method(method)
    x = np.asarray(values, dtype=np.float64).ravel()
    if method == "percentile":
        out = bootstrap.hierarchical_ci(
            x, volumes, n_resamples=n_resamples, seed=seed, confidence=confidence
        )
    else:
        r = cluster_t(x, volumes, confidence, bounds)
        out = {"mean": float(r["mean"]), "low": float(r["low"]), "high": float(r["high"]),
               "df": r["df"], "resampled": r["clusters"]}  # fmt: skip
    return {**out, "method": method, "interval": DESCRIPTIONS[method]}


def interval_of(
    values: np.ndarray,
    volumes: Sequence[int] | np.ndarray,
    resampled_means: np.ndarray,
    *,
    method: str = INTERVAL_METHOD,
    confidence: float = CONFIDENCE,
    bounds: Bounds = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the mean over slices of ``values`` ((n,) or (runs, n)) with
    ``method``: the cluster-t interval (cut to ``bounds``), or the percentile interval of
    ``resampled_means`` ((B,) or (B, runs): the same replicates for every run)."""
    check_method(method)
    if method == "percentile":
        return bootstrap.percentile_interval(resampled_means, confidence)
    r = cluster_t(values, volumes, confidence, bounds)
    return r["low"], r["high"]


def difference_interval(
    difference: np.ndarray,
    volumes: Sequence[int] | np.ndarray,
    resampled_differences: np.ndarray,
    **options,
) -> dict:
    """{"low", "high", "p_t"} of the mean of a paired per-slice ``difference`` (a - b):
    interval_of() with ``options``, and the cluster-t test's p-value (None with the
    percentile method)."""
    low, high = interval_of(difference, volumes, resampled_differences, **options)
    percentile = options.get("method", INTERVAL_METHOD) == "percentile"
    p_t = None if percentile else cluster_t_p(difference, volumes)
    return {"low": float(low), "high": float(high), "p_t": p_t}

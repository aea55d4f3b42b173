"""The hierarchical bootstrap: resample test volumes, then slices within them.

Test slices are not independent: 829 slices of the paper's test set come from 9
patients, and slices of one patient resemble each other. Resampling slices as if they
were independent gives intervals that are too narrow. Here each bootstrap replicate
draws as many volumes as the test set has, with replacement, and then, inside every
drawn copy of a volume, as many of its slices as it has, with replacement; the
statistic is the mean over every drawn slice (the same per-slice mean that segbench
reports as a run's Dice).

A replicate is a weight per slice (how often it was drawn), so one set of weights
serves every run on the same test slices: paired differences and rankings use the
same resample for all runs. Pure numpy functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from db.errors import InvalidInput, check_choice
from db.metrics import BOOTSTRAP_RESAMPLES

LEVELS = ("volumes+slices", "slices", "volumes")
ONE_VOLUME = "slices (one test volume)"


@dataclass(frozen=True)
class Resamples:
    """Bootstrap weights (n_resamples, n_slices) and the level that was resampled."""

    weights: np.ndarray
    resampled: str

    def means(self, values: np.ndarray) -> np.ndarray:
        """Resampled means of ``values``: (n_slices,) -> (B,), (R, n_slices) -> (B, R)."""
        x = np.asarray(values, dtype=np.float64)
        if x.shape[-1] != self.weights.shape[1]:
            raise InvalidInput(
                f"{x.shape[-1]} values per run but the resamples cover {self.weights.shape[1]} "
                "slices."
            )
        total = self.weights.sum(axis=1)
        if x.ndim == 1:
            return self.weights @ x / total
        return (self.weights @ x.T) / total[:, None]


def resample_weights(
    volumes: Sequence[int] | np.ndarray,
    *,
    level: str = "volumes+slices",
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> Resamples:
    """Slice weights of ``n_resamples`` bootstrap replicates of a test set whose slice i
    belongs to volume ``volumes[i]``.

    level "volumes+slices" (the default, two stages), "slices" (every slice
    independent, for comparison) or "volumes" (whole volumes, all their slices). A test
    set of one volume can only be resampled by slices: the label then says so
    (``ONE_VOLUME``).
    """
    check_choice("resampling level", level, LEVELS)
    if n_resamples < 1:
        raise InvalidInput(f"n_resamples must be at least 1, got {n_resamples}.")
    v = np.asarray(volumes).ravel()
    n = len(v)
    if n == 0:
        raise InvalidInput("no test slices to resample.")
    rng = np.random.default_rng(seed)
    keys, inverse = np.unique(v, return_inverse=True)
    resampled = level
    if len(keys) == 1 and level != "slices":
        level, resampled = "slices", ONE_VOLUME
    weights = np.zeros((n_resamples, n))
    if level == "slices":
        weights[:] = rng.multinomial(n, np.full(n, 1 / n), size=n_resamples)
        return Resamples(weights, resampled)
    # how many copies of each volume every replicate drew
    copies = rng.multinomial(len(keys), np.full(len(keys), 1 / len(keys)), size=n_resamples)
    for j in range(len(keys)):
        members = np.flatnonzero(inverse == j)
        if level == "volumes":
            weights[:, members] = copies[:, [j]]
            continue
        # c copies of a volume of m slices, m draws each: c * m draws among its slices
        m = len(members)
        weights[:, members] = rng.multinomial(copies[:, j] * m, np.full(m, 1 / m))
    return Resamples(weights, resampled)


def percentile_interval(
    samples: np.ndarray, confidence: float = 0.95, axis: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The (1 - confidence) / 2 and (1 + confidence) / 2 quantiles along ``axis``."""
    if not 0 < confidence < 1:
        raise InvalidInput(f"confidence must be in (0, 1), got {confidence}.")
    alpha = (1 - confidence) / 2
    low, high = np.quantile(samples, [alpha, 1 - alpha], axis=axis)
    return low, high


def hierarchical_ci(
    values: Sequence[float] | np.ndarray,
    volumes: Sequence[int] | np.ndarray,
    *,
    level: str = "volumes+slices",
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """{"mean", "low", "high", "resampled"}: the mean of per-slice ``values`` with a
    percentile interval from the bootstrap at ``level``."""
    x = np.asarray(values, dtype=np.float64).ravel()
    r = resample_weights(volumes, level=level, n_resamples=n_resamples, seed=seed)
    low, high = percentile_interval(r.means(x), confidence)
    return {"mean": float(x.mean()), "low": float(low), "high": float(high), **_label(r)}


def paired_difference(
    values_a: Sequence[float] | np.ndarray,
    values_b: Sequence[float] | np.ndarray,
    volumes: Sequence[int] | np.ndarray,
    *,
    level: str = "volumes+slices",
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Mean of a - b on the same slices, its interval from one resample applied to both
    runs, and a two-sided bootstrap p-value (twice the smaller share of replicates on
    either side of 0, at most 1)."""
    a = np.asarray(values_a, dtype=np.float64).ravel()
    b = np.asarray(values_b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise InvalidInput(f"paired samples differ in length: {len(a)} vs {len(b)}.")
    r = resample_weights(volumes, level=level, n_resamples=n_resamples, seed=seed)
    diff = r.means(a - b)
    low, high = percentile_interval(diff, confidence)
    return {
        "difference": float((a - b).mean()),
        "low": float(low),
        "high": float(high),
        "p_bootstrap": bootstrap_p(diff),
        **_label(r),
    }


def bootstrap_p(differences: np.ndarray) -> float:
    """Two-sided p-value of "no difference" from resampled differences."""
    d = np.asarray(differences, dtype=np.float64)
    if np.all(d == 0):
        return 1.0
    return float(min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean())))


def _label(r: Resamples) -> dict:
    return {"resampled": r.resampled, "n_resamples": int(r.weights.shape[0])}

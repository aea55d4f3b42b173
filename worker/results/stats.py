"""Statistics for citing results: confidence intervals, paired tests, corrections,
and Dice variants computed from the per-slice confusion counts a run stores.

Pure functions on numpy arrays. ``counts`` is always an (N, 4) array of per-slice
TP, FP, FN, TN (the rows of `slice_results`); Dice values are fractions in [0, 1]
unless a name says percent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

from db.errors import InvalidInput
from db.metrics import BOOTSTRAP_RESAMPLES, INTERVAL_METHOD
from db.protocol import METRIC_MODES
from worker.results import bootstrap, intervals
from worker.training.metrics import dice_from_counts, slice_metrics, summarize


def _counts(counts: np.ndarray) -> np.ndarray:
    c = np.asarray(counts, dtype=np.int64)
    if c.ndim != 2 or c.shape[1] != 4:
        raise InvalidInput(f"counts must have shape (N, 4) (TP, FP, FN, TN), got {c.shape}.")
    return c


def wilcoxon(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Paired Wilcoxon signed-rank test of a vs b (two-sided), as scipy computes it.

    Zero differences are dropped (scipy's default ``zero_method="wilcox"``); when every
    difference is zero the two are indistinguishable and the result is statistic 0,
    p = 1 (scipy would raise or return NaN). Returns {"statistic", "p_value", "n"}
    with n the number of non-zero differences.
    """
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise InvalidInput(f"paired samples differ in length: {len(x)} vs {len(y)}.")
    d = x - y
    n = int(np.count_nonzero(d))
    if n == 0:
        return {"statistic": 0.0, "p_value": 1.0, "n": 0}
    res = sps.wilcoxon(x, y)
    return {"statistic": float(res.statistic), "p_value": float(res.pvalue), "n": n}


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in the input order.

    Sorted ascending, the i-th smallest (1-based) is multiplied by (m - i + 1); the
    running maximum keeps the adjusted values monotone, and they are capped at 1.
    Reject hypothesis j at family-wise level alpha when adjusted[j] <= alpha.
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (m - np.arange(m))
    adjusted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    out = np.empty(m)
    out[order] = adjusted
    return out


def slice_dice(counts: np.ndarray, mode: str = "standard") -> np.ndarray:
    """Per-slice Dice (fractions) in one of the metric modes."""
    return slice_metrics(_counts(counts), mode)["dice"]


def positive_dice(counts: np.ndarray, mode: str = "standard") -> float:
    """Mean Dice over the slices whose ground truth is not empty (TP + FN > 0).

    Both empty-mask rules only touch slices with an empty ground truth or prediction,
    so on these slices the modes differ only by the authors' eps. NaN when no slice
    has a target.
    """
    c = _counts(counts)
    positive = (c[:, 0] + c[:, 2]) > 0
    if not positive.any():
        return float("nan")
    return float(slice_dice(c[positive], mode).mean())


def pooled_dice(counts: np.ndarray) -> float:
    """Dice of the summed counts, 2 sum TP / (2 sum TP + sum FP + sum FN); 0/0 = 1."""
    tp, fp, fn, _ = _counts(counts).sum(0)
    return dice_from_counts(tp, fp, fn)


def volume_dice(counts: np.ndarray, volumes: Sequence[int] | np.ndarray) -> dict[int, float]:
    """3-D Dice of each test volume: TP, FP, FN summed over its slices; 0/0 = 1.

    This is the Dice one gets by stacking a volume's predicted slices (at the size
    the metrics were computed at) and comparing with its stacked ground truth.
    """
    c = _counts(counts)
    v = np.asarray(volumes, dtype=np.int64).ravel()
    if len(v) != len(c):
        raise InvalidInput(f"{len(c)} slices of counts but {len(v)} volume indices.")
    keys, inverse = np.unique(v, return_inverse=True)
    sums = np.zeros((len(keys), 4), dtype=np.int64)
    np.add.at(sums, inverse, c)
    dice = dice_from_counts(sums[:, 0], sums[:, 1], sums[:, 2])
    return {int(k): float(d) for k, d in zip(keys, dice, strict=True)}


def mode_summaries(counts: np.ndarray) -> dict[str, dict[str, float]]:
    """Both metric modes side by side from the same counts (percent).

    For each mode: the summary of worker.training.metrics.summarize plus ``positive_dice``
    (slices with a target only). ``empty_truth`` says how many slices have an empty
    ground truth and on how many of them the model predicted something (where the
    authors' 2020 rule scores 1 and the standard rule scores 0); ``inflation`` is the
    authors-2020 mean Dice minus the standard one, in percentage points.
    """
    c = _counts(counts)
    out: dict[str, dict[str, float]] = {}
    for mode in METRIC_MODES:
        s = summarize(c, mode)
        s["positive_dice"] = 100 * positive_dice(c, mode)
        out[mode] = s
    empty = (c[:, 0] + c[:, 2]) == 0
    out["empty_truth"] = {
        "slices": int(empty.sum()),
        "with_false_positives": int((empty & (c[:, 1] > 0)).sum()),
        "total_slices": len(c),
    }
    out["inflation"] = {"dice": out["authors-2020"]["dice"] - out["standard"]["dice"]}
    return out


def compare_counts(
    counts_a: np.ndarray,
    counts_b: np.ndarray,
    volumes: Sequence[int] | np.ndarray,
    *,
    mode: str = "standard",
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    method: str = INTERVAL_METHOD,
) -> dict:
    """Everything `segbench compare` reports for two models on the same test slices.

    Row i of both count arrays must be the same test slice, of test volume
    volumes[i]. Dice in percent; intervals by ``method`` (worker.results.intervals:
    the cluster-robust t over test volumes by default, or the hierarchical bootstrap);
    the bootstrap p of the difference from one resample applied to both runs (0 means
    below 1 / n_resamples).
    """
    a, b = _counts(counts_a), _counts(counts_b)
    if a.shape != b.shape:
        raise InvalidInput(f"the two runs have {len(a)} and {len(b)} slices; expected the same.")
    da, db = 100 * slice_dice(a, mode), 100 * slice_dice(b, mode)
    draws = {"n_resamples": n_resamples, "seed": seed}

    def one(c: np.ndarray, d: np.ndarray) -> dict:
        return {
            "dice": intervals.mean_interval(
                d, volumes, method=method, bounds=(0.0, 100.0), **draws
            ),  # fmt: skip
            "pooled_dice": 100 * pooled_dice(c),
            "positive_dice": 100 * positive_dice(c, mode),
            "volume_dice": {k: 100 * v for k, v in volume_dice(c, volumes).items()},
            "modes": mode_summaries(c),
        }

    r = bootstrap.resample_weights(volumes, **draws)
    resampled = r.means(da - db)
    interval = intervals.difference_interval(
        da - db, volumes, resampled, method=method, bounds=(-100.0, 100.0)
    )
    return {
        "slices": len(a),
        "mode": mode,
        "resampled": r.resampled,
        "interval": intervals.DESCRIPTIONS[method],
        "a": one(a, da),
        "b": one(b, db),
        "difference": {
            "mean": float((da - db).mean()),
            "low": interval["low"],
            "high": interval["high"],
            "p_t": interval["p_t"],
            "p_bootstrap": bootstrap.bootstrap_p(resampled),
            "n_resamples": n_resamples,
        },
        "wilcoxon": {**wilcoxon(da, db), "assumes": "independent slices"},
    }

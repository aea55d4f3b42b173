"""Rankings and how far to trust them: bootstrap rank stability (challengeR's blob
plot), Kendall's tau between two rankings, and the Friedman test with the Nemenyi
critical difference (Demšar 2006, "Statistical comparisons of classifiers over
multiple data sets", JMLR 7).

Pure numpy/scipy functions. Higher scores are better; rank 1 is the best, ties share
their average rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

from db.errors import InvalidInput
from worker.results.bootstrap import Resamples, percentile_interval


def ranks(scores: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, 1 = highest score, ties averaged."""
    return sps.rankdata(-np.asarray(scores, dtype=np.float64), axis=-1, method="average")


def rank_stability(values: np.ndarray, resamples: Resamples, confidence: float = 0.95) -> dict:
    """Bootstrap the ranking of R runs scored on the same slices.

    ``values``: (R, n_slices) per-slice scores. Every replicate ranks all runs by their
    mean over the same resampled slices. Returns {"rank": ranks of the observed means,
    "median_rank", "low", "high" (the rank interval), "replicates": (B, R) ranks}.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise InvalidInput(f"values must be (runs, slices), got shape {x.shape}.")
    replicate_ranks = ranks(resamples.means(x))
    low, high = percentile_interval(replicate_ranks, confidence)
    return {
        "rank": ranks(x.mean(axis=1)),
        "median_rank": np.median(replicate_ranks, axis=0),
        "low": low,
        "high": high,
        "replicates": replicate_ranks,
    }


def rank_frequencies(replicates: np.ndarray) -> list[dict]:
    """How often each run took each (rounded) rank: rows {"run", "rank", "share"} for
    the blob plot, ``run`` being the column index of ``replicates``."""
    r = np.rint(np.asarray(replicates)).astype(int)
    out = []
    for j in range(r.shape[1]):
        found, count = np.unique(r[:, j], return_counts=True)
        out += [
            {"run": j, "rank": int(k), "share": float(c / len(r))}
            for k, c in zip(found, count, strict=True)
        ]
    return out


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two scorings of the same items (ties in either are allowed).

    tau_b = (C - D) / sqrt((n0 - n1) (n0 - n2)) with C, D the concordant and discordant
    pairs, n0 = n(n-1)/2 and n1, n2 the pairs tied in x and in y. NaN for fewer than
    two items or when one side is constant.
    """
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise InvalidInput(f"two rankings of different lengths: {len(a)} vs {len(b)}.")
    n = len(a)
    if n < 2:
        return float("nan")
    i, j = np.triu_indices(n, 1)
    sa, sb = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    n0 = len(i)
    n1, n2 = int((sa == 0).sum()), int((sb == 0).sum())
    if n1 == n0 or n2 == n0:
        return float("nan")
    return float((sa * sb).sum() / np.sqrt((n0 - n1) * (n0 - n2)))


def friedman(scores: np.ndarray) -> dict:
    """The Friedman test of k treatments over N blocks (``scores``: (N, k), one row per
    block, complete).

    Ranks within each block (1 = best); chi2_F = 12 N / (k (k+1)) (sum_j R_j^2 -
    k (k+1)^2 / 4) with R_j the average ranks, divided by the tie correction
    1 - sum(t^3 - t) / (N k (k^2 - 1)); p from chi2 with k - 1 degrees of freedom.
    Also the Iman-Davenport F = (N-1) chi2_F / (N (k-1) - chi2_F) that Demšar
    recommends, with its p from F(k-1, (k-1)(N-1)); when every block ranks alike, F is
    infinite and the p-value given is the exact probability of that agreement,
    (k!)^-(N-1) without ties (1/24 for 2 blocks of 4 treatments), not 0.
    """
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise InvalidInput(f"Friedman needs at least 2 blocks x 2 treatments, got {x.shape}.")
    if np.isnan(x).any():
        raise InvalidInput("Friedman needs complete blocks; some scores are missing.")
    n, k = x.shape
    r = ranks(x)
    mean_ranks = r.mean(axis=0)
    chi2 = 12 * n / (k * (k + 1)) * (np.sum(mean_ranks**2) - k * (k + 1) ** 2 / 4)
    ties = sum(
        float(np.sum(c**3 - c)) for c in (np.unique(row, return_counts=True)[1] for row in r)
    )
    correction = 1 - ties / (n * k * (k * k - 1))
    if correction <= 0:  # every block ties every treatment: nothing to tell apart
        return {
            "blocks": n,
            "treatments": k,
            "mean_ranks": mean_ranks,
            "statistic": 0.0,
            "p_value": 1.0,
            "iman_davenport": 0.0,
            "p_iman_davenport": 1.0,
        }
    chi2 /= correction
    denominator = n * (k - 1) - chi2
    if denominator > 1e-9 * n * (k - 1):
        f = (n - 1) * chi2 / denominator
        p_f = float(sps.f.sf(f, k - 1, (k - 1) * (n - 1)))
    else:
        # Every block ranks the treatments alike: F is infinite and its p-value 0, which
        # no test of n blocks can reach. The exact p-value of that agreement, under the
        # null that each block's ranking is a random arrangement of the first block's
        # (ties kept), is (number of arrangements) ** -(n - 1).
        _, tied = np.unique(r[0], return_counts=True)
        arrangements = math.factorial(k) / math.prod(math.factorial(int(t)) for t in tied)
        f, p_f = float("inf"), float(arrangements ** -(n - 1))
    return {
        "blocks": n,
        "treatments": k,
        "mean_ranks": mean_ranks,
        "statistic": float(chi2),
        "p_value": float(sps.chi2.sf(chi2, k - 1)),
        "iman_davenport": float(f),
        "p_iman_davenport": p_f,
    }


def nemenyi_q(k: int, alpha: float = 0.05) -> float:
    """q_alpha of the Nemenyi test: the studentized range quantile for k groups and
    infinite degrees of freedom, divided by sqrt(2) (Demšar's Table 5a: 2.569 for
    k = 4 at alpha 0.05)."""
    if k < 2:
        raise InvalidInput(f"the Nemenyi test needs at least 2 treatments, got {k}.")
    return float(sps.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2))


def critical_difference(k: int, n: int, alpha: float = 0.05) -> float:
    """CD = q_alpha sqrt(k (k+1) / (6 N)): two average ranks further apart differ."""
    return nemenyi_q(k, alpha) * float(np.sqrt(k * (k + 1) / (6 * n)))


def nemenyi_p(mean_ranks: Sequence[float], n: int) -> np.ndarray:
    """(k, k) p-values of the Nemenyi test on the average ranks over n blocks."""
    r = np.asarray(mean_ranks, dtype=np.float64)
    k = len(r)
    q = np.abs(r[:, None] - r[None, :]) / np.sqrt(k * (k + 1) / (6 * n))
    p = sps.studentized_range.sf(q * np.sqrt(2), k, np.inf)
    np.fill_diagonal(p, 1.0)
    return p


def cliques(mean_ranks: Sequence[float], cd: float) -> list[list[int]]:
    """Maximal runs of treatments (indices, best first) whose average ranks lie within
    ``cd`` of each other: the bars of a critical-difference diagram."""
    r = np.asarray(mean_ranks, dtype=np.float64)
    order = np.argsort(r, kind="stable")
    groups: list[list[int]] = []
    for start in range(len(order)):
        end = start
        while end + 1 < len(order) and r[order[end + 1]] - r[order[start]] <= cd:
            end += 1
        members = [int(i) for i in order[start : end + 1]]
        if end > start and not any(set(members) <= set(g) for g in groups):
            groups.append(members)
    return groups


def cd_analysis(scores: np.ndarray, names: Sequence[str], alpha: float = 0.05) -> dict:
    """Friedman + Nemenyi over ``scores`` (N blocks x k treatments named ``names``):
    average ranks, CD, the Nemenyi p-values and the cliques, best first."""
    names = list(names)
    x = np.asarray(scores, dtype=np.float64)
    if x.shape[1] != len(names):
        raise InvalidInput(f"{x.shape[1]} score columns but {len(names)} names.")
    fr = friedman(x)
    n, k = x.shape
    cd = critical_difference(k, n, alpha)
    p = nemenyi_p(fr["mean_ranks"], n)
    order = np.argsort(fr["mean_ranks"], kind="stable")
    return {
        "blocks": n,
        "alpha": alpha,
        "cd": cd,
        "q_alpha": nemenyi_q(k, alpha),
        "friedman": {k_: v for k_, v in fr.items() if k_ != "mean_ranks"},
        "mean_ranks": [{"name": names[i], "mean_rank": float(fr["mean_ranks"][i])} for i in order],
        "cliques": [[names[i] for i in g] for g in cliques(fr["mean_ranks"], cd)],
        "nemenyi_p": {names[i]: {names[j]: float(p[i, j]) for j in range(k)} for i in range(k)},
    }

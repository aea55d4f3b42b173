"""How often does a "95 %" interval of a mean Dice over test slices cover the truth,
when the slices come from 9 test volumes of unequal size?

Simulated test sets: 9 volumes of 45, 39, 418, 110, 66, 42, 42, 45 and 22 slices (829
in all, one volume holding half of them, as unequal as the paper's test set, whose
real sizes are not in this repository); each volume has its own mean (a random
effect, sd `between`) and each slice its own deviation (sd `within`); the truth is
the mean of the volume means' distribution. Scenarios: patients differ (0.10 / 0.10),
differ strongly (0.15 / 0.05), hardly differ (0.01 / 0.10), bounded Dice (Beta
volume means and Beta slices around them), and the same volumes at equal size
(9 x 92). Candidates (worker.results.intervals, worker.results.bootstrap):

- percentile: the hierarchical bootstrap's percentile interval (volumes, then slices);
- cr1-t: cluster-robust variance with the V / (V - 1) factor, t with V - 1 = 8 df;
- boot-se-t: the hierarchical bootstrap's standard error with that factor, t with 8 df;
- cluster-t: CR2 variance with Bell-McCaffrey degrees of freedom (segbench's default).

Prints coverage and mean width per scenario and candidate; last line `coverage: C`,
the lowest coverage of the default (cluster-t) over the scenarios.

    python bench/interval_coverage.py [--quick] [--datasets 300] [--resamples 400] [--seed 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from scipy import stats as sps  # noqa: E402

from worker.results import bootstrap, intervals  # noqa: E402

SIZES = np.array([45, 39, 418, 110, 66, 42, 42, 45, 22])
EQUAL = np.full(9, 92)
TRUTH = 0.8


def normal_scores(rng, sizes, between: float, within: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice scores around TRUTH: a random effect per volume plus slice noise."""
    volumes = np.repeat(np.arange(len(sizes)), sizes)
    effect = rng.normal(0, between, len(sizes))
    return TRUTH + effect[volumes] + rng.normal(0, within, len(volumes)), volumes


def beta_scores(rng, sizes) -> tuple[np.ndarray, np.ndarray]:
    """Dice-like scores in [0, 1]: volume means ~ Beta(16, 4) (mean TRUTH), slices ~
    Beta with that mean and concentration 6."""
    volumes = np.repeat(np.arange(len(sizes)), sizes)
    mu = rng.beta(TRUTH * 20, (1 - TRUTH) * 20, len(sizes))
    return rng.beta(mu[volumes] * 6, (1 - mu[volumes]) * 6), volumes


SCENARIOS = {
    "patients differ": lambda rng: normal_scores(rng, SIZES, 0.10, 0.10),
    "differ strongly": lambda rng: normal_scores(rng, SIZES, 0.15, 0.05),
    "hardly differ": lambda rng: normal_scores(rng, SIZES, 0.01, 0.10),
    "bounded (Beta)": lambda rng: beta_scores(rng, SIZES),
    "equal sizes, differ": lambda rng: normal_scores(rng, EQUAL, 0.10, 0.10),
}
METHODS = ("percentile", "cr1-t", "boot-se-t", "cluster-t")


def candidate_intervals(values, volumes, resamples: int, seed: int) -> dict[str, tuple]:
    """(low, high) of each candidate for one simulated test set."""
    out = {}
    r = bootstrap.resample_weights(volumes, n_resamples=resamples, seed=seed)
    means = r.means(values)
    out["percentile"] = tuple(bootstrap.percentile_interval(means))
    _, inverse = np.unique(volumes, return_inverse=True)
    sizes = np.bincount(inverse)
    v = len(sizes)
    mean = values.mean()
    residual = np.bincount(inverse, values) - mean * sizes
    t8 = sps.t.ppf(0.975, v - 1)
    cr1 = np.sqrt(v / (v - 1) * np.sum(residual**2)) / sizes.sum()
    out["cr1-t"] = (mean - t8 * cr1, mean + t8 * cr1)
    boot = means.std(ddof=1) * np.sqrt(v / (v - 1))
    out["boot-se-t"] = (mean - t8 * boot, mean + t8 * boot)
    ct = intervals.cluster_t(values, volumes)
    out["cluster-t"] = (float(ct["low"]), float(ct["high"]))
    return out


def coverage(scenario: str, datasets: int, resamples: int, seed: int) -> dict[str, tuple]:
    """{method: (coverage, mean width)} over `datasets` simulated test sets."""
    rng = np.random.default_rng(seed)
    hits = dict.fromkeys(METHODS, 0)
    width = dict.fromkeys(METHODS, 0.0)
    for k in range(datasets):
        values, volumes = SCENARIOS[scenario](rng)
        for name, (low, high) in candidate_intervals(values, volumes, resamples, k).items():
            hits[name] += low <= TRUTH <= high
            width[name] += high - low
    return {m: (hits[m] / datasets, width[m] / datasets) for m in METHODS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 data sets, 100 resamples")
    parser.add_argument("--datasets", type=int, default=300)
    parser.add_argument("--resamples", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    datasets, resamples = (40, 100) if args.quick else (args.datasets, args.resamples)
    print(f"95% intervals of the mean over 829 slices of 9 volumes; {datasets} simulated test "
          f"sets per scenario, {resamples} bootstrap resamples; coverage (mean width)")  # fmt: skip
    print(f"{'scenario':<22}" + "".join(f"{m:>18}" for m in METHODS))
    worst = 1.0
    for scenario in SCENARIOS:
        found = coverage(scenario, datasets, resamples, args.seed)
        print(f"{scenario:<22}" + "".join(f"{c:>11.3f} ({w:.3f})" for c, w in found.values()))
        worst = min(worst, found["cluster-t"][0])
    print(f"coverage: {worst:.3f}")


if __name__ == "__main__":
    main()

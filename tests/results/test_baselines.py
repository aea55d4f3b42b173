"""One run against baselines: rank, hierarchical-bootstrap rank interval, paired
difference to the best baseline, Holm-adjusted Wilcoxon p. Checked against independent
code: ranks with scipy.stats.rankdata, the rank interval with a plain loop (numpy's
weighted average, one resample at a time) over the same resample weights, Wilcoxon with
scipy.stats.wilcoxon, Holm with statsmodels' multipletests; that volumes are resampled
by a wider interval than slices alone on clustered data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats as sps
from statsmodels.stats.multitest import multipletests

from worker.results.baselines import against_baselines, rank_interval
from worker.results.bootstrap import resample_weights

VOLUMES = np.repeat(np.arange(6), 10)  # 60 slices of 6 test volumes


def _dice(seed: int = 1, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = np.clip(rng.normal([70, 75, 80, 72], 8, size=(n, 4)), 0, 100)
    run = np.clip(base[:, 2] + rng.normal(1.0, 3, size=n), 0, 100)
    return run, base


def test_rank_and_interval_match_a_plain_loop():
    run, base = _dice()
    d = np.column_stack([run, base])
    got = rank_interval(d, VOLUMES, n_resamples=300, seed=4)
    expected_rank = sps.rankdata(-d.mean(axis=0), method="average")[0]
    assert got["rank"] == expected_rank and got["of"] == 5
    assert got["resampled"] == "volumes+slices"
    weights = resample_weights(VOLUMES, n_resamples=300, seed=4).weights
    ranks = []
    for w in weights:  # the same draws, one resample at a time
        means = np.average(d, axis=0, weights=w)
        ranks.append(sps.rankdata(-means, method="average")[0])
    low, high = np.quantile(ranks, [0.025, 0.975])
    assert (got["low"], got["high"]) == (pytest.approx(low), pytest.approx(high))


def test_clear_winner_ranks_first_in_every_resample():
    run, base = _dice()
    got = rank_interval(np.column_stack([run + 30, base]), VOLUMES, n_resamples=200)
    assert (got["rank"], got["low"], got["high"]) == (1, 1.0, 1.0)


def test_volume_resampling_widens_the_difference_interval_on_clustered_data():
    """Two runs whose difference depends on the volume: resampling slices alone
    treats the 60 slices as independent and gives a narrower interval."""
    rng = np.random.default_rng(0)
    per_volume = rng.normal(0, 4, size=6)[VOLUMES]  # how much the run gains, per patient
    base = np.clip(rng.normal(75, 3, size=(60, 1)), 0, 100)
    run = base[:, 0] + 1 + per_volume + rng.normal(0, 0.5, size=60)
    clustered = against_baselines(run, base, VOLUMES, n_resamples=1000)["difference"]
    resampled = against_baselines(run, base, VOLUMES, n_resamples=1000, method="percentile")
    flat = against_baselines(run, base, VOLUMES, level="slices", n_resamples=1000,
                             method="percentile")["difference"]  # fmt: skip
    assert clustered["mean"] == pytest.approx(flat["mean"])
    assert (clustered["resampled"], flat["resampled"]) == ("volumes+slices", "slices")
    for wide in (clustered, resampled["difference"]):
        assert wide["high"] - wide["low"] > 2 * (flat["high"] - flat["low"])
    assert "cluster-robust" in clustered["interval"] and "percentile" in flat["interval"]


def test_a_tie_with_a_baseline_does_not_count_in_the_runs_favour():
    """Run and one baseline score the same on every slice: they share rank 1.5 of 3
    (scipy's average ranks), in the observed ranking and in every resample."""
    rng = np.random.default_rng(2)
    better = rng.uniform(60, 80, 60)
    d = np.column_stack([better, better, better - 10])
    got = rank_interval(d, VOLUMES, n_resamples=100)
    assert got["rank"] == sps.rankdata(-d.mean(axis=0), method="average")[0] == 1.5
    assert (got["low"], got["high"]) == (1.5, 1.5)


def test_difference_and_holm_p_match_scipy_and_statsmodels():
    run, base = _dice()
    out = against_baselines(run, base, VOLUMES, n_resamples=500, seed=0)
    assert out["best"] == int(np.argmax(base.mean(axis=0))) == 2
    assert out["difference"]["mean"] == pytest.approx(float((run - base[:, 2]).mean()))
    assert out["difference"]["low"] < out["difference"]["mean"] < out["difference"]["high"]
    p = [sps.wilcoxon(run, base[:, j]).pvalue for j in range(4)]
    holm = multipletests(p, method="holm")[1]
    got = [t["p_holm"] for t in out["wilcoxon"]]
    np.testing.assert_allclose(got, holm, rtol=1e-12)
